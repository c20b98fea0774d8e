"""Before a run writes an ensemble: whether it continues a file, and whether the file fits."""

from __future__ import annotations

from pathlib import Path

from .. import resources
from ..files import check_writable
from .reader import open as open_ensemble
from .writer import holds_no_rows

__all__ = ["continues", "check_fits"]


def continues(out) -> bool:
    """Whether a run writing ``out`` continues it: it exists and holds committed rows (a file
    stopped before its first block starts afresh, see :func:`holds_no_rows`)."""
    return Path(out).exists() and not holds_no_rows(out)


def check_fits(theory, n: int, out, chains: int, configs: bool, columns: int) -> None:
    """Refuse, before any work, an ensemble of ``n`` configurations of ``theory`` (a
    ``[theory]`` table) with ``columns`` stored columns that cannot be written or would not
    fit on disk (a continued file already holds part of it: the rest must fit)."""
    check_writable(out)
    more = n
    if continues(out):  # it holds part of them already: the rest must fit
        with open_ensemble(out) as ens:
            more = max(n - ens.n, 0)
    need = resources.ensemble_bytes(theory, more, columns, configs)
    resources.check_disk(need, out, f"an ensemble of {n} configurations")
