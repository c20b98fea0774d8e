"""Periodic convolutions: translation equivariance, the d >= 4 path, the odd variant."""

import pytest
import torch

from latticeflow.flows.nets import ConvNet, OddTanh, ParityConvNet, PeriodicConv


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_translation_equivariance(dim):
    torch.manual_seed(dim)
    net = ConvNet(dim, 1, 2, hidden=(3,), zero_init=False).double()
    x = torch.randn(2, 1, *([4] * dim), dtype=torch.float64)
    for axis in range(dim):
        shifted = torch.roll(x, 1, dims=2 + axis)
        assert torch.allclose(net(shifted), torch.roll(net(x), 1, dims=2 + axis), atol=1e-12)


def test_generic_path_matches_torch_conv():
    torch.manual_seed(0)
    ref = PeriodicConv(2, 2, 3, kernel_size=3).double()
    generic = PeriodicConv(2, 2, 3, kernel_size=3).double()
    generic.conv = None
    generic.weight, generic.bias = ref.weight, ref.bias
    x = torch.randn(4, 2, 6, 5, dtype=torch.float64)
    assert torch.allclose(generic(x), ref(x), atol=1e-12)


def test_odd_net_is_odd_and_lattice_size_independent():
    torch.manual_seed(1)
    net = ConvNet(2, 1, 2, hidden=(8, 8), odd=True, zero_init=False).double()
    for size in (4, 8, 12):
        x = torch.randn(3, 1, size, size, dtype=torch.float64)
        assert torch.allclose(net(-x), -net(x), atol=1e-14)


def test_odd_tanh_is_tanh_and_odd_bit_for_bit():
    x = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    assert (OddTanh()(x) - torch.tanh(x)).abs().max() < 1e-15
    x32 = 3 * torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    assert (OddTanh()(x32) - torch.tanh(x32)).abs().max() < 3e-7
    assert torch.equal(OddTanh()(-x32), -OddTanh()(x32))
    assert torch.autograd.gradcheck(OddTanh(), (x[::200].clone().requires_grad_(),))


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_parity_net_outputs_are_odd_and_even(dim):
    torch.manual_seed(2)
    net = ParityConvNet(dim, 1, 3, hidden=(4, 6), zero_init=False).double()
    x = torch.randn(2, 1, *([4] * dim), dtype=torch.float64)
    (odd, even), (odd_m, even_m) = net(x), net(-x)
    assert odd.shape == even.shape == (2, 3, *([4] * dim))
    assert torch.equal(odd_m, -odd) and torch.equal(even_m, even)
    assert torch.count_nonzero(odd) > 0
    assert not torch.allclose(even, torch.zeros_like(even))
    # translation equivariance, as for every periodic net
    rolled = torch.roll(x, 1, dims=2)
    assert torch.allclose(net(rolled)[1], torch.roll(even, 1, dims=2), atol=1e-12)


def test_parity_net_mask_survives_training_and_loading():
    # the masked kernel entries may take any value (a step of Adam, a loaded state dict):
    # the mask is applied in every forward, so the parities hold whatever the weights are
    net = ParityConvNet(2, 1, 2, hidden=(4,), zero_init=False).double()
    with torch.no_grad():
        net.head.weight.normal_()
        net.head.bias.normal_()
    fresh = ParityConvNet(2, 1, 2, hidden=(4,)).double()
    fresh.load_state_dict(net.state_dict())
    assert not [k for k in net.state_dict() if "mask" in k or "squared" in k]  # fixed, not stored
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    (odd, even), (odd_m, even_m) = fresh(x), fresh(-x)
    assert torch.equal(odd_m, -odd) and torch.equal(even_m, even)


def test_parity_net_starts_at_zero_and_needs_features():
    odd, even = ParityConvNet(2, 1, 2)(torch.randn(2, 1, 4, 4))
    assert torch.count_nonzero(odd) == torch.count_nonzero(even) == 0
    for hidden in ((), (4, 1)):
        with pytest.raises(ValueError, match="at least 2"):
            ParityConvNet(2, 1, 2, hidden=hidden)


def test_zero_init_outputs_zero():
    net = ConvNet(2, 1, 2)
    assert torch.count_nonzero(net(torch.randn(2, 1, 4, 4))) == 0


def test_even_kernel_rejected():
    with pytest.raises(ValueError):
        PeriodicConv(2, 1, 1, kernel_size=2)


def _reference_pad(x, half, ndim):
    for axis in range(x.dim() - ndim, x.dim()):
        n = x.shape[axis]
        x = torch.cat([x.narrow(axis, n - half, half), x, x.narrow(axis, 0, half)], dim=axis)
    return x


@pytest.mark.parametrize("shape,half,ndim", [((3, 2, 5, 6), 1, 2), ((2, 7), 2, 1),
                                             ((2, 1, 4, 5, 6), 1, 3), ((2, 3, 6, 6), 2, 2)])
def test_circular_pad_and_its_gradient(shape, half, ndim):
    from latticeflow.flows.nets import circular_pad

    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y = circular_pad(x, half, ndim)
    assert torch.equal(y, _reference_pad(x, half, ndim))
    g = torch.randn_like(y)
    (ours,) = torch.autograd.grad(y, x, g)
    (reference,) = torch.autograd.grad(_reference_pad(x, half, ndim), x, g)
    assert torch.allclose(ours, reference, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda t: circular_pad(t, half, ndim), (x,))


def test_circular_pad_keeps_channels_last():
    from latticeflow.flows.nets import circular_pad

    x = torch.randn(4, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    y = circular_pad(x, 1, 2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, _reference_pad(x, 1, 2))
    with pytest.raises(ValueError, match="smaller"):
        circular_pad(torch.zeros(1, 1, 2, 2), 3, 2)
