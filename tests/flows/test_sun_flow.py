"""Gauge-equivariant SU(N) flows (latticeflow/flows/spectral.py, latticeflow/flows/sun_flow.py):
the Weyl alcove and its cell, the spectral spline, invertibility, log-determinants against
the autograd Jacobian in real coordinates of the group, gauge equivariance, the Haar prior.

Every flow here has all of its parameters perturbed with randn (a fresh flow is the
identity and would pass everything trivially), and runs in float64.
"""

import doctest
import math

import pytest
import torch

from latticeflow.config import FlowConfig, parse_config
from latticeflow.errors import ConfigError
from latticeflow.flows import build_flow, priors, spectral, sun_flow
from latticeflow.flows.priors import HaarPrior
from latticeflow.flows.spectral import (SpectralSpline, alcove_phases, cell_to_phases, log_vandermonde,
                                        phases_to_cell)
from latticeflow.flows.sun_flow import build_sun_flow
from latticeflow.groups import dagger, haar_sun, is_special_unitary, su_n_generators
from latticeflow.lattice import link_stripes_2d, plaquette_masks_2d
from latticeflow.theories.sun import SUN, gauge_transform_sun, plaquettes

NS = [2, 3]


ALL_LOOPS = ("plaquette", "rectangle", "eigenbasis")


def random_flow(N, L, layers, seed=0, scale=0.1, bins=4, loops=ALL_LOOPS):
    torch.manual_seed(seed)
    cfg = FlowConfig(layers=layers, hidden=(4,), bins=bins, loops=loops)
    flow = build_sun_flow(SUN((L, L), beta=1.0, N=N), cfg).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def links(batch, L, N, seed):
    return haar_sun((batch, 2, L, L), N, generator=torch.Generator().manual_seed(seed))


