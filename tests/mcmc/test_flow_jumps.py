"""Annealed and flow-assisted instanton jumps (mcmc/flow_jumps.py, samplers annealed_jump.py and
flow_jump.py, training/jump_work.py): the backward move retraces the forward one with the
opposite work (with and without random maps), N = 0 is the plain jump, the whole-lattice maps
invert with the autograd log-det, the chains reproduce the exact U(1) torus (pure U(1)) and
the exact-determinant reference (Schwinger L = 4, with and without random maps; seeds fixed,
tolerance 4σ), resume bit for bit, refuse bad input in one line, and the training loss is the
kernel's forward work, differentiable, and trains and resumes bit for bit."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method
from latticeflow.config import parse_config
from latticeflow.flows import build_flow
from latticeflow.groups import principal_angle
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.flow_jumps import AnnealedJump, AnnealedJumpChains, TransportHMC
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.jumps import InstantonJump
from latticeflow.mcmc.kernels import KernelState
from latticeflow.theories import U1
from latticeflow.theories.schwinger import Schwinger
from latticeflow.training.run_files import model_file

from conftest import refuse

REFERENCE = json.loads((Path(__file__).parent / "schwinger_reference.json").read_text())["reference"]
FLOW = '[flow]\nlayers = 4\nhidden = [4]\nbijection = "ncp"\ncomponents = 2\nloops = ["plaquette", "rectangle"]\n'
SCHWINGER = '[theory]\nname = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.25\n[hmc]\nsteps = 3\nfermions = "exact"\n'


def random_maps(theory, steps, maps=1, seed=0):
    """Whole-lattice maps of a float64 flow with random weights (a fresh flow is the identity)."""
    from latticeflow.training.jump_work import jump_maps

    cfg = parse_config(f'[theory]\nname = "u1"\nL = {theory.shape[0]}\nbeta = 1.0\n' + FLOW)
    torch.manual_seed(seed)
    flow = build_flow(cfg.theory, cfg.flow).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return jump_maps(flow, theory, steps, maps), flow


class Recorded:
    """The transport's HMC, recording each update; ``replay`` then draws the reverse transitions."""

    def __init__(self, theory):
        self.hmc, self.calls, self.replaying = TransportHMC(theory, steps=3), [], False

    def __call__(self, x, shift, lam, generator):
        if not self.replaying:
            y, acc = self.hmc(x, shift, lam, generator)
            self.calls.append((x, lam, y))
            return y, acc
        x_in, lam_f, y = self.calls.pop()
        assert principal_angle(x - y).abs().max() < 1e-9 and torch.equal(lam, lam_f)
        return x_in, torch.ones(x.shape[0], dtype=torch.bool)


@pytest.mark.parametrize("with_maps", [False, True])
def test_the_backward_move_retraces_the_forward_one_with_the_opposite_work(with_maps):
    theory = Schwinger((4, 4), beta=1.0, kappa=0.25)
    g = torch.Generator().manual_seed(1)
    u, steps = theory.random_field(6, g), 4
    update = Recorded(theory)
    jump = AnnealedJump(theory, steps, update, random_maps(theory, steps, 2)[0] if with_maps else None)
    q, centre, _ = jump.draw(6, g)
    end, work, _ = jump.transport(u, q, centre, torch.ones(6, dtype=torch.bool), g)
    assert work.abs().min() > 1e-3 and len(update.calls) == steps
    update.replaying = True
    back, back_work, _ = jump.transport(end, q, centre, torch.zeros(6, dtype=torch.bool), g)
    assert principal_angle(back - u).abs().max() < 1e-9
    assert torch.allclose(back_work, -work, rtol=0, atol=1e-9)


@pytest.mark.parametrize("theory", [U1((4, 4), beta=2.0), Schwinger((4, 4), beta=1.0, kappa=0.25)])
def test_no_transport_is_the_plain_jump(theory):
    """N = 0: forward with q is the instanton jump with q (same draws: same acceptance), backward
    with q the instanton jump with −q."""
    g = torch.Generator().manual_seed(2)
    x = theory.random_field(8, g)
    state = g.get_state()
    plain = InstantonJump(theory, fermions="exact") if theory.has_fermions else InstantonJump(theory)
    info = plain.step(KernelState(x), g)[1]
    g.set_state(state)
    jump = AnnealedJump(theory, 0)
    q, centre, _ = jump.draw(8, g)
    assert torch.equal(q, info["jump_q"])
    for forward, sign in ((True, 1), (False, -1)):
        direction = torch.full((8,), forward)
        _, work, acc = jump.transport(x, sign * q, centre, direction, g)
        assert acc is None and torch.allclose(work, info["jump_delta_s"], rtol=0, atol=1e-10)


