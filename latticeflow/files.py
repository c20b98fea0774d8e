"""One way to read input files and to create output files and directories.

- :func:`read_text`: a text input file, with one-line errors for what is not one (a
  directory, a FIFO or device, a symbolic link loop, unreadable, binary, not UTF-8);
  :func:`check_input` refuses those before any input (a weights file too) is opened.
- :func:`check_writable`: refuse an output location before any work starts (read-only
  directory or mount, a file where a directory should be, no permission).
- :func:`atomic_write_text`, :func:`atomic_save` (torch objects): write under a temporary
  name in the same directory, then ``os.replace`` — a reader, or a run killed half-way,
  sees the old file or the new one, never a half-written one.  A full disk is reported as
  one line and leaves no temporary file behind.
- :func:`new_run_dir`: ``runs/<name>-<timestamp>[-k]/``, never an existing directory.
- :class:`RunLock`: one process at a time in a run directory or on an ensemble file.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from pathlib import Path

from .errors import LatticeflowError

__all__ = ["input_problem", "check_input", "read_text", "check_writable", "write_failed", "atomic_write", "atomic_write_text", "atomic_save", "atomic_copy",
           "new_run_dir", "RunLock", "RUNS"]

#: where run directories go unless ``--out`` names one
RUNS = Path("runs")


def input_problem(path, what: str = "file") -> str | None:
    """Why ``path`` cannot be read as an input file (``"no such file"``, a directory, a
    symbolic link loop, a FIFO or device, which would block or never end), or None for a
    regular file.  Asked before an input is opened, so that nothing hangs."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a symbolic link to nothing (its target is missing)" if os.path.islink(path) else "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"is a symbolic link loop, not a {what}"
        return f"cannot read it ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return f"is a directory, not a {what}"
    if not stat.S_ISREG(mode):
        return f"is not a regular file (a FIFO, socket or device), not a {what}"
    return None


def check_input(path, what: str = "file") -> Path:
    """``path`` if it is a regular file, else a one-line :class:`LatticeflowError` saying why."""
    problem = input_problem(path, what)
    if problem:
        raise LatticeflowError(f"{path}: {problem}")
    return Path(path)


def read_text(path, what: str = "file") -> str:
    """The UTF-8 text of an input file, or a one-line :class:`LatticeflowError` saying why not.
    A UTF-8 byte-order mark (written by some Windows editors) is dropped, as Python's
    ``utf-8-sig`` does."""
    path = check_input(path, what)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LatticeflowError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LatticeflowError(f"{path}: is UTF-16 text; save it as UTF-8")
    if b"\x00" in data:
        raise LatticeflowError(f"{path}: is a binary file, not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LatticeflowError(f"{path}: is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def check_writable(path, directory: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: ``path`` is a file to
    create or replace (``directory``: a directory to create or fill)."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise LatticeflowError(f"{path}: exists and is not a directory")
    if not directory and path.is_dir():
        raise LatticeflowError(f"{path}: is a directory, not a file")
    where = path if directory and path.is_dir() else _existing_ancestor(path.parent if not directory else path)
    if not where.is_dir():
        raise LatticeflowError(f"{path}: {where} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".latticeflow-probe-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LatticeflowError(f"{path}: cannot write there ({exc.strerror or exc})") from None


def write_failed(path, exc: OSError) -> LatticeflowError:
    """The one-line error for a failed write (a full disk, a vanished mount, …)."""
    reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return LatticeflowError(f"{path}: writing failed: {reason}; everything committed before is kept")


def _temporary(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def atomic_write(path, write, suffix: str = "") -> None:
    """``write(tmp)`` into a temporary name beside ``path`` (ending in ``suffix``, for writers
    that choose the format by it: ``.png``, ``.json.gz``), then rename it into place, so that
    ``path`` is either the old file or the whole new one; a failed write is one line."""
    path = Path(path)
    tmp = _temporary(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failed(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` so that it is either the old file or the whole new one."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save(obj, path) -> None:
    """``torch.save`` with the same guarantee as :func:`atomic_write_text`."""
    import torch

    def save(tmp):
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch reports a full disk as RuntimeError
            if "write" not in str(exc).lower():
                raise
            raise OSError(errno.ENOSPC, str(exc)) from None

    atomic_write(path, save)


def atomic_copy(source, path) -> None:
    """Copy the file ``source`` to ``path`` with the same guarantee as :func:`atomic_write_text`."""
    import shutil

    atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def new_run_dir(name: str, base: Path = RUNS) -> Path:
    """A fresh directory path ``base/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``… if taken);
    not created."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, k = Path(base) / f"{name}-{stamp}", 1
    while run_dir.exists():
        k += 1
        run_dir = Path(base) / f"{name}-{stamp}-{k}"
    return run_dir


class RunLock:
    """An exclusive lock on ``path`` (a lock file, created if missing) for one process.

    ``flock`` locks vanish with the process, so a killed run never leaves a stale lock.
    A second process gets one line naming the first one's pid.
    """

    def __init__(self, path, what: str):
        self.path, self.what, self._fd = Path(path), what, None

    def __enter__(self):
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LatticeflowError(f"{self.what}: cannot create its lock file {self.path} "
                                   f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LatticeflowError(f"{self.what} is in use by another latticeflow process "
                                   f"(pid {other}); wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