def coordinate_logdet(fn, u0, N):
    """log|det ∂ω'/∂ω| at ω = 0 for ``fn(u0 exp-moved) = exp(iω'·T) fn(u0)``, per link
    ``U = exp(iω_a T_a) U_0``: in these real coordinates Haar measure is flat at ω = 0, so this
    is the log-Jacobian with respect to Haar measure."""
    t = su_n_generators(N)
    out0 = fn(u0)[0].detach()

    def moved(omega):
        h = torch.einsum("...a,aij->...ij", omega.view(*u0.shape[:-2], -1).to(t.dtype), t)
        m = fn(torch.linalg.matrix_exp(1j * h) @ u0)[0] @ dagger(out0)
        return 2 * torch.einsum("aij,...ji->...a", t, (m - dagger(m)) / 2j).real.flatten()

    n = u0[..., 0, 0].numel() * (N * N - 1)
    jac = torch.autograd.functional.jacobian(moved, torch.zeros(n, dtype=torch.float64))
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("N", NS)
def test_alcove_phases_are_a_canonical_eigendecomposition(N):
    p = haar_sun((2000,), N, generator=torch.Generator().manual_seed(0))
    theta, v, v_inv = alcove_phases(p)
    assert torch.allclose((v * torch.exp(1j * theta).unsqueeze(-2)) @ v_inv, p, atol=1e-12)
    assert (theta[..., :-1] >= theta[..., 1:]).all()  # sorted
    assert (theta[..., 0] - theta[..., -1] <= 2 * math.pi + 1e-12).all()
    assert theta.sum(-1).abs().max() < 1e-12
    # the representative is a class function: the same for g P g†
    g = haar_sun((2000,), N, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(alcove_phases(g @ p @ dagger(g))[0], theta, atol=1e-10)
    # cell coordinates cover the cube and invert
    c = phases_to_cell(theta)
    assert c.shape == (2000, N - 1) and (c >= 0).all() and (c <= 1).all()
    assert torch.allclose(cell_to_phases(c), theta, atol=1e-12)


def test_alcove_lifts_phase_sums_of_plus_and_minus_two_pi():
    # SU(3) elements whose principal phases sum to +2π and −2π
    for phases in ([2.5, 2.0, -4.5 + 2 * math.pi], [-2.5, -2.0, 4.5 - 2 * math.pi]):
        th = torch.tensor(phases, dtype=torch.float64)
        p = torch.diag(torch.exp(1j * th)).unsqueeze(0)
        theta = alcove_phases(p)[0][0]
        assert abs(theta.sum().item()) < 1e-12 and theta[0] - theta[-1] <= 2 * math.pi
        assert torch.allclose(torch.sort(torch.exp(1j * theta).angle()).values,
                              torch.sort(torch.exp(1j * th).angle()).values, atol=1e-12)


@pytest.mark.parametrize("N", NS)
def test_cell_coordinates_of_haar_matrices_follow_weyls_density(N):
    """The Haar density of the cell coordinates is ∝ |Δ(θ(c))|² |∂a/∂c|: compare the
    histogram of c₁ for 200k Haar matrices with that density integrated numerically."""
    p = haar_sun((200_000,), N, generator=torch.Generator().manual_seed(2))
    c = phases_to_cell(alcove_phases(p)[0])[:, 0]
    counts = torch.histc(c, bins=10, min=0, max=1) / c.numel()
    grid = (torch.arange(400, dtype=torch.float64) + 0.5) / 400
    if N == 2:
        cells = grid.unsqueeze(-1)
        weight = torch.exp(log_vandermonde(cell_to_phases(cells)))
        density = weight.view(10, 40).sum(1)
    else:
        c1, c2 = torch.meshgrid(grid, grid, indexing="ij")
        cells = torch.stack([c1, c2], -1)
        weight = torch.exp(log_vandermonde(cell_to_phases(cells))) * (1 - c1)
        density = weight.sum(1).view(10, 40).sum(1)
    density = density / density.sum()
    sigma = torch.sqrt(density / c.numel())
    assert ((counts - density).abs() < 4 * sigma + 1e-4).all(), (counts, density)


@pytest.mark.parametrize("N", NS)
def test_spectral_spline_is_an_equivariant_bijection_with_haar_logdet(N):
    f = SpectralSpline(N, bins=5)
    gen = torch.Generator().manual_seed(3)
    p = haar_sun((64,), N, generator=gen)
    raw = torch.randn(64, f.n_params, dtype=torch.float64, generator=gen)
    q, ld = f.forward(p, raw)
    assert is_special_unitary(q, atol=1e-10)
    back, ld_inv = f.inverse(q, raw)
    assert torch.allclose(back, p, atol=1e-8) and torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=1e-8)
    # conjugation equivariance, and the map commutes with P (same eigenvectors)
    g = haar_sun((64,), N, generator=gen)
    qg, ldg = f.forward(g @ p @ dagger(g), raw)
    assert torch.allclose(qg, g @ q @ dagger(g), atol=1e-10) and torch.allclose(ldg, ld, atol=1e-10)
    assert torch.allclose(q @ p, p @ q, atol=1e-10)
    assert (q - p).abs().amax((-2, -1)).min() > 1e-3  # not the identity
    # log-det against the autograd Jacobian in real coordinates, for single matrices
    for k in range(4):
        jac = coordinate_logdet(lambda u: f.forward(u, raw[k:k + 1]), p[k:k + 1], N)
        assert torch.allclose(jac, ld[k], atol=1e-8), (jac, ld[k])
    # zero parameters: the identity
    q0, ld0 = f.forward(p, torch.zeros_like(raw))
    assert torch.allclose(q0, p, atol=1e-12) and ld0.abs().max() < 1e-10


@pytest.mark.parametrize("N,loops", [(2, ("plaquette",)), (2, ("plaquette", "rectangle")), (2, ALL_LOOPS),
                                     (3, ALL_LOOPS)])
def test_flow_inverse_and_logdet_against_autograd(N, loops):
    flow = random_flow(N, 4, 4, seed=N, loops=loops)
    z = links(3, 4, N, seed=4)
    x, ld = flow(z)
    assert is_special_unitary(x, atol=1e-10)
    z_back, ld_inv = flow.inverse(x)
    assert torch.allclose(z_back, z, atol=1e-9) and torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=1e-8)
    for layer in flow.layers[:2]:  # one layer of each direction
        assert torch.allclose(coordinate_logdet(layer, z[:1], N), layer(z[:1])[1][0], atol=1e-8)
    assert abs(ld[0].item()) > 0.1
    assert torch.allclose(coordinate_logdet(flow, z[:1], N), ld[0], atol=1e-8)
    assert torch.allclose(coordinate_logdet(flow.inverse, x[:1], N), ld_inv[0], atol=1e-7)


