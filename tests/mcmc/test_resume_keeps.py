"""A resume keeps the settings that define a file's chains: changing one is refused in one
line naming it, and the file is left as it was (an edited integrator, seed, mixed kernel or
other flow weights used to be ignored, or to continue the chains with another kernel)."""

import pytest
import torch

from latticeflow import ensemble, pipeline
from latticeflow.config import parse_config
from latticeflow.errors import LatticeflowError
from latticeflow.flows import build_flow

MODEL = """
[theory]
name = "phi4"
L = 4
m2 = 1.0
lam = 0.5

[flow]
layers = 2
bijection = "affine"
hidden = [4]

[hmc]
chains = 2
thermalization = 5
steps = 4
tune = false
block = 5

[sample]
chains = 2
batch_size = 64
block = 5
thermalization = 5
{extra}
"""


def config(extra="", **edits):
    text = MODEL.format(extra=extra)
    for old, new in edits.items():
        text = text.replace(old, new)
    return parse_config(text)


def refused(run, path, match):
    with ensemble.open(path) as ens:
        before = ens.n
    with pytest.raises(LatticeflowError, match=match):
        run()
    with ensemble.open(path) as ens:
        assert ens.n == before


@pytest.fixture
def flow():
    torch.manual_seed(0)
    cfg = config()
    return build_flow(cfg.theory.build(), cfg.flow)


def test_hmc_resume_keeps_integrator_and_seed(tmp_path):
    out = tmp_path / "hmc.h5"
    pipeline.hmc(config(), 10, out=out, progress=False)
    for edits, key in (({"steps = 4": "steps = 4\nintegrator = \"leapfrog\""}, "hmc.integrator"),
                       ({"steps = 4": "steps = 7"}, "hmc.steps"),
                       ({"tune = false": "tune = true"}, "hmc.tune")):
        refused(lambda: pipeline.hmc(config(**edits), 20, out=out, progress=False), out, key)
    refused(lambda: pipeline.hmc(config(), 20, out=out, seed=3, progress=False), out, "hmc.seed")
    assert pipeline.hmc(config(), 20, out=out, progress=False)["n"] == 20  # the same settings


def test_mixed_resume_keeps_its_kernel_and_flow(tmp_path, flow):
    out = tmp_path / "mixed.h5"
    mixed = 'sampler = "mixed"\nhmc_per_step = 2\nflow_per_step = 3'
    pipeline.sample(config(mixed), 10, out=out, flow=flow, progress=False)
    for old, new, key in (("hmc_per_step = 2", "hmc_per_step = 5", "sample.hmc_per_step"),
                          ("flow_per_step = 3", "flow_per_step = 1", "sample.flow_per_step")):
        cfg = config(mixed.replace(old, new))
        refused(lambda: pipeline.sample(cfg, 20, out=out, flow=flow, progress=False), out, key)
    other = build_flow(config().theory.build(), config().flow)
    refused(lambda: pipeline.sample(config(mixed), 20, out=out, flow=other, progress=False), out,
            r"flow weights \(sha256\)")
    assert pipeline.sample(config(mixed), 20, out=out, flow=flow, progress=False)["n"] == 20


def test_flow_mcmc_resume_refuses_other_weights_or_seed(tmp_path, flow):
    out = tmp_path / "flow.h5"
    pipeline.sample(config(), 10, out=out, flow=flow, progress=False)
    with torch.no_grad():
        changed = build_flow(config().theory.build(), config().flow)
        changed.load_state_dict(flow.state_dict())
        next(changed.parameters()).add_(1e-3)
    refused(lambda: pipeline.sample(config(), 20, out=out, flow=changed, progress=False), out,
            "flow weights")
    refused(lambda: pipeline.sample(config(), 20, out=out, flow=flow, seed=5, progress=False), out,
            "sample.seed")
    # the same weights in float64 are the same flow
    same = build_flow(config().theory.build(), config().flow).double()
    same.load_state_dict(flow.state_dict())
    assert pipeline.sample(config(), 20, out=out, flow=same, progress=False)["n"] == 20


def test_the_settings_kept_by_each_sampler():
    from latticeflow.samplers import resume_keeps

    cfg = config()
    theory = cfg.theory.build()
    integrator = {"hmc.integrator", "hmc.trajectory_length", "hmc.tune", "hmc.steps"}
    assert set(resume_keeps(cfg, theory, "hmc")) == integrator | {"hmc.force", "hmc.seed"}
    flow_keys = {"sample.seed", "sample.dtype"}
    assert set(resume_keeps(cfg, theory, "flow-mcmc")) == flow_keys
    assert set(resume_keeps(cfg, theory, "flow-iid")) == flow_keys
    assert set(resume_keeps(cfg, theory, "flow-hmc")) == flow_keys | integrator  # autograd force
    assert set(resume_keeps(cfg, theory, "mixed")) == flow_keys | integrator | {
        "hmc.force", "sample.hmc_per_step", "sample.flow_per_step"}
    tuned = config(**{"tune = false": "tune = true"})
    assert "hmc.target_acceptance" in resume_keeps(tuned, theory, "hmc")
    assert "hmc.steps" not in resume_keeps(tuned, theory, "hmc")
    schwinger = parse_config('[theory]\nname = "schwinger"\nL = 4\nbeta = 2.0\nkappa = 0.2\n'
                             '[hmc]\nfermions = "exact"\n')
    keeps = resume_keeps(schwinger, schwinger.theory.build(), "hmc")
    assert keeps["hmc.fermions"] == "exact" and "hmc.cg_tolerance" not in keeps
    pseudo = parse_config(schwinger.text.replace('"exact"', '"pseudofermion"'))
    assert "hmc.cg_tolerance" in resume_keeps(pseudo, pseudo.theory.build(), "hmc")
