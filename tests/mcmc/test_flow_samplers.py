"""Flow samplers are exact for any proposal: free field against exact results (seeded, 4σ)."""

import math

import numpy as np
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method, reweighted_mean
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.flow_samplers import IIDWithWeights, IndependenceMetropolis
from latticeflow.mcmc.independence import independence_chain
from latticeflow.theories import Phi4

THEORY = Phi4((4, 4), m2=1.0, lam=0.0)
EXACT = THEORY.exact()


def gaussian_proposal(scale: float):
    """A deliberately mismatched 'flow': N(0, scale²) per site."""
    def propose(n, generator):
        x = scale * torch.randn(n, 4, 4, dtype=torch.float64, generator=generator)
        log_q = (-0.5 * (x / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)).sum((1, 2))
        return x, log_q
    return propose


def test_independence_chain_scan_by_hand():
    log_w = torch.tensor([[0.0], [-10.0], [1.0], [0.5]], dtype=torch.float64)
    log_u = torch.log(torch.tensor([[0.5], [0.5], [0.5], [0.5]], dtype=torch.float64))
    acc, source, chain = independence_chain(log_w, torch.tensor([-1.0], dtype=torch.float64), log_u)
    # 0 > -1 accept; -10 reject; 1 accept; exp(0.5 - 1) = 0.61 > 0.5 accept
    assert acc[:, 0].tolist() == [True, False, True, True]
    assert source[:, 0].tolist() == [0, 0, 2, 3]
    assert chain[:, 0].tolist() == [0.0, 0.0, 1.0, 0.5]


def test_metropolis_is_exact_for_a_mismatched_proposal(tmp_path):
    sampler = IndependenceMetropolis(THEORY, gaussian_proposal(0.45), n_chains=8,
                                     batch_size=4096, seed=1)
    path = tmp_path / "free.h5"
    run_ensemble(sampler, theory=THEORY, path=path, n=48000, config_text="", seed=1,
                 block=2000, progress=False)
    with ensemble.open(path) as ens:
        assert ens.n == 48000 and ens.sampler == "flow-mcmc"
        acc = ens.accepted
        for name in ("chi2", "phi2", "ising_energy"):
            r = gamma_method(ens.observable(name).T)
            assert abs(r.mean - EXACT[name]) < 4 * r.error, (name, r, EXACT[name])
        assert 0.05 < acc.mean() < 0.6  # a poor proposal: exactness must not depend on quality
        # the stored chain configurations reproduce the stored observables
        x = torch.from_numpy(ens.configs[-5:].reshape(-1, 4, 4))
        assert np.allclose(THEORY.observables(x)["phi2"].numpy(), ens.observable("phi2")[-5:].ravel())
        assert np.allclose(-THEORY.action(x).numpy() - gaussian_log_q(x, 0.45),
                           ens.log_weight[-5:].ravel())


def test_metropolis_measures_only_the_proposals_its_chains_hold(tmp_path):
    """Observables are computed for accepted proposals only (a rejected one repeats the chain's
    configuration), in chunks of batch_size proposals, and every row's observables are those
    of its stored configuration."""
    measured = []

    class Counting(Phi4):
        def observables(self, x):
            measured.append(x.shape[0])
            return super().observables(x)

    theory = Counting((4, 4), m2=1.0, lam=0.0)
    sampler = IndependenceMetropolis(theory, gaussian_proposal(0.45), n_chains=4, batch_size=64, seed=5)
    path = tmp_path / "counted.h5"
    run_ensemble(sampler, theory=theory, path=path, n=2000, config_text="", seed=5, block=200, progress=False)
    with ensemble.open(path) as ens:
        accepted = int(ens.accepted.sum())
        assert 0 < accepted < 0.6 * ens.n
        assert sum(measured) <= 4 + accepted  # the 4 starts, then at most one per acceptance
        x = torch.from_numpy(ens.configs[:].reshape(-1, 4, 4))
        for name in ("phi2", "chi2"):
            assert np.array_equal(THEORY.observables(x)[name].numpy(), ens.observable(name).ravel())


def gaussian_log_q(x, scale):
    return ((-0.5 * (x / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi))
            .sum((1, 2)).numpy())


def test_iid_reweighting_is_exact(tmp_path):
    sampler = IIDWithWeights(THEORY, gaussian_proposal(0.45), n_chains=4, batch_size=4096, seed=2)
    path = tmp_path / "iid.h5"
    run_ensemble(sampler, theory=THEORY, path=path, n=20000, config_text="", seed=2,
                 block=1000, progress=False, store_configs=False)
    with ensemble.open(path) as ens:
        assert not ens.has_configs and ens.sampler == "flow-iid"
        for name in ("chi2", "phi2"):
            r = reweighted_mean(ens.observable(name).T, ens.log_weight.T)
            assert abs(r.mean - EXACT[name]) < 4 * r.error


def test_resume_continues_without_duplication(tmp_path):
    path = tmp_path / "resume.h5"
    kwargs = dict(theory=THEORY, path=path, config_text="", seed=3, block=50, progress=False)
    one = IndependenceMetropolis(THEORY, gaussian_proposal(0.45), n_chains=2, seed=3)
    run_ensemble(one, n=200, **kwargs)
    two = IndependenceMetropolis(THEORY, gaussian_proposal(0.45), n_chains=2, seed=3)
    out = run_ensemble(two, n=400, **kwargs)
    assert out["resumed"] and out["rows_added"] == 100
    # the same run in one go gives identical data: the state and RNG were restored exactly
    path2 = tmp_path / "straight.h5"
    three = IndependenceMetropolis(THEORY, gaussian_proposal(0.45), n_chains=2, seed=3)
    run_ensemble(three, n=400, **{**kwargs, "path": path2})
    with ensemble.open(path) as a, ensemble.open(path2) as b:
        assert a.n == b.n == 400
        assert np.array_equal(a.observable("chi2"), b.observable("chi2"))
        assert np.array_equal(a.configs[:], b.configs[:])
    # running again at the target adds nothing
    four = IndependenceMetropolis(THEORY, gaussian_proposal(0.45), n_chains=2, seed=3)
    assert run_ensemble(four, n=400, **kwargs)["rows_added"] == 0