@pytest.mark.parametrize("N", NS)
def test_gauge_equivariance_and_invariant_density(N):
    flow = random_flow(N, 8, 8, seed=5 + N)
    z = links(3, 8, N, seed=6)
    g = haar_sun((3, 8, 8), N, generator=torch.Generator().manual_seed(7))
    x, ld = flow(z)
    gx, gld = flow(gauge_transform_sun(z, g))
    assert torch.allclose(gx, gauge_transform_sun(x, g), atol=1e-10)
    assert torch.allclose(gld, ld, atol=1e-10)
    log_q = flow.log_prob(x)
    assert torch.allclose(flow.log_prob(gauge_transform_sun(x, g)), log_q, atol=1e-9)
    # the flow changes the gauge-invariant content
    assert (plaquettes(x) - plaquettes(z)).abs().max() > 0.1


@pytest.mark.parametrize("mu,offset", [(0, 1), (1, 2)])
def test_layer_moves_only_active_links_and_keeps_its_conditioner_input(mu, offset):
    flow = random_flow(3, 8, 8, seed=8)
    layer = next(l for l in flow.layers if (l.mu, l.offset) == (mu, offset))
    u = links(2, 8, 3, seed=9)
    y, _ = layer(u)
    moved = (y - u).abs().amax((-2, -1)) > 1e-12
    assert torch.equal(moved.all(0), link_stripes_2d((8, 8), mu, offset))
    assert torch.equal(moved.any(0), link_stripes_2d((8, 8), mu, offset))
    p_in, p_out = plaquettes(u)[:, 0], plaquettes(y)[:, 0]
    changed = (p_in - p_out).abs().amax((-2, -1)) > 1e-12
    masks = plaquette_masks_2d((8, 8), mu, offset)
    assert torch.equal(changed.all(0), masks["active"] | masks["passive"])
    # every loop fed to the conditioner (plaquettes and rectangles) is unchanged by the layer
    features = layer.features(p_in, u)
    assert features.shape[1] == 6 and features.abs().amax((0, 2, 3)).min() > 0
    assert torch.allclose(layer.features(p_out, y), features, atol=1e-12)
    # and so is the passive-pair loop read in the eigenbasis of the active loop
    active = masks["active"]

    def context(links, plaq):
        return layer.group.active_context(links, layer.group.orient(plaq[:, active], layer.sign), active, mu)[0]

    extra = context(u, p_in)
    assert extra.shape == (2, 6, 8, 8) and extra[:, :, ~active].abs().max() == 0
    assert torch.allclose(context(y, p_out), extra, atol=1e-10)


@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("mu", [0, 1])
def test_eigenbasis_features_give_the_passive_plaquette(N, mu):
    """What the ``eigenbasis`` channels are for: with f_k = (V⁻¹ W_x V)_kk, the trace of the
    passive plaquette is Σ_k e^{∓iθ_k} f_k (− for μ = 0, + for μ = 1, whose loop is P†), so
    the conditioner knows how a new spectrum θ' of the active loop changes the passive one."""
    flow = random_flow(N, 8, 8, seed=20)
    layer = next(l for l in flow.layers if l.mu == mu)
    u = links(2, 8, N, seed=21)
    plaq = plaquettes(u)[:, 0]
    active = layer.masks((8, 8))["active"]
    chans, (theta, _, _) = layer.group.active_context(u, layer.group.orient(plaq[:, active], layer.sign), active, mu)
    f = torch.complex(chans[:, :N][:, :, active], chans[:, N:][:, :, active]).transpose(1, 2)
    passive = torch.roll(plaq, 1, dims=2 - mu)[:, active]  # P(x − ν̂)
    trace = torch.diagonal(passive, dim1=-2, dim2=-1).sum(-1)
    sign = -1 if mu == 0 else 1
    assert torch.allclose((torch.exp(sign * 1j * theta) * f).sum(-1), trace, atol=1e-12)


