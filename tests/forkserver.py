"""A fork server for the suite's command-line runs: ``python -m latticeflow ARGS`` without
paying the interpreter's start and the imports (torch, h5py, scipy, matplotlib: ~2 s of CPU)
for each of the suite's ~150 commands.

One server per test process: a fresh interpreter (started like the commands were, with this
checkout on ``PYTHONPATH`` and one torch thread) imports ``latticeflow.cli`` and the plotting
stack, then for each request forks a child that is the command — its own process with its
own pid, working directory, environment, stdin from /dev/null and stdout/stderr into files,
running ``latticeflow.cli.main`` exactly as ``latticeflow/__main__.py`` does, exiting with
its exit code (a traceback and 1 for an exception that escapes, as Python would).  Signals
reach it as they reach a command (SIGKILL, SIGTERM, SIGINT), and its exit status comes back
as ``subprocess`` reports it (−9 for SIGKILL).  :class:`Forked` has the part of the
``subprocess.Popen`` interface the suite uses.

The server handles one command at a time; a second command started while one runs (a test
holding a lock with one process while another tries) gets a real subprocess.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SERVER = r"""
import json, os, sys, traceback
import latticeflow.cli
from latticeflow.analysis.plots import load_matplotlib
load_matplotlib()
import h5py, scipy.special  # noqa: F401  (what the commands import lazily)
requests, replies = os.fdopen(int(sys.argv[1]), "r"), os.fdopen(int(sys.argv[2]), "w")
replies.write("ready\n"); replies.flush()
for line in requests:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        requests.close(); replies.close()
        code = 1
        try:
            os.chdir(req["cwd"])
            os.environ.clear(); os.environ.update(req["env"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            sys.argv = ["latticeflow", *req["args"]]
            code = latticeflow.cli.main(req["args"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0)
    replies.write(json.dumps({"pid": pid}) + "\n"); replies.flush()
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n"); replies.flush()
"""


class Forked:
    """A command forked by the server: ``pid``, ``returncode``, ``poll()``, ``wait()``,
    ``send_signal()``, ``kill()``, ``communicate()`` like ``subprocess.Popen``."""

    def __init__(self, server: "ForkServer", pid: int, stdout: Path, stderr: Path, capture: bool):
        self.server, self.pid, self.returncode = server, pid, None
        self._out, self._err, self._capture = stdout, stderr, capture

    def poll(self):
        if self.returncode is None and self.server.ready(0):
            self._finish()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            if not self.server.ready(timeout):
                raise subprocess.TimeoutExpired(f"latticeflow (pid {self.pid})", timeout)
            self._finish()
        return self.returncode

    def _finish(self):
        self.returncode = self.server.read()["code"]
        self.server.busy = False

    def send_signal(self, sig):
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout=None):
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        if not self._capture:
            return None, None
        out, err = self._out.read_text(errors="replace"), self._err.read_text(errors="replace")
        self._out.unlink(missing_ok=True)
        self._err.unlink(missing_ok=True)
        return out, err


class ForkServer:
    """The server process of this test process (started on first use)."""

    def __init__(self):
        self.proc, self.busy = None, False

    def _start(self):
        to_server, from_client = os.pipe()
        from_server, to_client = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(to_server), str(to_client)],
                                     pass_fds=(to_server, to_client), env=env, cwd=ROOT)
        os.close(to_server)
        os.close(to_client)
        self.requests, self.replies = os.fdopen(from_client, "w"), os.fdopen(from_server, "r")
        if self.replies.readline().strip() != "ready":
            raise RuntimeError("the test fork server did not start")

    def warm(self) -> None:
        """Start the server now (so that the first command's time is the command's alone)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def ready(self, timeout) -> bool:
        return bool(select.select([self.replies], [], [], timeout)[0])

    def read(self) -> dict:
        line = self.replies.readline()
        if not line:
            raise RuntimeError("the test fork server died")
        return json.loads(line)

    def start(self, args, cwd=None, env=None, capture=True) -> Forked | None:
        """Fork ``latticeflow ARGS``; None when the server is busy with another command."""
        if self.busy:
            return None
        self.warm()
        out = Path(tempfile.mkstemp(prefix="lf-out-")[1]) if capture else Path(os.devnull)
        err = Path(tempfile.mkstemp(prefix="lf-err-")[1]) if capture else Path(os.devnull)
        env = dict(os.environ if env is None else env)
        self.requests.write(json.dumps({"args": [str(a) for a in args], "cwd": str(cwd or os.getcwd()),
                                        "env": env, "stdout": str(out), "stderr": str(err)}) + "\n")
        self.requests.flush()
        self.busy = True
        return Forked(self, self.read()["pid"], out, err, capture)


SERVER = ForkServer()


def spawn(args, cwd=None, env=None, capture=True):
    """Start ``latticeflow ARGS`` (forked by the server, else a real subprocess)."""
    forked = SERVER.start(args, cwd, env, capture)
    if forked is not None:
        return forked
    full = dict(os.environ if env is None else env)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "latticeflow", *map(str, args)], cwd=cwd, env=full,
                            stdout=pipe, stderr=pipe, text=True)


def run(args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``latticeflow ARGS`` to the end, as ``subprocess.run(..., capture_output=True,
    text=True)`` would."""
    proc = spawn(args, cwd, env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(["latticeflow", *map(str, args)], proc.returncode, out, err)


def wait_until(predicate, timeout: float, proc) -> None:
    """Poll ``predicate()`` every 10 ms until it holds, ``proc`` ends or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.01)
