"""Where the tensors live: ``device = "cpu" | "cuda" | "cuda:N" | "auto"``.

Conventions (every trainer and sampler follows them):

- **Random numbers are drawn on the CPU**, from CPU ``torch.Generator`` objects, and moved
  to the device.  A seed therefore gives the same prior samples, momenta and accept/reject
  draws on every device, and the generator states stored in checkpoints and ensembles
  resume on any device.  (Moving a batch of random numbers costs far less than the flow
  or the molecular dynamics that use them.)
- Fields, actions, forces and the flow are computed on the device.  What is written to a
  file — observables, log weights, fields, resume states — comes back to the host as numpy
  (:func:`to_numpy`).
- Weights and checkpoints are read with ``map_location="cpu"`` and then moved, so a file
  written on a GPU loads on a CPU-only machine and the other way round.
- Results agree across devices to rounding, not bit for bit (different kernels); a resume
  is bit-exact on the device it continues on, up to nondeterministic GPU kernels.

Example:
    >>> resolve("cpu")
    device(type='cpu')
    >>> resolve("auto").type in ("cpu", "cuda")
    True
"""

from __future__ import annotations

import re

import torch

from .errors import ConfigError
from .schema import Check

__all__ = ["DEVICE_CHECK", "DEVICE_DOC", "resolve", "to_numpy", "cuda_problem"]

#: the values a ``device`` key or ``--device`` flag accepts
DEVICE_CHECK = Check(lambda v: v in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d+", v) is not None,
                     "one of 'cpu', 'cuda', 'cuda:N', 'auto'")
DEVICE_DOC = ("where the flow and the fields live: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA where "
              "available); random numbers are always drawn on the CPU, so a seed gives the same "
              "draws on every device")


def cuda_problem(setting: str) -> str | None:
    """Why ``setting`` (``cuda`` or ``cuda:N``) cannot be used here, or None."""
    if not torch.cuda.is_available():
        how = "has no CUDA" if torch.backends.cuda.is_built() else "was built without CUDA"
        return f"no CUDA device is available (torch {torch.__version__} {how} here)"
    index = int(setting.split(":")[1]) if ":" in setting else 0
    if index >= torch.cuda.device_count():
        return f"there is no CUDA device {index} (this machine has {torch.cuda.device_count()})"
    return None


def resolve(setting: str = "cpu", what: str = "device") -> torch.device:
    """The ``torch.device`` a ``device`` setting names; ``auto`` is CUDA where available.

    Raises :class:`ConfigError` (one line, naming ``what``) for an unknown setting or a CUDA
    device this machine does not have.
    """
    if isinstance(setting, torch.device):
        setting = str(setting)
    problem = DEVICE_CHECK.problem(setting) if isinstance(setting, str) else "must be a string"
    if problem:
        raise ConfigError(f"{what}: {problem} (got {setting!r})")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda"):
        problem = cuda_problem(setting)
        if problem:
            raise ConfigError(f"{what}: {setting!r} was asked for, but {problem}; use \"cpu\" or \"auto\"")
    return torch.device(setting)


def to_numpy(t: torch.Tensor):
    """A tensor on any device as a numpy array on the host (no copy for CPU tensors)."""
    return t.detach().cpu().numpy()