@pytest.mark.parametrize("N", NS)
def test_translation_equivariance_by_four(N):
    flow = random_flow(N, 8, 8, seed=10)
    z = links(2, 8, N, seed=11)
    x, ld = flow(z)
    for axis in (0, 1):
        xs, lds = flow(torch.roll(z, 4, dims=2 + axis))
        assert torch.allclose(xs, torch.roll(x, 4, dims=2 + axis), atol=1e-10)
        assert torch.allclose(lds, ld, atol=1e-10)


@pytest.mark.parametrize("N", NS)
def test_sampling_density_float32_and_float64(N):
    flow = random_flow(N, 4, 4, seed=12)
    x, log_q = flow.sample(5, generator=torch.Generator().manual_seed(13))
    assert x.dtype == torch.complex128 and log_q.dtype == torch.float64
    assert torch.allclose(flow.log_prob(x), log_q, atol=1e-9)
    flow32 = flow.float()
    x32, log_q32 = flow32.sample(5, generator=torch.Generator().manual_seed(13))
    assert x32.dtype == torch.complex64 and log_q32.dtype == torch.float32  # complex stays complex
    assert torch.allclose(x32.to(torch.complex128), x, atol=1e-4)
    assert torch.allclose(log_q32.double(), log_q, atol=1e-2 * max(1.0, log_q.abs().max().item()))


@pytest.mark.parametrize("N", NS)
def test_haar_prior_moments(N):
    """E tr U = 0, E |tr U|² = 1, E |tr U²|² = 2, and E tr U² = −1 for SU(2) (tr U² = χ_3 − 1),
    0 for SU(3) (χ_6 − χ_3̄): character orthogonality."""
    prior = HaarPrior((2, 4, 4, N, N))
    u = prior.sample(4000, generator=torch.Generator().manual_seed(14)).flatten(0, 3)
    assert prior.log_prob(prior.sample(3)).abs().max() == 0
    tr1 = torch.diagonal(u, dim1=-2, dim2=-1).sum(-1)
    tr2 = torch.diagonal(u @ u, dim1=-2, dim2=-1).sum(-1)
    n = tr1.numel()
    for value, exact in [(tr1, 0.0), (tr1.abs() ** 2, 1.0), (tr2, -1.0 if N == 2 else 0.0), (tr2.abs() ** 2, 2.0)]:
        err = value.abs().std() / math.sqrt(n) if exact == 0.0 else value.std() / math.sqrt(n)
        assert abs(value.mean() - exact) < 4 * err + 1e-12, (value.mean(), exact)
    assert is_special_unitary(u)


def test_fresh_flow_is_the_identity_and_configs_are_checked():
    flow = build_sun_flow(SUN((8, 8), 2.0, 3), FlowConfig(layers=4)).double()
    z = links(2, 8, 3, seed=15)
    x, ld = flow(z)
    assert torch.allclose(x, z, atol=1e-12) and ld.abs().max() < 1e-10
    text = '[theory]\nname = "sun"\nN = 2\nL = {L}\nbeta = 2.0\n[flow]\nlayers = 2\n{extra}'
    cfg = parse_config(text.format(L=8, extra='bijection = "spectral"\nbins = 6\n'))
    assert build_flow(cfg.theory.build(), cfg.flow).layers[0].bijection.bins == 6
    for L, extra, match in [(6, "", "divisible by 4"), (8, 'loops = ["rectangle"]\n', "loops"),
                            (8, 'bijection = "ncp"\n', "spectral"), (8, "bins = 1\n", "bins")]:
        with pytest.raises(ConfigError, match=match):
            cfg = parse_config(text.format(L=L, extra=extra))
            build_flow(cfg.theory.build(), cfg.flow)


def test_docstring_examples():
    for module in (spectral, sun_flow, priors):
        failures, _ = doctest.testmod(module, extraglobs={"torch": torch, "math": math})
        assert failures == 0


