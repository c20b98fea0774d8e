"""One way to create files and directories: atomically, and named so that runs never collide.

- :func:`atomic_write_text`, :func:`atomic_save` (torch objects): write under a temporary
  name in the same directory, then ``os.replace`` — a reader, or a run killed half-way,
  sees the old file or the new one, never a half-written one.
- :func:`new_run_dir`: ``runs/<name>-<timestamp>[-k]/``, never an existing directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["atomic_write_text", "atomic_save", "new_run_dir", "RUNS"]

#: where run directories go unless ``--out`` names one
RUNS = Path("runs")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` so that it is either the old file or the whole new one."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj, path) -> None:
    """``torch.save`` with the same guarantee as :func:`atomic_write_text`."""
    import torch

    path = Path(path)
    tmp = _temporary(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def new_run_dir(name: str, base: Path = RUNS) -> Path:
    """A fresh directory path ``base/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``… if taken);
    not created."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, k = Path(base) / f"{name}-{stamp}", 1
    while run_dir.exists():
        k += 1
        run_dir = Path(base) / f"{name}-{stamp}-{k}"
    return run_dir