def test_whole_lattice_maps_invert_with_the_autograd_log_det():
    theory = U1((4, 4), beta=1.0)
    (f,), _ = random_maps(theory, 1)
    x = theory.random_field(2, torch.Generator().manual_seed(3))
    y, ld = f(x)
    back, ld_inv = f.inverse(y)
    assert principal_angle(back - x).abs().max() < 1e-10 and torch.allclose(ld_inv, -ld, atol=1e-10)
    assert principal_angle(y - x).abs().max() > 1e-2  # every link may move: most do
    jac = torch.autograd.functional.jacobian(lambda z: f(z.view(1, 2, 4, 4))[0].flatten(), x[0].flatten())
    assert abs(float(torch.linalg.slogdet(jac.detach()).logabsdet) - float(ld[0].detach())) < 1e-9


def _sample(theory, jump, path, rows, chains=8, m=1, thermalization=20, seed=1):
    sampler = AnnealedJumpChains(theory, HMC(theory, steps=3, fermions="exact") if theory.has_fermions
                                 else HMC(theory, steps=3), jump, chains, 1, m, thermalization=thermalization,
                                 seed=seed, progress=False)
    run_ensemble(sampler, theory=theory, path=path, n=rows * chains, config_text="", seed=seed, block=50,
                 progress=False, store_configs=False)
    return ensemble.open(path)


def test_annealed_jumps_are_exact_for_pure_u1(tmp_path):
    """L = 4, β = 3 against the torus values: plaquette, χ_Q, the 1×2 loop within 4σ."""
    theory = U1((4, 4), beta=3.0)
    with _sample(theory, AnnealedJump(theory, 2), tmp_path / "u.h5", 400, chains=16) as ens:
        exact = theory.exact()
        for name in ("plaquette", "chi_Q", "wilson_1x2"):
            r = gamma_method(ens.observable(name).T)
            assert abs(r.mean - exact[name]) < 4 * r.error and r.error < 0.06 * exact[name], (name, str(r))
        assert 0.08 < ens.mcmc["jump_acceptance"].mean() < 0.95 and np.abs(ens.mcmc["sector_change"]).sum() > 300
        w = gamma_method(np.exp(-ens.mcmc["jump_work"]).T)  # Crooks: ⟨e^{−W}⟩ = 1
        assert abs(w.mean - 1) < 4 * w.error


@pytest.mark.parametrize("with_maps", [False, True])
def test_schwinger_annealed_and_flow_jumps_match_the_exact_determinant_reference(tmp_path, with_maps):
    theory = Schwinger((4, 4), beta=1.0, kappa=0.25)
    maps = random_maps(theory, 2, 2)[0] if with_maps else None
    jump = AnnealedJump(theory, 2, TransportHMC(theory, steps=3), maps)
    with _sample(theory, jump, tmp_path / "s.h5", 30, chains=16) as ens:
        for name in ("plaquette", "chiral_condensate", "chi_Q"):
            r, ref = gamma_method(ens.observable(name).T), REFERENCE[name]
            assert abs(r.mean - ref["mean"]) < 4 * math.hypot(r.error, ref["error"]), (name, str(r), ref)
            assert r.error < 0.05 * abs(ref["mean"]) + 0.005, (name, str(r))
        assert ens.mcmc["jump_acceptance"].mean() > 0.3 and ens.mcmc["jump_update_acceptance"].mean() > 0.8
        assert 0.3 < ens.mcmc["jump_forward"].mean() < 0.7 and ens.extra["maps"] == with_maps


def _model(tmp_path, sampler, more=""):
    path = tmp_path / "m.toml"
    text = SCHWINGER + FLOW + (f'[sample]\nsampler = "{sampler}"\nchains = 2\nthermalization = 4\nblock = 3\n'
                               f'jump_steps = 2\njumps_per_step = 2\ndtype = "float64"\n{more}')
    path.write_text(text)
    if sampler == "flow-jump":
        cfg = parse_config(text, path)
        torch.save(model_file(random_maps(cfg.theory.build(), 2)[1].float(), cfg), path.with_suffix(".pt"))
    return path


@pytest.mark.parametrize("sampler", ["annealed-jump", "flow-jump"])
def test_the_cli_samples_and_resumes_bit_for_bit(tmp_path, sampler):
    from latticeflow.cli import main

    model = _model(tmp_path, sampler, "jump_md_steps = 2\n" if sampler == "flow-jump" else "")
    for out, n in (("a.h5", 12), ("b.h5", 6), ("b.h5", 12)):
        assert main(["sample", str(model), "-n", str(n), "--out", str(tmp_path / out), "--quiet"]) == 0
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert a.sampler == sampler and a.weights.column == "jump_work" and not a.reweighted
        assert np.array_equal(a.configs[:], b.configs[:]) and a.extra["jump_steps"] == 2
        for name in a.mcmc:
            assert np.array_equal(a.mcmc[name], b.mcmc[name]), name
        assert a.extra["transport_hmc"]["steps"] == (2 if sampler == "flow-jump" else a.extra["hmc"]["steps"])