def test_deep_flow_keeps_links_unitary_and_trains_in_float32():
    """16 layers: rounding of the links' unitarity must add up, not compound, over the
    layers (links are moved by R, never by h(P) P†); and both gradient estimators run in
    float32 with finite gradients."""
    from latticeflow.training.loss import kl_loss

    flow = random_flow(2, 8, 16, seed=16, scale=0.05)
    z = links(8, 8, 2, seed=17)
    x, _ = flow(z)
    z_back, _ = flow.inverse(x)
    eye = torch.eye(2, dtype=x.dtype)
    assert (x.mH @ x - eye).abs().max() < 1e-13 and (z_back - z).abs().max() < 1e-12
    flow = flow.float()
    for estimator in ("reparam", "path"):
        flow.zero_grad()
        loss, _, _ = kl_loss(flow, SUN((8, 8), 2.0, 2), 32, torch.Generator().manual_seed(18), estimator)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in flow.parameters()])
        assert torch.isfinite(grads).all() and grads.abs().max() > 0


@pytest.mark.parametrize("name,threshold", [("su2_L8_b2", 0.35), ("su3_L8_b4", 0.2)])
def test_shipped_models(shipped, name, threshold):
    """The shipped weights load into their TOML's architecture and beat the Haar prior by far.

    512 fresh float32 proposals (seed 0), log w in float64.  The thresholds sit ≈ 4σ
    (σ ≈ 0.035 for 512 proposals of a chain with rejection runs) below the acceptance
    measured on 8192 proposals (models/README.md); the Haar prior gives < 0.01 at L = 8.
    """
    from latticeflow.mcmc.independence import independence_acceptance

    trained, flow, theory = shipped(name)
    z = flow.prior.sample(512, generator=torch.Generator().manual_seed(0))
    trivial = independence_acceptance(-theory.action(z), rng=0)
    assert trivial < 0.05
    assert trained > threshold, trained


def test_degenerate_eigenvalues_give_finite_consistent_logdets():
    """Unit and centre elements, double eigenvalues, and the cold start: the log-det takes
    its limit (gaps are never differences of phases), forward and inverse agree, and for
    SU(2), where every degeneracy is a single gap, log q is continuous and gauge-invariant
    at the cold configuration (its gauge copies have plaquettes 1 up to rounding)."""
    gen = torch.Generator().manual_seed(30)
    f2, f3 = SpectralSpline(2, bins=5), SpectralSpline(3, bins=5)
    g2, g3 = haar_sun((200,), 2, generator=gen), haar_sun((200,), 3, generator=gen)
    cases = [(f2, g2, (0.0, 0.0)), (f2, g2, (math.pi, -math.pi)), (f3, g3, (1.0, 1.0, -2.0)),
             (f3, g3, (2.5, -1.25, -1.25))]
    for f, g, phases in cases:
        raw = 0.5 * torch.randn(1, f.n_params, dtype=torch.float64, generator=gen).expand(200, -1)
        d = torch.diag_embed(torch.exp(1j * torch.tensor(phases, dtype=torch.float64)))
        p = g @ d @ dagger(g)
        q, ld = f.forward(p, raw)
        _, ld_inv = f.inverse(q, raw)
        assert torch.isfinite(ld).all() and (ld.max() - ld.min()) < 1e-6, phases
        assert (ld + ld_inv).abs().max() < 1e-6, phases
        exact, ld_exact = f.forward(d.expand(200, -1, -1), raw)  # exactly diagonal: zero gaps
        assert torch.allclose(ld_exact, ld, atol=1e-6), phases
    flow = random_flow(2, 4, 4, seed=31)
    cold = torch.eye(2, dtype=torch.complex128).expand(1, 2, 4, 4, 2, 2)
    copies = gauge_transform_sun(cold.expand(3, -1, -1, -1, -1, -1), haar_sun((3, 4, 4), 2, generator=gen))
    log_q = flow.log_prob(torch.cat([cold, copies]))
    assert torch.isfinite(log_q).all() and (log_q - log_q[0]).abs().max() < 1e-6, log_q
