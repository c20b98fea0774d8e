"""Stochastic normalizing flows on a defect (flows/defect_flow.py, training/work.py, the ``snf``
sampler): with untrained random maps Jarzynski holds and the sampler is exact (pure U(1) vs
the torus, the Schwinger model vs the exact-determinant reference), the training loss is the
sampler's work, training on ⟨W⟩ resumes bit for bit (with its chain of Schwinger starts),
sampling resumes bit for bit, and bad input is refused in one line."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latticeflow import ensemble, training
from latticeflow.cli import main
from latticeflow.config import parse_config
from latticeflow.flows import build_flow
from latticeflow.theories.defect import free_energy_difference
from latticeflow.training.run_files import model_file
from latticeflow.mcmc.nemcmc import transport_parts
from latticeflow.training.work import snf_transport, transport_work

from conftest import refuse

REFERENCE = json.loads((Path(__file__).parent / "schwinger_reference.json").read_text())["reference"]

FLOW = """
[flow]
layers = 4
hidden = [4]
bijection = "ncp"
components = 2
loops = ["plaquette", "rectangle"]
"""

U1_MODEL = """
[theory]
name = "u1"
L = 4
beta = 2.0
""" + FLOW + """
[sample]
sampler = "snf"
chains = 32
protocol_steps = 3
defect_length = 2
maps = 2
patch = 1
block = 30
seed = 3
"""

SCHWINGER_MODEL = """
[theory]
name = "schwinger"
L = 4
beta = 1.0
kappa = 0.25
""" + FLOW + """
[hmc]
steps = 4
fermions = "exact"
tune = false
[train]
objective = "work"
batch_size = 4
schedule = "constant"
log_every = 1
eval_every = 2
eval_batch = 4
checkpoint_every = 2
[sample]
sampler = "snf"
chains = 32
protocol_steps = 2
defect_length = 2
maps = 2
patch = 0
thermalization = 10
block = 20
seed = 2
"""


def random_weights(cfg, seed=0):
    """A flow of ``cfg`` with random non-zero weights (a fresh one is the identity map)."""
    torch.manual_seed(seed)
    flow = build_flow(cfg.theory, cfg.flow)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))  # about halves the ESS of e^{-W}: maps that matter
    return flow


def write_model(folder, text, seed=0):
    """``m.toml`` and random weights ``m.pt`` beside it."""
    path = Path(folder) / "m.toml"
    path.write_text(text)
    cfg = parse_config(text, path)
    torch.save(model_file(random_weights(cfg, seed), cfg), path.with_suffix(".pt"))
    return path


def test_jarzynski_holds_with_random_maps_and_training_minimises_the_sampler_work():
    cfg = parse_config(U1_MODEL)
    theory = cfg.theory.build()
    flow = random_weights(cfg).double()
    parts = transport_parts(theory, cfg.sample, cfg.hmc)
    transport = snf_transport(flow, parts, cfg.sample.maps, cfg.sample.patch)
    n = 2000
    g = torch.Generator().manual_seed(7)
    start = parts.starts.propose(n, g)[0]
    state = g.get_state()
    _, work, info = transport(start, g)
    w = torch.exp(-work).numpy()
    want = math.exp(-free_energy_difference(theory.shape, theory.beta, cfg.sample.defect_length))
    sigma = w.std() / math.sqrt(n)
    assert abs(w.mean() - want) < 4 * sigma and sigma < 0.06 * want, (w.mean(), sigma, want)
    assert (info["sector_change"] != 0).any()
    # the maps matter: the same starts and random numbers without them give other works
    plain = snf_transport(flow, parts, cfg.sample.maps, cfg.sample.patch)
    plain.maps = None
    g.set_state(state)
    assert (plain(start, g)[1] - work).abs().mean() > 0.1
    # the loss of training is this work (the same draws), and it has a gradient
    g.set_state(state)
    trained, _ = transport_work(transport, start[:64], g)
    g.set_state(state)
    assert torch.allclose(trained.detach(), transport(start[:64], g)[1], atol=1e-9)
    trained.mean().backward()
    assert sum(float(p.grad.abs().sum()) for p in flow.parameters() if p.grad is not None) > 0


def test_u1_sampler_with_random_maps_is_exact(tmp_path, capsys):
    model, out = write_model(tmp_path, U1_MODEL), tmp_path / "u1.h5"
    assert main(["sample", str(model), "-n", "1920", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sampler"] == "snf" and 0.1 < summary["acceptance"] < 0.95
    for name in ("plaquette", "chi_Q"):
        r = summary["observables"][name]
        assert abs(r["mean"] - summary["exact"][name]) < 4 * r["error"], (name, r)
        assert r["error"] < 0.15 * summary["exact"][name], (name, r)
    f = summary["delta_f"]
    assert abs(f["mean"] - f["exact"]) < 4 * f["error"] < 0.3, f
    with ensemble.open(out) as ens:
        assert (ens.weights.column, ens.reweighted) == ("log_weight", False)
        assert ens.extra["jarzynski"]["maps"] == 2 and ens.extra["jarzynski"]["patch"] == 1


def test_schwinger_sampler_with_random_maps_matches_the_exact_determinant_reference(tmp_path, capsys):
    model, out = write_model(tmp_path, SCHWINGER_MODEL), tmp_path / "s.h5"
    assert main(["sample", str(model), "-n", "640", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["acceptance"] > 0.2 and summary["sampler"] == "snf"
    for name in ("plaquette", "chiral_condensate", "chi_Q"):
        r, ref = summary["observables"][name], REFERENCE[name]
        sigma = math.hypot(r["error"], ref["error"])
        assert abs(r["mean"] - ref["mean"]) < 4 * sigma and r["error"] < 0.05 * abs(ref["mean"]) + 0.005, (name, r)


def test_a_resumed_file_equals_an_uninterrupted_one(tmp_path):
    text = U1_MODEL.replace("chains = 32", "chains = 4").replace("block = 30", "block = 3")
    sample = ["sample", str(write_model(tmp_path, text)), "--quiet", "--out"]
    assert main([*sample, str(tmp_path / "a.h5"), "-n", "24"]) == 0
    assert main([*sample, str(tmp_path / "b.h5"), "-n", "12"]) == 0
    assert main([*sample, str(tmp_path / "b.h5"), "-n", "24"]) == 0
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert np.array_equal(a.configs[:], b.configs[:])
        for name in a.mcmc:
            assert np.array_equal(a.mcmc[name], b.mcmc[name]), name


def test_training_on_the_work_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The Schwinger model: its chain of c = 0 starts lives in the checkpoint."""
    monkeypatch.setattr(training.Trainer, "plot", lambda self: None)  # the figure is tested elsewhere (slow)
    cfg = parse_config(SCHWINGER_MODEL.replace("thermalization = 10", "thermalization = 3"))
    straight = training.train(cfg, out=tmp_path / "a", steps=3, progress=False)
    training.train(cfg, out=tmp_path / "b", steps=2, progress=False)
    resumed = training.train(cfg, out=tmp_path / "b", steps=3, resume=True, progress=False)
    for p, q in zip(straight.flow.parameters(), resumed.flow.parameters()):
        assert torch.equal(p, q)
    assert any(float(p.detach().abs().sum()) > 0 for p in list(straight.flow.parameters())[-2:])  # trained
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert drop(lines) == drop(again) and len(lines) == 3
    assert lines[-1]["log_z_bound"] == -lines[-1]["loss"] and lines[-1]["acceptance"] is not None


