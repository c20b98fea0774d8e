"""Ensembles on several ranks: ``torchrun --nproc_per_node R -m latticeflow sample|hmc …``.

Each rank runs its share ``C/R`` of the ``chains`` of ``[sample]`` or ``[hmc]`` (which must
split evenly), seeded with :func:`~latticeflow.training.distributed.rank_seed` (rank 0 keeps
the config's seed), on its own device (``cuda`` means ``cuda:LOCAL_RANK``), into its own
resumable ensemble file ``NAME.rank<r>.h5`` (:func:`latticeflow.ensemble.join.part_path`).
When every rank has committed its part, rank 0 joins the parts into the file that
``--out`` names — one ensemble of C chains, made of HDF5 virtual datasets
(:mod:`latticeflow.ensemble.join`).  ``-n`` is the total: each part holds
``ceil(n / C)`` rows, like the chains of a one-process run.  Running the same command
again continues every part and joins them again.

An existing ``--out`` that is not the join of as many ranks (say a one-process ensemble)
is refused on every rank before anything is written.  Without ``torchrun`` (``WORLD_SIZE``
unset or 1) nothing here changes a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from .errors import ConfigError
from .ensemble import rows_needed
from .ensemble.join import check_join_target, join, part_path
from .training.distributed import current, launched, rank_seed

__all__ = ["split_over_ranks", "first_chain"]


@contextlib.contextmanager
def split_over_ranks(cfg, section: str, out, n: int, device):
    """A context giving ``(cfg, out, n, finish)`` for this rank: the config with its share of
    the chains and its seed, its part file, the configurations that part must hold, and
    ``finish(result)``, which waits for every rank, joins the parts on rank 0 and returns the
    run summary (the joined file's on rank 0, the part's on the others).  ``device`` is this
    rank's (:func:`~latticeflow.training.distributed.rank_device` of the section's setting);
    the process group runs its collectives there and is closed when the context ends,
    whatever happens inside.  On one process: the inputs
    and the identity."""
    world = launched()[1]
    if world <= 1:
        yield cfg, out, n, lambda result: result
        return
    table = getattr(cfg, section)
    if table.chains % world:
        raise ConfigError(f"{section}.chains: {table.chains} chains do not split evenly over {world} "
                          "ranks (each rank runs chains / ranks of them)")
    out = Path(out)
    check_join_target(out, world)  # every rank refuses, before any file or process group
    group = current(device)
    share = table.chains // world
    mine = dataclasses.replace(table, chains=share, seed=rank_seed(table.seed, group.rank))
    rank_cfg = dataclasses.replace(cfg, **{section: mine})
    rank_n = rows_needed(n, table.chains) * share

    def finish(result: dict) -> dict:
        group.barrier()  # every part committed
        if not group.is_main:
            return result
        joined = join(out, [part_path(out, r) for r in range(world)], cfg.toml, table.seed)
        return result | {"path": joined["path"], "n": joined["n"], "parts": joined["parts"],
                         "rows_added": result["rows_added"], "ranks": world}

    try:
        yield rank_cfg, part_path(out, group.rank), rank_n, finish
    finally:
        group.close()


def first_chain(chains: int) -> int:
    """The index, among all ranks' chains, of this rank's first one (rank r runs chains
    r·C … (r+1)·C − 1 of a ``torchrun`` run; 0 in one process)."""
    rank, world = launched()
    return rank * chains if world > 1 else 0
