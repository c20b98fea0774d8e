"""Tests of latticeflow/flows/coupling.py: inverse, exact log-det (autograd Jacobian),
translation and Z₂ equivariance.  Float64, fixed seeds, random non-zero weights (a
zero-initialised conditioner is the identity and would pass every test trivially)."""

import doctest

import pytest
import torch

from latticeflow.flows import coupling
from latticeflow.flows.bijections import Affine, RationalQuadraticSpline
from latticeflow.flows.coupling import CheckerboardCoupling
from latticeflow.flows.nets import ConvNet, ParityConvNet

F64 = torch.float64
#: z2: False, True (a symmetrised ConvNet, two passes) or "odd" (a ParityConvNet, one pass)
CASES = [(b, z2) for b in ("affine", "spline") for z2 in (False, True, "odd")]



def make_layer(bijection, z2, parity=0, dim=2, seed=0):
    torch.manual_seed(seed)
    bij = Affine() if bijection == "affine" else RationalQuadraticSpline(bins=4, bound=3.0)
    if z2 == "odd":
        net = ParityConvNet(dim, 1, bij.n_params, hidden=(4, 4), kernel_size=3)
    else:
        net = ConvNet(dim, 1, bij.n_params, hidden=(4, 4), kernel_size=3)
    layer = CheckerboardCoupling(bij, net, mask_parity=parity, z2=bool(z2)).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return layer


def field(*shape, seed=1):
    return 1.5 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("bijection,z2", CASES)
@pytest.mark.parametrize("parity", [0, 1])
def test_inverse_undoes_forward(bijection, z2, parity):
    layer = make_layer(bijection, z2, parity)
    x = field(5, 6, 6)
    y, ld = layer(x)
    x2, ld_inv = layer.inverse(y)
    assert not torch.allclose(y, x)
    # the spline's inverse solves a quadratic: ~1e-9 in float64 near steep bins
    assert (x2 - x).abs().max() < 1e-8
    assert (ld + ld_inv).abs().max() < 1e-8
    frozen, _ = layer._frozen_mask(x)
    assert torch.equal(y[:, frozen], x[:, frozen])


@pytest.mark.parametrize("bijection,z2", CASES)
def test_logdet_is_log_abs_det_of_autograd_jacobian(bijection, z2):
    layer = make_layer(bijection, z2)
    x = field(1, 4, 4, seed=2)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, 4, 4))[0].view(16), x.view(16))
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    assert torch.allclose(layer(x)[1], logabsdet.view(1), atol=1e-10)


@pytest.mark.parametrize("bijection,z2", CASES)
@pytest.mark.parametrize("shifts", [(2, 0), (1, 1), (0, -2), (3, 1)])
def test_equivariant_under_checkerboard_preserving_translations(bijection, z2, shifts):
    layer = make_layer(bijection, z2)
    x = field(3, 6, 8, seed=3)
    y, ld = layer(x)
    y_shifted, ld_shifted = layer(torch.roll(x, shifts, dims=(1, 2)))
    assert torch.allclose(y_shifted, torch.roll(y, shifts, dims=(1, 2)), atol=1e-12)
    assert torch.allclose(ld_shifted, ld, atol=1e-10)


@pytest.mark.parametrize("bijection", ["affine", "spline"])
@pytest.mark.parametrize("z2", [True, "odd"])
def test_z2_layer_commutes_with_reflection(bijection, z2):
    layer = make_layer(bijection, z2=z2)
    x = field(4, 6, 6, seed=4)
    y, ld = layer(x)
    y_neg, ld_neg = layer(-x)
    assert torch.allclose(y_neg, -y, atol=1e-12)
    assert torch.allclose(ld_neg, ld, atol=1e-10)
    x_neg, ld_inv_neg = layer.inverse(-y)
    assert torch.allclose(x_neg, -x, atol=1e-8)


@pytest.mark.parametrize("bijection", ["affine", "spline"])
def test_without_z2_the_random_layer_is_not_equivariant(bijection):
    # the Z₂ test above could not fail if the perturbed layer were trivially odd
    layer = make_layer(bijection, z2=False)
    x = field(4, 6, 6, seed=4)
    assert not torch.allclose(layer(-x)[0], -layer(x)[0], atol=1e-3)


@pytest.mark.parametrize("dim,shape", [(1, (6,)), (3, (4, 4, 2)), (4, (2, 2, 2, 4))])
@pytest.mark.parametrize("z2", [True, "odd"])
def test_other_dimensions(dim, shape, z2):
    layer = make_layer("affine", z2=z2, dim=dim)
    x = field(2, *shape, seed=5)
    y, ld = layer(x)
    assert torch.allclose(layer.inverse(y)[0], x, atol=1e-10)
    assert torch.allclose(layer(-x)[0], -y, atol=1e-12)


def test_z2_needs_a_reflectable_bijection():
    from latticeflow.flows.circle import CircularSpline

    with pytest.raises(NotImplementedError):
        CheckerboardCoupling(CircularSpline(), ConvNet(2, 1, 25), mask_parity=0, z2=True)
    with pytest.raises(ValueError):
        CheckerboardCoupling(Affine(), ConvNet(2, 1, 2), mask_parity=2)
    with pytest.raises(ValueError, match="z2=True"):
        CheckerboardCoupling(Affine(), ParityConvNet(2, 1, 2), mask_parity=0)


def test_odd_conditioner_uses_both_of_its_outputs():
    # the projection ½[(E + O) + R(E − O)]: for the affine map, s = E_s and t = O_t, so a
    # layer whose odd head alone is zeroed keeps its scale and loses its shift
    layer = make_layer("affine", z2="odd")
    frozen = field(2, 6, 6, seed=6)
    full = layer.conditioner(frozen)
    with torch.no_grad():
        layer.net.head.weight[:2].zero_()  # the odd outputs
    cut = layer.conditioner(frozen)
    assert torch.allclose(cut[..., 0], full[..., 0], atol=1e-14) and torch.count_nonzero(cut[..., 1]) == 0
    assert torch.count_nonzero(full[..., 1]) > 0


def test_docstring_examples():
    assert doctest.testmod(coupling, raise_on_error=False).failed == 0
