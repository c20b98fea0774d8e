"""Training under ``torchrun`` with two gloo processes equals one process that draws the same
two sample streams and averages their losses: the logged loss of every step and the final
weights agree; rank 0 alone writes; a resume with another number of ranks continues."""

import json
import os
import shutil
import subprocess

import pytest
import torch

from latticeflow.config import parse_config
from latticeflow.flows import build_flow
from latticeflow.training import kl_loss, load_flow, train
from latticeflow.training.distributed import Group, rank_seed

from conftest import TINY_PHI4

MODEL = TINY_PHI4 + """
[train]
steps = 4
batch_size = 16
lr = 0.01
schedule = "constant"
grad_clip = 0
seed = 3
log_every = 1
eval_every = 1000
eval_batch = 64
checkpoint_every = 2
"""

TORCHRUN = shutil.which("torchrun")
pytestmark = pytest.mark.skipif(TORCHRUN is None or not torch.distributed.is_available(),
                                reason="torchrun / torch.distributed not available")


def torchrun(tmp_path, *args, ranks=2):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [TORCHRUN, "--standalone", f"--nproc_per_node={ranks}", "-m", "latticeflow", *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def reference(cfg, steps):
    """One process, two streams (those of ranks 0 and 1), the mean of their losses."""
    theory = cfg.theory.build()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        flow = build_flow(theory, cfg.flow).float()
    opt = torch.optim.Adam(flow.parameters(), lr=cfg.train.lr)
    gens = [torch.Generator().manual_seed(rank_seed(cfg.train.seed, r)) for r in range(2)]
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(kl_loss(flow, theory, cfg.train.batch_size // 2, g)[0] for g in gens) / 2
        loss.backward()
        norms.append(float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in flow.parameters()]))))
        opt.step()
        losses.append(float(loss.detach()))
    return flow, losses, norms


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """4 steps on two gloo ranks: ``(folder, run directory)``."""
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "m.toml").write_text(MODEL)
    torchrun(tmp, "train", "m.toml", "--out", "run")
    return tmp, tmp / "run"


def test_two_gloo_ranks_equal_one_process_with_the_same_total_batch(two_rank_run):
    tmp_path, run = two_rank_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # one writer: no duplicated lines
    cfg = parse_config(MODEL)
    flow, losses, norms = reference(cfg, 4)
    assert [r["loss"] for r in records] == pytest.approx(losses, rel=1e-5)
    # the gradient itself (Adam alone would hide a wrong scale): averaged, not summed
    assert [r["grad_norm"] for r in records] == pytest.approx(norms, rel=1e-4)
    trained = load_flow(run)
    for (name, a), b in zip(trained.state_dict().items(), flow.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["generators"]) == 2
    assert not torch.equal(ckpt["generators"][0], ckpt["generators"][1])  # independent streams
    # a single-process run with the whole batch from one stream is a different (valid) run
    single = train(cfg, tmp_path / "single", progress=False)
    assert single.metrics["loss"] != pytest.approx(records[-1]["loss"], rel=1e-6)


def test_resume_with_the_same_or_another_number_of_ranks(tmp_path, two_rank_run):
    (tmp_path / "m.toml").write_text(MODEL)
    torchrun(tmp_path, "train", "m.toml", "--out", "run", "--steps", "2")
    # the same two ranks: every stream continues, so 2 + 2 steps equal 4 uninterrupted ones
    shutil.copytree(tmp_path / "run", tmp_path / "again")
    (tmp_path / "again" / ".lock").unlink(missing_ok=True)
    torchrun(tmp_path, "train", "m.toml", "--out", "again", "--resume", "--steps", "4")
    resumed, whole = load_flow(tmp_path / "again"), load_flow(two_rank_run[1])
    for (name, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-7), name
    # resumed in one process: rank 0 continues its stream, the plan is extended to 4 steps
    result = train(parse_config(MODEL), tmp_path / "run", steps=4, resume=True, progress=False)
    assert result.step == 4
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["world_size"] == 1


