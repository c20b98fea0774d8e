"""Devices: ``device = "cpu" | "cuda" | "cuda:N" | "auto"`` and ``--device``.

On a CPU-only machine the CUDA variants are skipped (with the reason), and the device
plumbing is checked on PyTorch's ``meta`` device instead: a tensor created on the CPU
where the fields live elsewhere fails there exactly as it would on a GPU ("Tensor on
device cpu is not on the expected device meta").
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latticeflow import pipeline
from latticeflow.cli import main
from latticeflow.config import parse_config
from latticeflow.devices import resolve
from latticeflow.errors import ConfigError
from latticeflow.flows import build_flow
from latticeflow.mcmc.hmc import HMC
from latticeflow.theories import U1, Phi4, Schwinger, SUN

from conftest import TINY_PHI4

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
no_cuda = pytest.mark.skipif(CUDA, reason="this machine has CUDA")

TINY_MODEL = TINY_PHI4 + """
[train]
steps = 3
batch_size = 16
eval_every = 3
eval_batch = 32
checkpoint_every = 3
"""


def test_resolve():
    assert resolve("cpu") == torch.device("cpu")
    assert resolve("auto") == torch.device("cuda" if CUDA else "cpu")
    for bad in ("gpu", "cuda:x", "", "CPU"):
        with pytest.raises(ConfigError, match="one of 'cpu', 'cuda', 'cuda:N', 'auto'"):
            resolve(bad, "--device")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_is_one_clear_error(name):
    with pytest.raises(ConfigError, match=rf"^--device: '{name}' was asked for, but no CUDA device"):
        resolve(name, "--device")


def _with(section: str, line: str) -> str:
    if f"[{section}]" in TINY_MODEL:
        return TINY_MODEL.replace(f"[{section}]", f"[{section}]\n{line}")
    return TINY_MODEL + f"\n[{section}]\n{line}\n"


def test_config_key_in_every_section():
    cfg = parse_config(TINY_MODEL)
    assert (cfg.train.device, cfg.sample.device, cfg.hmc.device) == ("cpu", "cpu", "cpu")
    assert cfg.toml.count('device = "cpu"') == 3
    for section in ("train", "sample", "hmc"):
        with pytest.raises(ConfigError, match=rf"{section}.device: must be one of"):
            parse_config(_with(section, 'device = "gpu"'))
        cuda = parse_config(_with(section, 'device = "cuda:1"'))
        assert getattr(cuda, section).device == "cuda:1"  # a name; availability at run time
    assert pipeline.on_device(cfg, "auto").sample.device == "auto"


@no_cuda
@pytest.mark.parametrize("command", ["train", "sample", "hmc", "run"])
def test_cli_refuses_cuda_here_before_writing(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    model = ROOT / "models" / "phi4_tutorial.toml"
    args = {"train": ["train", str(model), "--out", "r"],
            "sample": ["sample", str(model), "-n", "8", "--out", "s.h5"],
            "hmc": ["hmc", str(model), "-n", "8", "--out", "h.h5"],
            "run": ["run", str(model), "-n", "10", "--out", "r"]}[command]
    assert main([*args, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device: 'cuda' was asked for" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_device_cpu_is_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(TINY_MODEL)
    assert main(["hmc", "m.toml", "-n", "16", "--out", "h.h5", "--quiet", "--device", "cpu",
                 "--chains", "2"]) == 0
    import h5py

    with h5py.File(tmp_path / "h.h5") as f:
        assert 'device = "cpu"' in f.attrs["config"]


# --- the device plumbing, checked on the meta device -------------------------------------
THEORIES = [Phi4((4, 4), m2=-4.0, lam=8.0), U1((4, 4), beta=2.0), SUN((4, 4), N=2, beta=2.0),
            SUN((4, 4), N=3, beta=2.0), Schwinger((4, 4), beta=2.0, kappa=0.2)]


@pytest.mark.parametrize("theory", THEORIES, ids=lambda t: t.name + str(getattr(t, "N", "")))
def test_theories_compute_on_the_fields_device(theory):
    x = theory.random_field(2, torch.Generator().manual_seed(0)).to("meta")
    assert theory.action(x).device.type == "meta"
    assert all(v.device.type == "meta" for v in theory.observables(x).values())
    exact_determinant = {"fermions": "exact"} if theory.has_fermions else {}  # only such theories have the key
    hmc = HMC(theory, steps=2, force="analytic", **exact_determinant)
    x1, accepted, delta_h = hmc.trajectory(x, torch.Generator().manual_seed(0))
    assert x1.device.type == accepted.device.type == delta_h.device.type == "meta"


def test_phi4_flow_samples_on_its_device_with_cpu_generators():
    cfg = parse_config(TINY_MODEL)
    flow = build_flow(cfg.theory.build(), cfg.flow).to("meta")
    x, log_q = flow.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.device.type == log_q.device.type == "meta"
    assert flow.log_prob(x).device.type == "meta"


# --- CUDA (where a GPU exists) ------------------------------------------------------------
@needs_cuda
def test_cuda_training_resumes_and_loads_on_the_cpu(tmp_path):
    from latticeflow.training import load_flow

    cfg = parse_config(TINY_MODEL.replace("[train]", '[train]\ndevice = "cuda"'))
    result = pipeline.train(cfg, out=tmp_path / "run", progress=False)
    assert next(result.flow.parameters()).device.type == "cuda"
    assert result.metrics["loss"] is not None and math.isfinite(result.metrics["loss"])
    flow = load_flow(tmp_path / "run", cfg)  # written on the GPU, read on the CPU
    assert next(flow.parameters()).device.type == "cpu"
    resumed = pipeline.train(cfg, out=tmp_path / "run", steps=6, resume=True, progress=False,
                             device="cpu")
    assert resumed.step == 6


@needs_cuda
def test_cuda_hmc_follows_the_cpu_draws():
    theory = U1((8, 8), beta=2.0)
    hmc = HMC(theory, steps=8)
    x0 = theory.random_field(4, torch.Generator().manual_seed(1))
    out = {}
    for device in ("cpu", "cuda"):
        g = torch.Generator().manual_seed(2)
        x = x0.to(device)
        for _ in range(3):
            x, _, _ = hmc.trajectory(x, g)
        out[device] = x.cpu()
    assert torch.allclose(out["cpu"], out["cuda"], atol=1e-8)


@needs_cuda
@pytest.mark.parametrize("sampler", ["flow-mcmc", "mixed", "flow-hmc"])
def test_cuda_samplers_are_exact(tmp_path, sampler):
    model = ROOT / "models" / "u1_L8_b2.toml"
    out = tmp_path / f"{sampler}.h5"
    pipeline.sample(model, 2000 if sampler != "flow-hmc" else 200, out=out, sampler=sampler,
                    device="cuda", progress=False)
    summary = pipeline.analyze(out)
    plaq = summary["observables"]["plaquette"]
    assert abs(plaq["mean"] - summary["exact"]["plaquette"]) < 4 * plaq["error"]
    assert np.isfinite(plaq["error"])
