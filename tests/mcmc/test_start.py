"""``[sample] start``: chains that start from another ensemble's last configurations.

Each sampler really starts there; flow HMC started in equilibrium stays there (its chain
means agree with the exact values in units of the spread of the chains' means, and the
same test catches a kernel aimed at another β); bad start files are refused in one
line before any file is written; a resumed file ignores the start."""

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from latticeflow import ensemble, pipeline
from latticeflow.config import HMCConfig, parse_config
from latticeflow.ensemble.start import start_fields
from latticeflow.errors import LatticeflowError
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.flow_hmc import FlowHMCChains
from latticeflow.mcmc.flow_samplers import IndependenceMetropolis
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.hmc_chains import HMCChains
from latticeflow.mcmc.mixed import MixedKernel
from latticeflow.pipeline import flow_density, flow_proposal

from test_mixed_and_flow_hmc import U1_MODEL, U1_NCP_MODEL, random_flow

HMC_TABLE = "\n[hmc]\ntrajectory_length = 1.0\nsteps = 8\ntune = false\nthermalization = {therm}\nseed = 3\n"


@pytest.fixture(scope="module")
def equilibrium(tmp_path_factory):
    """An HMC ensemble of U(1) L = 4, β = 2: 128 independent chains, the last row 200
    trajectories (≫ τ_int) after a hot start."""
    path = tmp_path_factory.mktemp("start") / "hmc.h5"
    cfg = parse_config(U1_MODEL.format(beta=2.0) + HMC_TABLE.format(therm=200))
    pipeline.hmc(cfg, n=256, out=path, chains=128, progress=False)
    return path


def last_row(path):
    with ensemble.open(path) as ens:
        return ens.configs[ens.n_rows - 1]


def test_start_fields_reads_the_last_row_of_the_chains_asked_for(equilibrium):
    given = start_fields(equilibrium, "u1", (2, 4, 4), chains=8, first=4)
    assert np.array_equal(given.fields, last_row(equilibrium)[4:12])
    assert given.record["row"] == 1 and given.record["chains"] == [4, 12]
    assert given.record["sampler"] == "hmc"


def test_every_sampler_starts_from_the_given_fields(equilibrium):
    theory, flow = random_flow(U1_NCP_MODEL.format(beta=2.0), 0.3)
    given = start_fields(equilibrium, "u1", theory.field_shape, chains=6)
    x0 = torch.from_numpy(given.fields)
    propose, density = flow_proposal(flow, "float64"), flow_density(flow, "float64")

    metropolis = IndependenceMetropolis(theory, propose, 6, density=density, start_fields=given)
    metropolis.start(None)
    assert torch.equal(metropolis.x, x0)
    assert torch.allclose(metropolis.log_w, -theory.action(x0) - density(x0))

    hmc = HMC(theory, trajectory_length=1.0, steps=4)
    for chains in (HMCChains(theory, hmc, 6, thermalization=0, start_fields=given, progress=False),
                   MixedKernel(theory, hmc, propose, density, 6, thermalization=0,
                               start_fields=given, progress=False)):
        chains.start(None)
        assert torch.equal(chains.x, x0)
        assert chains.extra()["start"] == given.record

    settings = HMCConfig(integrator="leapfrog", trajectory_length=0.5, steps=5)
    latent = FlowHMCChains(theory, flow, settings, 6, thermalization=0, start_fields=given,
                           progress=False)
    latent.start(None)
    x = latent.theory.push(latent.x)[0]  # z = f⁻¹(x0), pushed forward again
    assert torch.allclose(torch.polar(torch.ones_like(x), x), torch.polar(torch.ones_like(x0), x0),
                          atol=1e-9)


def _chain_mean_deviation(path, exact):
    """(mean − exact)/error of the plaquette, the error from the spread of the chains' means
    (the chains start independent and in equilibrium, so this holds however short they are)."""
    with ensemble.open(path) as ens:
        per_chain = ens.observable("plaquette").mean(axis=0)
    error = per_chain.std(ddof=1) / np.sqrt(per_chain.size)
    return (per_chain.mean() - exact) / error


@pytest.mark.parametrize("beta", [2.0, 3.0], ids=["exact", "wrong-target"])
def test_flow_hmc_started_in_equilibrium_stays_there(equilibrium, tmp_path, beta):
    """At β = 2 the chains stay in β = 2's equilibrium; the same chains aimed at β = 3 (a
    kernel with the wrong invariant distribution) leave it within six trajectories, which
    shows the test can fail."""
    theory, flow = random_flow(U1_NCP_MODEL.format(beta=beta), 0.3, seed=2)
    given = start_fields(equilibrium, "u1", theory.field_shape, chains=128)
    settings = HMCConfig(integrator="omelyan", trajectory_length=0.5, steps=6, tune=False)
    sampler = FlowHMCChains(theory, flow, settings, 128, thermalization=0, tune=False, seed=5,
                            start_fields=given, progress=False)
    path = tmp_path / "flow-hmc.h5"
    run_ensemble(sampler, theory=theory, path=path, n=128 * 6, config_text="", seed=5, block=6,
                 progress=False)
    with ensemble.open(path) as ens:
        acceptance = ens.mcmc["accepted"].mean()
    exact = parse_config(U1_MODEL.format(beta=2.0)).theory.build().exact()["plaquette"]
    deviation = _chain_mean_deviation(path, exact)
    assert acceptance > 0.4, acceptance  # the chains moved
    if beta == 2.0:
        assert abs(deviation) < 4, deviation
    else:
        assert deviation > 5, deviation  # β = 3's plaquette is larger