@pytest.mark.parametrize("sampler,more,words", [
    ("annealed-jump", "jump_trajectory_length = 0.5\n", "sample.jump_trajectory_length: with jump_md_steps = 0"),
    ("annealed-jump", "jump_steps = -1\n", "sample.jump_steps: must be between 0"),
    ("annealed-jump", "patch = 1\n", "patch"),
    ("flow-jump", "maps = 3\n", "sample.maps: 3 maps for a protocol of 2 steps"),
    ("flow-jump", "jump_steps = 0\n", "sample.jump_steps: the maps of a flow jump act between its N >= 1"),
])
def test_bad_input_is_refused(tmp_path, capsys, sampler, more, words):
    model = _model(tmp_path, sampler)
    model.write_text(model.read_text().replace("jump_steps = 2\n", "") + more + ("jump_steps = 2\n" if
                     "jump_steps" not in more else ""))
    assert words in refuse(["sample", model, "-n", 4, "--out", tmp_path / "x.h5"], capsys)
    assert not (tmp_path / "x.h5").exists()


def test_other_theories_are_refused(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    words = refuse(["sample", root / "models" / "su2_L8_b2.toml", "--sampler", "annealed-jump", "-n", 8,
                    "--out", tmp_path / "x.h5"], capsys)
    assert "annealed-jump: instanton jumps move 2D U(1) gauge fields; the sun theory has none" in words


TRAIN = '[train]\nobjective = "jump-work"\nbatch_size = 4\nschedule = "constant"\nlog_every = 1\neval_every = 2\n' \
        'eval_batch = 6\ncheckpoint_every = 2\n'


def _train_config():
    """A flow-jump model trained on its jump work."""
    text = SCHWINGER + FLOW + TRAIN + '[sample]\nsampler = "flow-jump"\njump_steps = 2\nmaps = 2\nthermalization = 3\n'
    return parse_config(text)


def test_the_training_loss_is_the_kernels_forward_work_and_has_a_gradient(tmp_path, monkeypatch):
    from latticeflow.training import Trainer

    monkeypatch.setattr(Trainer, "plot", lambda self: None)
    trainer = Trainer(_train_config(), tmp_path, steps=1)
    objective = trainer.objective
    with torch.no_grad():  # the weights random: maps that matter
        for p in trainer.flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(4)
    x, state = objective.chain, g.get_state()
    work = objective.forward_work(x, g)
    work.mean().backward()
    assert sum(float(p.grad.abs().sum()) for p in trainer.flow.parameters() if p.grad is not None) > 0
    g.set_state(state)
    jump = objective.parts.jump
    q, centre, _ = jump.draw(4, g)
    with torch.no_grad():
        kernel_work = jump.transport(x, q, centre, torch.ones(4, dtype=torch.bool), g)[1]
    assert torch.allclose(work.detach(), kernel_work, rtol=0, atol=1e-9) and work.std() > 0


def test_training_on_the_jump_work_resumes_bit_for_bit(tmp_path, monkeypatch):
    from latticeflow import training

    monkeypatch.setattr(training.Trainer, "plot", lambda self: None)
    cfg = _train_config()
    straight = training.train(cfg, out=tmp_path / "a", steps=3, progress=False)
    training.train(cfg, out=tmp_path / "b", steps=2, progress=False)
    resumed = training.train(cfg, out=tmp_path / "b", steps=3, resume=True, progress=False)
    for p, q in zip(straight.flow.parameters(), resumed.flow.parameters()):
        assert torch.equal(p, q)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert drop(lines) == drop(again) and len(lines) == 3 and lines[-1]["acceptance"] is not None


def test_the_training_reports_the_samplers_acceptance():
    """A flow jump is accepted on its own work, min(1, e^{−W}), not by an independence chain
    over the works (which would accept a constant W always)."""
    from latticeflow.training.jump_work import JumpWorkObjective

    log_w = np.array([0.0, -1.0, 2.0, -3.0, -3.0])  # −W
    assert JumpWorkObjective.acceptance(log_w) == pytest.approx((1 + math.exp(-1) + 1 + 2 * math.exp(-3)) / 5)
    assert JumpWorkObjective.acceptance(np.full(8, -2.0)) == pytest.approx(math.exp(-2))


@pytest.mark.parametrize("objective, sampler", [("jump-work", "snf"), ("jump-work", "annealed-jump"),
                                                ("work", "flow-jump")])
def test_an_objective_for_another_sampler_is_refused(tmp_path, capsys, objective, sampler):
    model = tmp_path / "m.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 2.0\n' + FLOW
                     + f'[train]\nobjective = "{objective}"\nsteps = 2\n[sample]\nsampler = "{sampler}"\n')
    words = refuse(["train", model, "--out", tmp_path / "run"], capsys)
    assert f'train.objective: "{objective}" trains the maps of the' in words
    assert not (tmp_path / "run" / "model.pt").exists()
