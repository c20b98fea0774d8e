"""The mixed kernel and flow HMC are exact for any flow (seeded, 4σ against exact torus
values), resume bit for bit, and flow HMC with the identity flow is plain HMC."""

import numpy as np
import pytest
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method
from latticeflow.config import HMCConfig, parse_config
from latticeflow.errors import LatticeflowError
from latticeflow.flows import build_flow
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.flow_hmc import FlowHMCChains, LatentTheory
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.mixed import MixedKernel
from latticeflow.pipeline import flow_density, flow_proposal

U1_MODEL = ('[theory]\nname = "u1"\nL = 4\nbeta = {beta}\n'
            '[flow]\nlayers = 4\nbijection = "spline"\nbins = 4\nhidden = [4]\nloops = ["plaquette"]\n')
#: the smooth NCP mixture: flow HMC's force is continuous (a spline's is not at its knots)
U1_NCP_MODEL = ('[theory]\nname = "u1"\nL = 4\nbeta = {beta}\n'
                '[flow]\nlayers = 4\nbijection = "ncp"\ncomponents = 2\nhidden = [4]\nloops = ["plaquette"]\n')
PHI4_MODEL = ('[theory]\nname = "phi4"\nL = 4\ndim = 1\nm2 = 0.5\nlam = 0.0\n'
              '[flow]\nlayers = 4\nbijection = "affine"\nhidden = [4]\n')


def random_flow(text: str, scale: float, seed: int = 0):
    """A flow with random (untrained, non-identity) weights: an arbitrary bijection."""
    cfg = parse_config(text)
    theory = cfg.theory.build()
    torch.manual_seed(seed)
    flow = build_flow(theory, cfg.flow).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return theory, flow


def mixed(theory, flow, chains=8, seed=1, **kw):
    hmc = HMC(theory, trajectory_length=1.0, steps=4)
    return MixedKernel(theory, hmc, flow_proposal(flow, "float64"), flow_density(flow, "float64"),
                       n_chains=chains, thermalization=30, seed=seed, progress=False, **kw)


def flow_hmc(theory, flow, chains=16, seed=1, thermalization=30):
    settings = HMCConfig(integrator="leapfrog", trajectory_length=0.5, steps=5, target_acceptance=0.8)
    return FlowHMCChains(theory, flow, settings, chains, thermalization=thermalization, seed=seed,
                         progress=False)


def check_exact(path, theory, names):
    exact = theory.exact()
    with ensemble.open(path) as ens:
        for name in names:
            r = gamma_method(ens.observable(name).T)
            assert abs(r.mean - exact[name]) < 4 * r.error, (name, str(r), exact[name])
        return {k: np.asarray(v) for k, v in ens.mcmc.items()}


def test_mixed_kernel_is_exact_for_an_untrained_flow(tmp_path):
    theory, flow = random_flow(U1_MODEL.format(beta=1.0), 0.05)  # flow acceptance ≈ 0.1
    sampler = mixed(theory, flow, flow_per_step=2)
    path = tmp_path / "mixed.h5"
    run_ensemble(sampler, theory=theory, path=path, n=12000, config_text="", seed=1, block=500,
                 progress=False)
    mcmc = check_exact(path, theory, ["plaquette", "wilson_1x2", "chi_Q"])
    # both kernels did move the chains, and the columns mean what they say
    assert 0.02 < mcmc["flow_acceptance"].mean() < 0.98
    assert 0.5 < mcmc["hmc_acceptance"].mean() <= 1.0
    assert set(np.unique(mcmc["flow_acceptance"])) <= {0.0, 0.5, 1.0}
    assert np.array_equal(mcmc["accepted"], mcmc["flow_acceptance"] > 0)
    with ensemble.open(path) as ens:
        assert ens.sampler == "mixed" and ens.n_chains == 8


def test_mixed_kernel_weights_are_recomputed_after_hmc(tmp_path):
    """The chain's log w after a step is −S − log q of the field it holds."""
    theory, flow = random_flow(U1_MODEL.format(beta=2.0), 0.3)
    sampler = mixed(theory, flow, chains=3)
    sampler.start(None)
    block = sampler.advance(5)
    x = torch.from_numpy(block.configs[-1])
    expected = -theory.action(x) - flow.log_prob(x)
    assert np.allclose(block.mcmc["log_weight"][-1], expected.detach().numpy(), atol=1e-9)


def test_flow_hmc_is_exact_for_an_untrained_flow(tmp_path):
    theory, flow = random_flow(U1_NCP_MODEL.format(beta=1.0), 0.1)
    path = tmp_path / "flow-hmc.h5"
    run_ensemble(flow_hmc(theory, flow), theory=theory, path=path, n=4000, config_text="", seed=1,
                 block=250, progress=False)
    mcmc = check_exact(path, theory, ["plaquette", "wilson_1x2", "chi_Q"])
    assert 0.3 < mcmc["accepted"].mean() < 1.0
    # ⟨exp(−ΔH)⟩ = 1 holds for the latent-space Hamiltonian too
    r = gamma_method(np.exp(-mcmc["delta_h"]).T)
    assert abs(r.mean - 1.0) < 4 * r.error + 0.02


