"""Markov kernels (mcmc/kernels.py): a composition of HMC and flow independence kernels run
by KernelChains is exact (seeded, within 4σ of the exact U(1) values) and resumes bit for
bit, and the script of docs/kernels.md runs."""

import re

import numpy as np
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method
from latticeflow.flows import build_flow
from latticeflow.flows.registry import FlowConfig
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.kernels import Composite, HMCKernel, IndependenceKernel, KernelChains, ProposalStream
from latticeflow.samplers import flow_density, flow_proposal
from latticeflow.theories import U1

from conftest import ROOT

COLUMNS = ["accepted", "delta_h", "log_weight", "proposal_log_weight"]


def _chains(theory, flow, seed=3):
    stream = ProposalStream(flow_proposal(flow, "float64"), theory, batch_size=64, seed=seed)
    kernel = Composite([HMCKernel(HMC(theory, steps=4))]
                       + [IndependenceKernel(theory, stream, flow_density(flow, "float64"))] * 2)
    return KernelChains(theory, kernel, n_chains=8, seed=seed, thermalization=10, columns=COLUMNS,
                        weight_column="log_weight", name="hmc+2flow")


def test_a_composition_of_hmc_and_flow_proposals_is_exact(tmp_path):
    theory = U1((4, 4), beta=1.0)
    torch.manual_seed(0)
    flow = build_flow(theory, FlowConfig(layers=2, hidden=(4,), bijection="ncp", components=2)).double()
    run_ensemble(_chains(theory, flow), theory=theory, path=tmp_path / "k.h5", n=3200, config_text="",
                 seed=3, block=100, progress=False)
    exact = theory.exact()
    with ensemble.open(tmp_path / "k.h5") as ens:
        assert ens.sampler == "hmc+2flow" and ens.weights.column == "log_weight" and not ens.reweighted
        for name in ("plaquette", "chi_Q"):
            r = gamma_method(ens.observable(name).T)
            assert abs(r.mean - exact[name]) < 4 * r.error, (name, str(r), exact[name])
        assert 0.05 < ens.accepted.mean() < 0.95  # the flow's proposals are accepted, not always
        assert np.all(np.isfinite(ens.mcmc["log_weight"]))


def test_kernel_chains_resume_bit_for_bit(tmp_path):
    theory = U1((4, 4), beta=1.0)
    torch.manual_seed(1)
    flow = build_flow(theory, FlowConfig(layers=2, hidden=(4,), bijection="ncp", components=2)).double()
    run_ensemble(_chains(theory, flow), theory=theory, path=tmp_path / "a.h5", n=240, config_text="",
                 seed=3, block=10, progress=False)
    run_ensemble(_chains(theory, flow), theory=theory, path=tmp_path / "b.h5", n=120, config_text="",
                 seed=3, block=10, progress=False)
    run_ensemble(_chains(theory, flow), theory=theory, path=tmp_path / "b.h5", n=240, config_text="",
                 seed=3, block=10, progress=False)
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert np.array_equal(a.configs[:], b.configs[:])
        for name in COLUMNS:
            assert np.array_equal(a.mcmc[name], b.mcmc[name]), name


def test_the_script_of_docs_kernels_md_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs" / "kernels.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = code.replace('"models/', f'"{ROOT}/models/').replace('"runs/kernels-demo.h5"', f'"{tmp_path}/k.h5"')
    code = code.replace("n=2000", "n=200").replace("thermalization=20", "thermalization=4")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/kernels.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("plaquette") and "exact 0.697" in out