@pytest.mark.parametrize("old,new,words", [
    ('sampler = "snf"', 'sampler = "ne-mcmc"', 'train.objective: "work" trains the maps of the snf sampler'),
    ("maps = 2", "maps = 3", "sample.maps: 3 maps for a protocol of 2 steps: at most one map per step"),
    ("schedule = \"constant\"", 'estimator = "path"', "train.estimator: the work objective has its own"),
])
def test_bad_training_input_is_refused(tmp_path, capsys, old, new, words):
    model = tmp_path / "m.toml"
    model.write_text(SCHWINGER_MODEL.replace(old, new))
    if "ne-mcmc" in new:  # the keys of the maps are not ne-mcmc's
        model.write_text(model.read_text().replace("maps = 2\n", "").replace("patch = 0\n", ""))
    assert words in refuse(["train", model, "--out", tmp_path / "run", "--steps", 1], capsys)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("old,new,words", [
    ("maps = 2", "maps = 3", "sample.maps: the flow's 4 couplings do not split into 3 maps"),
    ("protocol_steps = 3", "protocol_steps = 1", "sample.maps: 2 maps for a protocol of 1 steps"),
    ("defect_length = 2", "defect_length = 5", "sample.defect_length: the defect is a segment of 1"),
    ("patch = 1", "patch = -1", "sample.patch: must be between 0"),
])
def test_bad_sampling_input_is_refused(tmp_path, capsys, old, new, words):
    model = write_model(tmp_path, U1_MODEL)  # weights of the architecture, then the bad [sample] table
    model.write_text(U1_MODEL.replace(old, new))
    assert words in refuse(["sample", model, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert not (tmp_path / "x.h5").exists()


def test_other_theories_are_refused(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    words = refuse(["sample", root / "models" / "su2_L8_b2.toml", "--sampler", "snf", "-n", 8, "--out",
                    tmp_path / "x.h5"], capsys)
    assert "sample.sampler: snf: the defect is implemented for 2D U(1) and the Schwinger model" in words