def test_pipeline_start_override_and_refusals(equilibrium, tmp_path):
    cfg = parse_config(U1_MODEL.format(beta=2.0) + "[sample]\nchains = 4\n")
    theory, flow = random_flow(U1_MODEL.format(beta=2.0), 0.05)
    out = tmp_path / "m.h5"
    result = pipeline.sample(cfg, 8, out, flow=flow, progress=False, start=equilibrium)
    assert result["n"] == 8
    with ensemble.open(out) as ens:
        assert ens.extra["start"]["path"] == str(equilibrium)
        assert 'start = "' in ens.config_text
    # a resumed file ignores the start (here: no longer there)
    moved = tmp_path / "gone.h5"
    pipeline.sample(cfg, 16, out, flow=flow, progress=False, start=moved)

    no_configs = tmp_path / "obs-only.h5"
    pipeline.hmc(parse_config(U1_MODEL.format(beta=2.0) + HMC_TABLE.format(therm=5)), n=8,
                 out=no_configs, chains=4, configs=False, progress=False)
    phi4 = parse_config('[theory]\nname = "phi4"\nL = 4\nm2 = -4.0\nlam = 8.0\n'
                        '[flow]\nlayers = 2\nhidden = [4]\n')
    bad = [(cfg, equilibrium, {"chains": 200}, "has 128 chains"),
           (cfg, no_configs, {}, "stores no configurations"),
           (cfg, tmp_path / "missing.h5", {}, "no such file"),
           (cfg, equilibrium, {"iid": True}, "flow-iid"),
           (phi4, equilibrium, {}, "an ensemble of 'u1', not of 'phi4'"),
           (parse_config(U1_MODEL.replace("L = 4", "L = 8").format(beta=2.0)), equilibrium, {},
            "fields of shape (2, 4, 4)")]
    for model, start, kw, message in bad:
        target = tmp_path / "refused.h5"
        model_flow = random_flow(model.text, 0.0)[1]
        with pytest.raises(LatticeflowError, match=message.replace("(", r"\(").replace(")", r"\)")):
            pipeline.sample(model, 8, target, flow=model_flow, progress=False, start=start, **kw)
        assert not target.exists()


def test_cli_refuses_a_bad_start_in_one_line(tmp_path):
    not_an_ensemble = tmp_path / "x.h5"
    not_an_ensemble.write_bytes(b"not hdf5")
    out = tmp_path / "o.h5"
    proc = run_cli("sample", "models/u1_L8_b2.toml", "-n", 8, "--start", not_an_ensemble,
                   "--out", out, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--start" in proc.stderr, proc.stderr
    assert not out.exists()


def test_config_key_is_checked():
    with pytest.raises(LatticeflowError, match="sample.start"):
        parse_config(U1_MODEL.format(beta=2.0) + '[sample]\nstart = ""\n')


def test_a_file_stopped_before_its_first_block_starts_afresh(equilibrium, tmp_path):
    """A file with no committed rows (its first block killed or failed) holds no data: the
    next run replaces it, so its start and its own settings apply (continuing it would
    have started from a flow sample and kept the failed run's config and record)."""
    cfg = parse_config(U1_MODEL.format(beta=2.0) + "[sample]\nchains = 4\n")
    theory, flow = random_flow(U1_MODEL.format(beta=2.0), 0.05)
    out, fresh = tmp_path / "m.h5", tmp_path / "fresh.h5"
    with ensemble.create(out, theory=theory.params(), sampler="flow-mcmc", config_text="# failed run",
                         seed=99, n_chains=4, observables=list(theory.observable_names),
                         mcmc=["accepted", "log_weight", "proposal_log_weight"],
                         field_shape=theory.field_shape, extra={"start": "elsewhere"}):
        pass
    assert ensemble.holds_no_rows(out) and not ensemble.holds_no_rows(equilibrium)
    assert not pipeline.sample(cfg, 8, out, flow=flow, progress=False, start=equilibrium)["resumed"]
    pipeline.sample(cfg, 8, fresh, flow=flow, progress=False, start=equilibrium)
    with ensemble.open(out) as ens, ensemble.open(fresh) as ref:
        assert ens.extra["start"]["path"] == str(equilibrium)
        assert ens.config_text == ref.config_text and ens.seed == cfg.sample.seed
        assert np.array_equal(ens.configs[:], ref.configs[:])  # the same chains as a new file's
    # a file that holds rows is continued, and ignores the start
    assert pipeline.sample(cfg, 16, out, flow=flow, progress=False, start=equilibrium)["resumed"]


def test_cli_says_when_a_start_is_not_used(equilibrium, tmp_path):
    from latticeflow.files import atomic_save
    from latticeflow.training.run_files import model_file

    model = tmp_path / "m.toml"
    model.write_text(U1_MODEL.format(beta=2.0) + "[sample]\nchains = 4\n")
    cfg, flow = parse_config(model.read_text()), random_flow(model.read_text(), 0.05)[1].float()
    atomic_save(model_file(flow, cfg), model.with_suffix(".pt"))  # the weights beside the model
    out = tmp_path / "o.h5"
    pipeline.sample(cfg, 4, out, flow=flow, progress=False)
    again = run_cli("sample", model, "-n", 8, "--start", equilibrium, "--out", out, "--quiet")
    assert again.returncode == 0, again.stderr
    assert "was not used" in again.stderr and "continued" in again.stderr