def test_flow_hmc_on_a_scalar_field_is_exact(tmp_path):
    theory, flow = random_flow(PHI4_MODEL, 0.05)
    path = tmp_path / "phi4.h5"
    run_ensemble(flow_hmc(theory, flow), theory=theory, path=path, n=8000, config_text="", seed=2,
                 block=250, progress=False)
    check_exact(path, theory, ["chi2"])


def test_identity_flow_pulls_back_to_the_action_itself():
    """A freshly built flow is the identity: S̃ = S and the latent force is the analytic one."""
    cfg = parse_config(U1_MODEL.format(beta=1.5))
    theory = cfg.theory.build()
    flow = build_flow(theory, cfg.flow).double()
    latent = LatentTheory(theory, flow)
    z = theory.random_field(3, torch.Generator().manual_seed(0))
    assert torch.allclose(latent.action(z), theory.action(z), atol=1e-10)
    force = HMC(latent, force="autograd").force(z)
    assert torch.allclose(force, theory.force(z), atol=1e-9)


def test_latent_energy_error_shrinks_like_a_second_order_integrator():
    """For a smooth flow, the latent-space integrator error falls as ε² (here: by ≥ 3× per
    halving); a wrong force (missing log-det term) would leave an O(1) error."""
    theory, flow = random_flow(PHI4_MODEL, 0.05, seed=3)
    latent = LatentTheory(theory, flow)
    hmc = HMC(latent, integrator="leapfrog", force="autograd", trajectory_length=1.0)
    z = latent.random_field(32, torch.Generator().manual_seed(1))
    rms = []
    for steps in (8, 16, 32):
        _, _, dh = hmc.trajectory(z, torch.Generator().manual_seed(2), step_size=1.0 / steps,
                                  steps=steps)
        rms.append(float(dh.pow(2).mean().sqrt()))
    assert rms[0] / rms[1] > 3 and rms[1] / rms[2] > 3, rms


@pytest.mark.parametrize("kind", ["mixed", "flow-hmc"])
def test_resume_continues_bit_for_bit(tmp_path, kind):
    theory, flow = random_flow((U1_MODEL if kind == "mixed" else U1_NCP_MODEL).format(beta=2.0), 0.1)

    def make():
        return mixed(theory, flow, chains=2) if kind == "mixed" else flow_hmc(theory, flow, 2, thermalization=5)

    kwargs = dict(theory=theory, config_text="", seed=1, block=20, progress=False)
    run_ensemble(make(), path=tmp_path / "a.h5", n=60, **kwargs)
    out = run_ensemble(make(), path=tmp_path / "a.h5", n=120, **kwargs)
    assert out["resumed"] and out["rows_added"] == 30
    run_ensemble(make(), path=tmp_path / "b.h5", n=120, **kwargs)
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert a.sampler == b.sampler == kind
        assert np.array_equal(a.observable("plaquette"), b.observable("plaquette"))
        assert np.array_equal(a.configs[:], b.configs[:])
        for name in a.mcmc:
            assert np.array_equal(a.mcmc[name], b.mcmc[name]), name


def test_flow_hmc_stores_physical_fields(tmp_path):
    theory, flow = random_flow(U1_NCP_MODEL.format(beta=2.0), 0.1)
    sampler = flow_hmc(theory, flow, 2, thermalization=2)
    sampler.start(None)
    block = sampler.advance(3)
    x = torch.from_numpy(block.configs[-1])
    assert np.allclose(theory.observables(x)["plaquette"].numpy(), block.observables["plaquette"][-1])
    z = sampler.x  # the latent state, not the physical field
    assert torch.allclose(flow(z)[0].detach(), x, atol=1e-12)


def test_mixed_kernel_refuses_trajectories_without_a_finite_energy():
    """Like HMC and flow HMC: a block whose every trajectory had a non-finite ΔH is an
    error (one line), not an ensemble of NaN energy changes."""
    theory, flow = random_flow(U1_MODEL.format(beta=2.0), 0.1)
    kernel = MixedKernel(theory, HMC(theory, trajectory_length=1e300, steps=1),
                         flow_proposal(flow, "float64"), flow_density(flow, "float64"), n_chains=2,
                         thermalization=0, tune=False, progress=False)
    kernel.start(None)
    with pytest.raises(LatticeflowError, match="non-finite energy change"):
        kernel.advance(3)


def test_mixed_resume_with_another_batch_size_is_refused_in_one_line(tmp_path):
    """The proposal stream is drawn in chunks of batch_size; a resume with another one would
    continue another stream, so it is refused naming the key (before: 'damaged')."""
    theory, flow = random_flow(U1_MODEL.format(beta=2.0), 0.1)
    kwargs = dict(theory=theory, path=tmp_path / "m.h5", config_text="", seed=1, block=10, progress=False)
    run_ensemble(mixed(theory, flow, chains=2, batch_size=16), n=20, **kwargs)
    for other in (4, 64):
        with pytest.raises(LatticeflowError, match=r"sample.batch_size: .*batch_size = 16"):
            run_ensemble(mixed(theory, flow, chains=2, batch_size=other), n=40, **kwargs)
    assert run_ensemble(mixed(theory, flow, chains=2, batch_size=16), n=40, **kwargs)["rows_added"] == 10
