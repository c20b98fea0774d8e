"""The files of a training run directory, the model-file format, and loading a flow.

A run directory (``runs/<config name>-<timestamp>/`` or ``--out``) holds

- ``config.toml``: the model file as written (the input, echoed);
- ``effective_config.toml``: the effective configuration (defaults filled in, overrides
  applied; ``Config.toml``), which is what readers use when it exists;
- ``metrics.jsonl``: one JSON object per logged step; ``training.png``: the curves;
- ``checkpoint.pt``: everything a resume needs, written atomically;
- ``model.pt`` (at the end): the model file — weights + the physics and architecture they
  belong to; load it with :func:`load_flow`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..config import Config, load_config, parse_config
from ..errors import LatticeflowError
from ..config.overrides import as_path
from ..files import atomic_write_text, check_input, input_problem, new_run_dir
from ..flows import build_flow
from ..flows.registry import ARCHITECTURES

__all__ = ["CHECKPOINT", "MODEL", "METRICS", "PLOT", "CONFIG", "EFFECTIVE_CONFIG", "load_flow",
           "resolve_model", "load_model", "check_weights", "require_flow",
           "model_file", "mismatch", "read_metrics", "last_metrics", "truncate_metrics",
           "prepare_run_dir", "write_configs", "run_config", "init_weights", "record_init", "inherited_seconds", "INIT",
           "INTERRUPTED"]

CHECKPOINT, MODEL, METRICS, PLOT = "checkpoint.pt", "model.pt", "metrics.jsonl", "training.png"
CONFIG, EFFECTIVE_CONFIG = "config.toml", "effective_config.toml"
INIT = "init.json"
#: beside a model.pt written by an interrupted training (removed when the training completes)
INTERRUPTED = "interrupted.json"


def run_config(run_dir: Path) -> Config:
    """The configuration of a run directory: ``effective_config.toml`` where it exists
    (runs since it was added), else ``config.toml``; files written by latticeflow itself are
    read with ``legacy=True`` (see :func:`latticeflow.config.parse_config`)."""
    run_dir = Path(run_dir)
    for name in (EFFECTIVE_CONFIG, CONFIG):
        if (run_dir / name).is_file():
            cfg = load_config(run_dir / name, legacy=True)
            # the run is named after the model file it came from, not after "config"
            return Config(**{**cfg.__dict__, "path": run_dir / CONFIG})
    raise LatticeflowError(f"{run_dir}: not a training run directory (no {CONFIG})")


def write_configs(run_dir: Path, cfg: Config, step: int = 0) -> None:
    """Echo the model file and write the effective config; an earlier different pair (a
    resume with changed settings) is kept as ``config-until-step<N>.toml``."""
    run_dir = Path(run_dir)
    for name, text in ((CONFIG, cfg.text), (EFFECTIVE_CONFIG, cfg.toml)):
        path = run_dir / name
        if path.is_file() and path.read_text() != text:
            path.replace(run_dir / f"{Path(name).stem}-until-step{step}.toml")
        atomic_write_text(path, text)


def model_file(flow, cfg: Config, training_seconds: float | None = None) -> dict:
    """The weights file's record; ``training_seconds``: the wall time the training took (what
    ``latticeflow run`` counts beside the generation for shipped weights)."""
    seconds = {} if training_seconds is None else {"training_seconds": float(training_seconds)}
    return {"format": "latticeflow-model", "version": 1, "latticeflow_version": __version__,
            "theory": cfg.theory.build().params(), "flow": asdict(cfg.flow), "config": cfg.toml,
            "state_dict": {k: v.detach().cpu() for k, v in flow.state_dict().items()}} | seconds


def training_seconds(weights) -> float | None:
    """The training time a weights file records (:func:`model_file`; a file or its loaded
    record), or None where it records none (older files, checkpoints) or cannot be read."""
    try:
        state = weights if isinstance(weights, dict) else torch.load(weights, weights_only=True, map_location="cpu")
        seconds = float(state["training_seconds"])
    except Exception:  # noqa: BLE001 - an unreadable record is an unknown time, never an error here
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def mismatch(old: Config, new: Config) -> list[str]:
    out = []
    for section in ("theory", "flow"):
        a, b = _section_values(getattr(old, section)), _section_values(getattr(new, section))
        out += [f"{section}.{k}: {_shown(a, k)} in the checkpoint, {_shown(b, k)} now"
                for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING)]
    return sorted(out)


_MISSING = object()  # a key one of two architectures has and the other has not


def _shown(values: dict, key: str) -> str:
    return repr(values[key]) if key in values else "no such key"


def _section_values(section) -> dict:
    values = asdict(section)
    values |= dict(values.pop("params", ())) | dict(values.pop("coupling_values", ()))
    return values


def read_metrics(path: Path) -> list[dict]:
    """The records of ``metrics.jsonl``; a line that is not a whole record (torn by a kill
    or a full disk, or damaged) is skipped, and dropped on the next resume."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def last_metrics(path: Path) -> dict:
    records = read_metrics(path)
    return records[-1] if records else {}


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint (a killed run), so a resume never duplicates."""
    records = read_metrics(path)
    kept = [r for r in records if r["step"] <= step]
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()] if path.is_file() else []
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def prepare_run_dir(cfg: Config, out, resume: bool) -> Path:
    """The training run directory: ``out``, or a new one under ``runs/``; refuses to start
    over a run (without ``resume``) or to resume where there is no checkpoint."""
    if out is None:
        if resume:
            raise LatticeflowError("resume: give the run directory to continue (--out DIR)")
        run_dir = new_run_dir(cfg.name)
    else:
        run_dir = Path(out)
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise LatticeflowError(f"{run_dir}: no {CHECKPOINT} here to resume from")
    elif (run_dir / CHECKPOINT).exists():
        raise LatticeflowError(f"{run_dir}: already holds a training run; resume it (--resume) "
                               "or choose another output directory")
    elif run_dir.exists() and not run_dir.is_dir():
        raise LatticeflowError(f"{run_dir}: exists and is not a directory")
    return run_dir


def weights_file(source: Path) -> Path:
    """The weights a source names: a run directory's ``model.pt`` (else its
    ``checkpoint.pt``), or the file itself."""
    if source.is_dir():
        return source / MODEL if (source / MODEL).is_file() else source / CHECKPOINT
    return source


def load_flow(source, config=None):
    """A trained flow (float32, eval mode) from a run directory or a ``.pt`` weights file.

    Arguments:
        source: a run directory (uses ``model.pt``, else the ``checkpoint.pt`` weights) or a
            weights file such as ``models/phi4_tutorial.pt``.
        config: the model's :class:`Config` or TOML path; default: the run directory's
            (:func:`run_config`), or the TOML beside a weights file with the same stem.

    The weights must match the config's architecture and theory; the lattice size and the
    couplings may differ (a flow trained on L = 8 runs on L = 12; the Metropolis step or the
    reweighting keeps sampling exact).
    """
    source = Path(source)
    weights = weights_file(source)
    if not weights.is_file():
        if os.path.lexists(weights):  # a FIFO, a directory, a symbolic link loop: say which
            check_input(weights, "weights file")
        raise LatticeflowError(f"{source}: no {MODEL} or {CHECKPOINT} to load")
    if config is None and source.is_dir():
        config = run_config(source)
    elif config is None:
        config = source.with_suffix(".toml")
        if not config.is_file():
            raise LatticeflowError(f"{weights}: no config given and no {config.name} beside it")
    cfg = config if isinstance(config, Config) else load_config(config)
    if cfg.flow is None:
        raise LatticeflowError(f"{cfg.path or 'the model file'}: no [flow] table to build the flow from")
    try:
        state = torch.load(weights, weights_only=True, map_location="cpu")  # written on any device
        state_dict = state["state_dict"] if "state_dict" in state else state["model"]
        saved_config = parse_config(state["config"], legacy=True) if "config" in state else None
    except LatticeflowError as exc:
        raise LatticeflowError(f"{weights}: its stored config does not validate ({exc})") from None
    except Exception:
        raise LatticeflowError(f"{weights}: not a readable latticeflow model or checkpoint") from None
    if saved_config is not None:
        wrong = [p for p in mismatch(saved_config, cfg) if p.startswith("flow.") or p.startswith("theory.name")]
        if _same_flows(saved_config.theory.name, cfg.theory.name):  # e.g. u1 weights start a schwinger flow
            wrong = [p for p in wrong if not p.startswith("theory.name")]
        if wrong:
            raise LatticeflowError(f"{weights}: weights of a different architecture: " + "; ".join(wrong))
    flow = build_flow(cfg.theory.build(), cfg.flow).float()
    try:
        flow.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        # torch's message starts "Error(s) in loading state_dict for Flow:"; the next line says which
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
        raise LatticeflowError(f"{weights}: weights do not fit the architecture of the config "
                               f"(another lattice dimension or [flow] table? {detail[:300]})") from None
    if not all(bool(torch.isfinite(p).all()) for p in flow.parameters()):
        raise LatticeflowError(f"{weights}: holds non-finite weights (a diverged training run)")
    return flow.eval()


def _same_flows(a: str, b: str) -> bool:
    """Whether theories ``a`` and ``b`` build their flows with one architecture (the same
    fields and maps: U(1) links with or without fermions)."""
    return a in ARCHITECTURES and b in ARCHITECTURES and ARCHITECTURES[a].build is ARCHITECTURES[b].build


def init_weights(cfg: Config) -> tuple[dict, dict] | None:
    """``(state_dict, record)`` of the weights ``[train] init`` names (None without it),
    loaded like any model file (same architecture; L and couplings may differ); the record
    (source, SHA-256, theory) is what :func:`record_init` writes into the run directory.
    Called before the run directory is touched, so bad weights leave nothing behind.

    A relative path is looked up from the current directory, then beside the model file.
    """
    import hashlib

    name = cfg.train.init
    if name is None:
        return None
    candidates = [Path(name)]
    if not Path(name).is_absolute() and cfg.path is not None:
        candidates.append(Path(cfg.path).parent / name)
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise LatticeflowError(f"train.init: no weights file or run directory {name!r}")
    try:
        flow = load_flow(found, cfg)
    except LatticeflowError as exc:
        raise LatticeflowError(f"train.init: {exc}") from None
    weights = weights_file(found)  # load_flow has read it: it exists and loads
    state = torch.load(weights, weights_only=True, map_location="cpu")
    record = {"init": str(name), "resolved": str(found.resolve()),
              "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
              "theory": state.get("theory"),  # none in a checkpoint
              "training_seconds": training_seconds(state)}  # None: unknown
    return flow.state_dict(), record


def record_init(run_dir: Path, record: dict) -> None:
    """``run_dir/init.json``: where the run's starting weights came from."""
    atomic_write_text(Path(run_dir) / INIT, json.dumps(record, indent=2) + "\n")


