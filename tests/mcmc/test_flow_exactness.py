"""An *untrained* flow + Metropolis is exact (arXiv:1904.12072): free field, seeded, 4σ."""

import pytest
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method
from latticeflow.analysis.acceptance import tau_int_from_acceptance
from latticeflow.config import parse_config
from latticeflow.flows import build_flow
from latticeflow.mcmc import IndependenceMetropolis
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.theories.exact import free_propagator


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    # 1D free field, L = 4, m² = 0.5: an arbitrary (random-weight) flow still has acceptance ~0.2
    cfg = parse_config('[theory]\nname = "phi4"\nL = 4\ndim = 1\nm2 = 0.5\nlam = 0.0\n'
                       '[flow]\nlayers = 4\nbijection = "affine"\nhidden = [4]\n')
    theory = cfg.theory.build()
    torch.manual_seed(0)
    flow = build_flow(theory, cfg.flow).double()
    with torch.no_grad():  # not trained: random, non-zero weights make an arbitrary bijection
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def propose(n, generator):
        with torch.no_grad():
            return flow.sample(n, generator=generator)

    path = tmp_path_factory.mktemp("flow") / "free.h5"
    sampler = IndependenceMetropolis(theory, propose, n_chains=8, batch_size=4096, seed=1)
    run_ensemble(sampler, theory=theory, path=path, n=40000, config_text=cfg.text, seed=1,
                 block=5000, progress=False)
    ens = ensemble.open(path)
    yield theory, ens
    ens.close()


def test_untrained_flow_reproduces_free_field(chain):
    theory, ens = chain
    g = free_propagator(theory.shape, theory.m2)
    expected = {"chi2": theory.exact()["chi2"], "phi2": g[0], "ising_energy": g[1]}
    assert 0.05 < ens.accepted.mean() < 0.6
    for name, value in expected.items():
        r = gamma_method(ens.observable(name).T)
        assert abs(r.mean - value) < 4 * r.error, (name, str(r), value)


def test_tau_int_agrees_with_the_accept_reject_estimate(chain):
    """τ_int from the Γ-method vs ½ + Σ_t P(t consecutive rejections) (Eqs. 15-16)."""
    _, ens = chain
    tau_acc = tau_int_from_acceptance(ens.accepted.T)
    for name in ("chi2", "phi2"):
        r = gamma_method(ens.observable(name).T)
        assert abs(r.tau_int - tau_acc) < 4 * r.tau_int_error + 0.15 * tau_acc, (name, str(r), tau_acc)


def test_float32_proposals_match_float64_log_weights():
    """Sampling runs the flow in float32 by default: its log w must agree with float64."""
    from latticeflow.pipeline import flow_proposal

    cfg = parse_config('[theory]\nname = "phi4"\nL = 4\nm2 = -1.0\nlam = 1.0\n'
                       '[flow]\nlayers = 4\nbijection = "spline"\nhidden = [8]\n')
    theory = cfg.theory.build()
    torch.manual_seed(1)
    flow = build_flow(theory, cfg.flow)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    logs = {}
    for dtype in ("float32", "float64"):
        propose = flow_proposal(flow, dtype)
        x, log_q = propose(512, torch.Generator().manual_seed(3))
        x64 = x.double()
        logs[dtype] = -theory.action(x64) - log_q.double()
    spread = logs["float64"].std()
    assert torch.allclose(logs["float32"], logs["float64"], atol=1e-3 * max(1.0, float(spread)))