def test_batch_that_does_not_split_is_refused(tmp_path):
    (tmp_path / "m.toml").write_text(MODEL.replace("batch_size = 16", "batch_size = 15"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "latticeflow", "train",
                           "m.toml", "--out", "run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    assert "latticeflow: error: train.batch_size: 15 does not split evenly over 2 ranks" in done.stderr
    assert "exitcode  : 2" in done.stderr  # each rank: one line and exit code 2 (torchrun adds its report)
    assert "latticeflow/training" not in done.stderr  # no traceback from our code


def test_one_rank_group_is_inert():
    g = Group()
    t = torch.ones(3)
    assert not g.active and g.is_main and g.all_mean(t) is t and g.gather(t) == [t]
    assert g.any(True) and not g.any(False) and g.broadcast_object(5) == 5
    assert rank_seed(7, 0) == 7 and len({rank_seed(7, r) for r in range(4)}) == 4


HMC_STUDY = """
[theory]
name = "u1"
L = 4
beta = 1.0
[hmc]
chains = 4
thermalization = 20
steps = 4
block = 25
seed = 5
"""


def test_hmc_on_two_ranks_is_one_joined_ensemble(tmp_path):
    """Each rank runs half the chains with its own seed into its own file; rank 0 joins them
    (HDF5 virtual datasets) into the file --out names, which analyze reads as one ensemble,
    the next torchrun run continues and a single process refuses to continue."""
    import h5py
    import numpy as np

    from latticeflow import pipeline
    from latticeflow.cli import main

    (tmp_path / "m.toml").write_text(HMC_STUDY)
    torchrun(tmp_path, "hmc", "m.toml", "-n", "200", "--out", "h.h5", "--quiet")
    with h5py.File(tmp_path / "h.h5") as joined, h5py.File(tmp_path / "h.rank1.h5") as part:
        assert joined["observables/plaquette"].is_virtual
        assert joined.attrs["n_chains"] == 4 and joined.attrs["n_rows"] == 50
        assert np.array_equal(joined["observables/plaquette"][:, 2:], part["observables/plaquette"][:50])
        assert part.attrs["n_chains"] == 2 and f"seed = {rank_seed(5, 1)}" in part.attrs["config"]
    # rank 1's part is exactly the one-process run with its seed and its share of the chains
    alone = pipeline.hmc(tmp_path / "m.toml", 100, out=tmp_path / "alone.h5", chains=2,
                         seed=rank_seed(5, 1), progress=False, configs=True)
    with h5py.File(alone["path"]) as a, h5py.File(tmp_path / "h.rank1.h5") as b:
        assert np.array_equal(a["observables/plaquette"][:], b["observables/plaquette"][:])
    summary = pipeline.analyze(tmp_path / "h.h5")
    plaq = summary["observables"]["plaquette"]
    assert summary["n"] == 200 and abs(plaq["mean"] - summary["exact"]["plaquette"]) < 4 * plaq["error"]
    # continued on two ranks: both parts grow and are joined again
    torchrun(tmp_path, "hmc", "m.toml", "-n", "400", "--out", "h.h5", "--quiet")
    assert pipeline.analyze(tmp_path / "h.h5")["n"] == 400
    # one process cannot continue a joined file: one line, exit 2, the file untouched
    before = (tmp_path / "h.h5").read_bytes()
    assert main(["hmc", str(tmp_path / "m.toml"), "-n", "800", "--out", str(tmp_path / "h.h5"), "--quiet"]) == 2
    assert (tmp_path / "h.h5").read_bytes() == before


def test_chains_that_do_not_split_are_refused(tmp_path):
    (tmp_path / "m.toml").write_text(HMC_STUDY)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "latticeflow", "hmc",
                           "m.toml", "-n", "10", "--chains", "3", "--out", "h.h5"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "latticeflow: error: hmc.chains: 3 chains do not split evenly over 2 ranks" in done.stderr
    assert not list(tmp_path.glob("h*.h5"))


@pytest.fixture
def two_parts(tmp_path):
    """Two one-process HMC ensembles laid out as the parts of ``j.h5`` (2 chains each)."""
    from latticeflow import pipeline
    from latticeflow.ensemble.join import part_path

    (tmp_path / "m.toml").write_text(HMC_STUDY)
    for r in range(2):
        pipeline.hmc(tmp_path / "m.toml", 40, out=part_path(tmp_path / "j.h5", r), chains=2,
                     seed=rank_seed(5, r), progress=False, configs=False)
    return tmp_path, [part_path(tmp_path / "j.h5", r) for r in range(2)]


def test_joined_file_refuses_missing_or_short_parts(two_parts):
    """A joined file whose part is gone, replaced or shorter is refused on opening (one
    line, exit 2 from analyze) instead of reading as zeros; the float datasets' fill value
    is NaN besides, and a stale temporary file of a killed join is cleaned up."""
    import h5py
    import numpy as np

    from latticeflow import ensemble
    from latticeflow.cli import main
    from latticeflow.ensemble.join import join
    from latticeflow.errors import EnsembleError

    tmp, parts = two_parts
    (tmp / ".j.h5.joining999").write_bytes(b"half a join")
    join(tmp / "j.h5", parts, HMC_STUDY, 5)
    assert not (tmp / ".j.h5.joining999").exists()
    with ensemble.open(tmp / "j.h5") as ens:
        assert ens.n_chains == 4 and ens.n_rows == 20
        parts[1].rename(tmp / "away.h5")  # gone while open: NaN, which analyze refuses
        assert np.isnan(ens.observable("plaquette")[:, 2:]).all()
    with pytest.raises(EnsembleError, match="joins the per-rank file j.rank1.h5, which cannot be read"):
        ensemble.open(tmp / "j.h5")
    assert main(["analyze", str(tmp / "j.h5")]) == 2
    # another ensemble in its place, as long or shorter: refused, not read as this one
    from latticeflow import pipeline
    pipeline.hmc(tmp / "m.toml", 40, out=parts[1], chains=2, progress=False, configs=False)
    with pytest.raises(EnsembleError, match="j.rank1.h5, which has been replaced by another ensemble"):
        ensemble.open(tmp / "j.h5")
    (tmp / "away.h5").rename(parts[1])
    ensemble.open(tmp / "j.h5").close()
    with h5py.File(parts[1], "r+") as f:  # as if a part lost rows (the stamp still matches)
        f.attrs["n_rows"] = 10
    with pytest.raises(EnsembleError, match="joins 20 rows of 2 chains from j.rank1.h5, which holds 10 rows"):
        ensemble.open(tmp / "j.h5")


def test_complex_configurations_join(tmp_path):
    """SU(2) fields are complex: their virtual dataset (fill value NaN + NaN i) joins too."""
    import numpy as np

    from latticeflow import ensemble, pipeline
    from latticeflow.ensemble.join import join, part_path

    (tmp_path / "m.toml").write_text('[theory]\nname = "sun"\nN = 2\nL = 4\nbeta = 2.0\n'
                                     '[hmc]\nchains = 2\nthermalization = 2\nsteps = 4\nblock = 5\n')
    parts = [part_path(tmp_path / "j.h5", r) for r in range(2)]
    for r, part in enumerate(parts):
        pipeline.hmc(tmp_path / "m.toml", 10, out=part, seed=r, progress=False, configs=True)
    join(tmp_path / "j.h5", parts, "", 0)
    with ensemble.open(tmp_path / "j.h5") as ens, ensemble.open(parts[1]) as one:
        assert ens.configs.dtype.kind == "c" and ens.n_chains == 4
        assert np.array_equal(ens.configs[:, 2:], one.configs[:])


def test_a_run_on_ranks_never_replaces_another_ensemble(two_parts, monkeypatch):
    """An existing one-process --out, or the join of another number of ranks, is refused
    by every rank before it writes anything or joins a process group; join() refuses it too."""
    from latticeflow import parallel, pipeline
    from latticeflow.config import load_config
    from latticeflow.ensemble.join import join
    from latticeflow.errors import EnsembleError

    tmp, parts = two_parts
    single = pipeline.hmc(tmp / "m.toml", 40, out=tmp / "single.h5", progress=False)["path"]
    before = (tmp / "single.h5").read_bytes()
    with pytest.raises(EnsembleError, match="single.h5 is a one-process ensemble, which a run on 2 ranks"):
        join(tmp / "single.h5", parts, HMC_STUDY, 5)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(parallel, "current", lambda device: pytest.fail("joined a process group"))
    cfg = load_config(tmp / "m.toml")
    with pytest.raises(EnsembleError, match="a run on 2 ranks would replace"):
        with parallel.split_over_ranks(cfg, "hmc", single, 40, torch.device("cpu")):
            pass
    assert (tmp / "single.h5").read_bytes() == before and not list(tmp.glob("single.rank*"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    join(tmp / "j.h5", parts, HMC_STUDY, 5)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(EnsembleError, match="joins the files of 2 ranks, this run has 4"):
        with parallel.split_over_ranks(cfg, "hmc", tmp / "j.h5", 40, torch.device("cpu")):
            pass


def test_process_group_is_closed_when_a_rank_fails(tmp_path, monkeypatch):
    from latticeflow import ensemble, parallel, pipeline

    class Recorder(Group):
        closed = False

        def close(self):
            Recorder.closed = True

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(parallel, "current", lambda device: Recorder(0, 2))
    monkeypatch.setattr(ensemble, "check_fits", lambda *a: (_ for _ in ()).throw(RuntimeError("disk")))
    (tmp_path / "m.toml").write_text(HMC_STUDY)
    with pytest.raises(RuntimeError, match="disk"):
        pipeline.hmc(tmp_path / "m.toml", 40, out=tmp_path / "h.h5", progress=False)
    assert Recorder.closed


def test_explicit_gpu_index_is_refused_under_torchrun(monkeypatch):
    from latticeflow.errors import ConfigError
    from latticeflow.training.distributed import rank_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="'cuda:1' under torchrun would put all 2 ranks on one GPU"):
        rank_device("cuda:1", "hmc.device")
    assert rank_device("cpu") == torch.device("cpu")


def _pids_of_rank(rank: int, launcher: int) -> list[int]:
    """The processes that the torchrun process ``launcher`` started as ``rank`` (from their
    environment and their parent: tests on other workers run torchrun too)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = open(f"/proc/{name}/environ", "rb").read().split(b"\0")
            parent = int(open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in environ and parent == launcher:
            found.append(int(name))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's process in /proc")
def test_a_killed_rank_leaves_one_line_on_the_other_and_the_run_resumes(tmp_path):
    """kill -9 of rank 1 in mid-training: rank 0 says in one line that it lost its peer (or,
    when torchrun's SIGTERM comes first, that it was interrupted) — never a gloo traceback or
    an internal error — and the checkpoint it kept resumes in one process."""
    import signal
    import time

    (tmp_path / "m.toml").write_text(MODEL.replace("steps = 4", "steps = 100000"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "latticeflow", "train",
                            "m.toml", "--out", "run", "--quiet"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        victims = _pids_of_rank(1, run.pid)
        assert victims, "rank 1 not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    ours = [line for line in stderr.splitlines() if line.startswith("latticeflow:")]
    assert len(ours) == 1, stderr[-3000:]
    assert ("rank 0: lost contact with another rank" in ours[0] and "--out run --resume" in ours[0]
            or "interrupted" in ours[0]), ours
    assert "internal error" not in stderr and "latticeflow/training" not in stderr, stderr[-3000:]
    step = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"]
    done = subprocess.run([shutil.which("latticeflow") or "latticeflow", "train", "m.toml", "--out", "run",
                           "--resume", "--steps", str(step + 2), "--quiet"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_failed_collective_is_one_line_naming_the_rank_and_the_resume(monkeypatch):
    from latticeflow.training.distributed import LostPeer

    def closed(*args, **kwargs):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by "
                           "peer [127.0.0.1]:25993. This is typically caused by a remote worker")

    for name in ("all_reduce", "all_gather", "barrier", "broadcast", "broadcast_object_list"):
        monkeypatch.setattr(torch.distributed, name, closed)
    group = Group(1, 2)
    group.resume_hint = "resume with --out run --resume"
    calls = [lambda: group.all_mean(torch.ones(2)), lambda: group.any(True),
             lambda: group.gather(torch.ones(2)), group.barrier,
             lambda: group.broadcast_parameters(torch.nn.Linear(2, 2)), lambda: group.broadcast_object(1),
             lambda: group.average_gradients([torch.nn.Parameter(torch.ones(2))])]
    for call in calls:
        with pytest.raises(LostPeer) as info:
            call()
        assert str(info.value) == ("rank 1: lost contact with another rank (Connection closed by peer "
                                   "[127.0.0.1]:25993); resume with --out run --resume")
