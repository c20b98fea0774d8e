"""Data-parallel training over several processes (``torchrun``; gloo on CPUs, NCCL on GPUs).

Under ``torchrun --nproc_per_node R -m latticeflow train MODEL.toml`` every process (rank)
builds the same flow from the same seed, draws its own share ``batch_size / R`` of the
prior samples from its own generator, computes the reverse-KL loss of that share, and the
gradients are averaged over ranks before every update — what DistributedDataParallel does,
done explicitly because a flow is trained through ``sample()``, not ``forward()``, which
DDP's hooks assume.  The average of the per-rank mean losses is the mean loss of the total
batch, so R ranks with batch B/R each follow the gradient of one process with batch B
(the samples differ: each rank has its own stream).

- RNG: rank 0 draws from ``manual_seed(seed)`` (so one process trains exactly as without
  torchrun), rank r > 0 from :func:`rank_seed`; each stream is reproducible.
- Files: rank 0 alone writes the checkpoint, the metrics and the model; the checkpoint
  holds every rank's generator state.  On resume rank r continues saved stream r where
  the checkpoint has one (so with the same number of ranks every stream continues
  exactly); a rank beyond the saved ones reseeds from (seed, step, r).
- Only rank 0 evaluates (the acceptance every ``eval_every`` steps) while the others wait
  in the next all-reduce; the collectives' timeout is ``LATTICEFLOW_TIMEOUT_MINUTES``
  (default 240) so that a long evaluation does not time the others out.
- Decisions that must agree (skip a non-finite step, stop on the time budget) are taken
  from all-reduced values, so no rank ever waits on a collective the others skipped.
- A rank whose peer died (killed, out of memory) gets :class:`LostPeer` from the next
  collective: one line naming the rank and how to resume, exit code 2.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here is active.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re

import torch

from ..devices import resolve
from ..errors import ConfigError, LatticeflowError

__all__ = ["Group", "LostPeer", "current", "launched", "local_rank", "rank_seed", "rank_device"]

#: what a rank that lost its peers says to do, until the run knows more (its directory)
RERUN = "everything committed so far is kept: run the same torchrun command again to continue"


class LostPeer(LatticeflowError):
    """A collective failed because another rank died or hung up (gloo: "Connection closed
    by peer"; NCCL: a remote error): one line naming this rank and how to continue."""

    def __init__(self, rank: int, exc: BaseException, hint: str):
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
        reason = re.sub(r"^\[[^\]]*\]\s*", "", reason).split(". ")[0]  # gloo: "[pair.cc:553] Connection closed…"
        if len(reason) > 160:
            reason = reason[:157] + "..."
        super().__init__(f"rank {rank}: lost contact with another rank ({reason}); {hint}")


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s prior-sample stream (rank 0 at step 0: ``seed`` itself).

    Mixed by SHA-256 with a tag of its own, so that no rank's stream coincides with another
    seed the trainer derives (e.g. the evaluation seeds, which are linear in the step)."""
    if rank == 0 and step == 0:
        return int(seed)
    digest = hashlib.sha256(f"latticeflow-rank-stream:{int(seed)}:{int(rank)}:{int(step)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def launched() -> tuple[int, int]:
    """``(rank, world size)`` of this process as ``torchrun`` set them (``(0, 1)`` without
    it): the one place that reads torchrun's environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's GPU index under ``torchrun`` (``LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(name: str = "cpu", what: str = "train.device") -> torch.device:
    """This process's device for a ``device`` setting: under ``torchrun`` a bare ``cuda``
    (or ``auto`` on a GPU machine) means ``cuda:LOCAL_RANK``, one GPU per rank."""
    ranks = launched()[1]
    if ranks > 1 and str(name).startswith("cuda:"):  # every rank on one GPU: refuse, don't crowd it
        raise ConfigError(f"{what}: {str(name)!r} under torchrun would put all {ranks} ranks on one GPU; "
                          "use \"cuda\" (rank r then runs on cuda:LOCAL_RANK)")
    device = resolve(name, what)
    if device.type == "cuda" and ranks > 1:
        device = resolve(f"cuda:{local_rank()}", what)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


class Group:
    """The ranks of one training run (``world_size == 1``: a single process, no collectives),
    and the device this rank trains on (collectives run there: NCCL needs CUDA tensors)."""

    def __init__(self, rank: int = 0, world_size: int = 1, backend: str | None = None,
                 device: torch.device | str = "cpu"):
        self.rank, self.world_size, self.backend = int(rank), int(world_size), backend
        self.device = torch.device(device)
        #: how to continue after a lost peer (a training run names its directory here)
        self.resume_hint = RERUN

    @contextlib.contextmanager
    def _collective(self):
        """Run one collective; a peer that died or hung up is a :class:`LostPeer`, not a
        backend traceback.  (Errors in torch's own argument checks are ValueError/TypeError
        and pass through.)"""
        try:
            yield
        except RuntimeError as exc:
            raise LostPeer(self.rank, exc, self.resume_hint) from None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, batch_size: int) -> int:
        """Each rank's part of a total batch (ConfigError if it does not split evenly)."""
        if batch_size % self.world_size:
            raise ConfigError(f"train.batch_size: {batch_size} does not split evenly over "
                              f"{self.world_size} ranks")
        return batch_size // self.world_size

    def all_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of ``tensor`` (identity on one rank)."""
        if not self.active:
            return tensor
        out = tensor.detach().clone()
        with self._collective():
            torch.distributed.all_reduce(out)
        return out / self.world_size

    def average_gradients(self, parameters) -> None:
        """Replace every gradient by its mean over ranks (one flat all-reduce); a missing
        gradient counts as zero."""
        if not self.active:
            return
        params = list(parameters)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        with self._collective():
            torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        with self._collective():
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape and dtype on all ranks), in rank order, on the
        device ``tensor`` is on (the collective itself runs on the group's device)."""
        if not self.active:
            return [tensor]
        local = tensor.to(self.device).contiguous()
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        with self._collective():
            torch.distributed.all_gather(out, local)
        return [t.to(tensor.device) for t in out]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            with self._collective():
                torch.distributed.barrier()

    def broadcast_parameters(self, module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.active:
            return
        with torch.no_grad(), self._collective():
            for t in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(t.data, 0)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (picklable) on every rank."""
        if not self.active:
            return obj
        box = [obj]
        with self._collective():
            torch.distributed.broadcast_object_list(box, 0)
        return box[0]

    def close(self) -> None:
        """Leave the process group (a process that exits inside one may abort)."""
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def __repr__(self) -> str:
        return f"Group(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"


def current(device: torch.device | str = "cpu") -> Group:
    """The group this process belongs to: from ``torchrun``'s environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), initialising the process group on
    first use (backend NCCL when this rank trains on a GPU, gloo on the CPU;
    ``LATTICEFLOW_BACKEND`` overrides it); a one-rank group otherwise."""
    device = torch.device(device)
    rank, world = launched()
    if world <= 1:
        return Group(device=device)
    if not torch.distributed.is_available():  # pragma: no cover - every supported build has it
        raise RuntimeError("this torch build has no torch.distributed; train in one process")
    if not torch.distributed.is_initialized():
        minutes = float(os.environ.get("LATTICEFLOW_TIMEOUT_MINUTES", "240"))
        default = "nccl" if device.type == "cuda" else "gloo"
        try:
            torch.distributed.init_process_group(backend=os.environ.get("LATTICEFLOW_BACKEND", default),
                                                 timeout=datetime.timedelta(minutes=minutes))
        except RuntimeError as exc:  # the rendezvous failed: a peer died before it met the others
            raise LostPeer(rank, exc, RERUN) from None
    return Group(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                 torch.distributed.get_backend(), device)
