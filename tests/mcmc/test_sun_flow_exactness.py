"""SU(2) and SU(3) flows with untrained (random, non-identity) weights + Metropolis
independence, reweighting and the mixed kernel are exact: the torus plaquette of the
character expansion within 4σ (seeded), on a 4×4 lattice, in float32 as sampling runs."""

import pytest
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method, reweighted_mean
from latticeflow.config import parse_config
from latticeflow.flows import build_flow
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.flow_samplers import IIDWithWeights, IndependenceMetropolis
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.mixed import MixedKernel
from latticeflow.pipeline import flow_density, flow_proposal

MODEL = ('[theory]\nname = "sun"\nN = {N}\nL = 4\nbeta = {beta}\n'
         '[flow]\nlayers = 8\nbins = 4\nhidden = [4]\n')
#: β where a random flow (proposals barely off Haar, ⟨P⟩ ≈ 0.05 / 0.01) still has acceptance
#: ≈ 0.18 / 0.13 on 4×4, so that Metropolis has to correct a large bias (exact ⟨P⟩ 0.24 / 0.13)
POINTS = [(2, 1.0), (3, 2.0)]


def random_flow(N, beta, scale=0.05, seed=0):
    cfg = parse_config(MODEL.format(N=N, beta=beta))
    theory = cfg.theory.build()
    torch.manual_seed(seed)
    flow = build_flow(theory, cfg.flow)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return theory, flow


def check(path, theory, weighted=False):
    exact = theory.exact()["plaquette"]
    with ensemble.open(path) as ens:
        obs = ens.observable("plaquette").T
        r = reweighted_mean(obs, ens.log_weight.T) if weighted else gamma_method(obs)
        assert abs(r.mean - exact) < 4 * r.error, (str(r), exact)
        # far from the Haar prior's ⟨P⟩ = 0, so a sampler that ignored the weights would fail
        assert abs(r.mean) > 10 * r.error
        return ens.accepted.mean() if not weighted else None


@pytest.mark.parametrize("N,beta", POINTS)
def test_untrained_flow_with_metropolis_is_exact(tmp_path, N, beta):
    theory, flow = random_flow(N, beta)
    sampler = IndependenceMetropolis(theory, flow_proposal(flow, "float32"), n_chains=4,
                                     batch_size=2048, seed=1)
    run_ensemble(sampler, theory=theory, path=tmp_path / "f.h5", n=16000, config_text="", seed=1,
                 block=4000, progress=False)
    acceptance = check(tmp_path / "f.h5", theory)
    assert 0.02 < acceptance < 0.9


@pytest.mark.parametrize("N,beta", POINTS)
def test_untrained_flow_with_reweighting_is_exact(tmp_path, N, beta):
    theory, flow = random_flow(N, beta, seed=1)
    sampler = IIDWithWeights(theory, flow_proposal(flow, "float32"), n_chains=4, batch_size=2048, seed=2)
    run_ensemble(sampler, theory=theory, path=tmp_path / "w.h5", n=16000, config_text="", seed=2,
                 block=4000, progress=False)
    check(tmp_path / "w.h5", theory, weighted=True)


def test_mixed_kernel_with_an_su3_flow_is_exact(tmp_path):
    theory, flow = random_flow(3, 2.0, seed=2)
    flow = flow.double()
    sampler = MixedKernel(theory, HMC(theory, trajectory_length=1.0, steps=5), flow_proposal(flow, "float64"),
                          flow_density(flow, "float64"), n_chains=8, thermalization=20, seed=3,
                          progress=False)
    run_ensemble(sampler, theory=theory, path=tmp_path / "m.h5", n=2400, config_text="", seed=3,
                 block=300, progress=False)
    check(tmp_path / "m.h5", theory)
    with ensemble.open(tmp_path / "m.h5") as ens:
        assert 0.01 < ens.mcmc["flow_acceptance"][()].mean() < 0.99