def inherited_seconds(run_dir: Path) -> float | None:
    """The training time of the weights a run started from (``[train] init``, as
    ``run_dir/init.json`` records it): 0 for a run from scratch, None where unknown (weights
    that record no time), so that the run's own weights record the whole cost or none."""
    path = Path(run_dir) / INIT
    if not path.is_file():
        return 0.0
    try:
        seconds = json.loads(path.read_text()).get("training_seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return None if seconds is None else float(seconds)


def resolve_model(source, weights_needed: bool = True) -> tuple[Config, Path]:
    """``(config, weights)`` of a training run directory or of a model TOML whose weights are
    shipped beside it (same stem, ``.pt``; ``weights_needed=False``: a classical sampler's
    model, whose weights may be absent)."""
    source = as_path(source, "sample")
    if source.is_dir():
        return run_config(source), source
    if source.suffix != ".toml":
        raise LatticeflowError(f"{source}: expected a run directory or a model .toml file")
    cfg = load_config(source)
    weights = source.with_suffix(".pt")
    if weights_needed and cfg.flow is not None:
        check_weights(source, weights)
    return cfg, weights


def check_weights(source: Path, weights: Path) -> None:
    """Refuse shipped weights that are missing (saying how to train them) or not a file."""
    problem = input_problem(weights, "weights file")
    if problem == "no such file":
        raise LatticeflowError(f"{source}: no shipped weights {weights.name} beside it "
                               f"(train them: latticeflow train {source})")
    if problem:
        raise LatticeflowError(f"{weights}: {problem}")


def require_flow(cfg: Config, what: str = "sample") -> None:
    """Refuse a model without a ``[flow]`` table where a flow is needed."""
    if cfg.flow is None:
        raise LatticeflowError(f"{cfg.path or 'the model file'}: no [flow] table, so there is no "
                               f"flow to {what}")


def load_model(source):
    """``(config, flow)`` from a run directory or a model TOML with weights beside it."""
    cfg, weights = resolve_model(source)
    require_flow(cfg)
    return cfg, load_flow(weights, cfg)


# --- commands -----------------------------------------------------------------------------
