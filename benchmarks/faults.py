"""The long reliability run (the CI version is tests/test_reliability.py).

    OMP_NUM_THREADS=1 python benchmarks/faults.py --kills 20 --files 2000 --json runs/faults.json

1. ``--files`` fuzzed model files (the hostile list of latticeflow/faults.py, then random
   files with at least one invalid key) through exact, hmc, sample, train and run:
   tracebacks, exit codes other than 0/2, refusals longer than one line, and refusals that
   should have happened but did not are counted.
2. Damaged copies of a good ensemble through analyze, compare and a resuming hmc: every
   refusal must leave the file's sha256 unchanged; an accepted resume must equal the
   uninterrupted run bit for bit.
3. ``--kills`` SIGKILLs per command (hmc, sample, train, run) at random moments, each
   followed by the same command: the result must equal an uninterrupted run bit for bit.

Prints a Markdown table (the one in docs/reliability.md) and writes ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latticeflow.cli import main  # noqa: E402
from latticeflow.faults import (COMMANDS, damaged_copies, hostile_model_texts, kill_and_resume,  # noqa: E402
                                run_command, same_ensemble, sha256)

TINY = (Path(__file__).resolve().parents[1] / "tests" / "test_reliability.py").read_text()
TINY = TINY[TINY.index('TINY_U1 = """') + 13: TINY.index('"""', TINY.index('TINY_U1 = """') + 13)]

KEYS = {
    "theory": {"name": ['"u1"', '"phi4"', '"sun"', '"x"', "1"], "L": ["4", "0", "-4", "4.5", "inf", "1e400"],
               "beta": ["1.0", "-1.0", "nan", "inf", "0", "[1]", '"b"'], "m2": ["-1.0", "nan"],
               "lam": ["1.0", "-inf"], "N": ["2", "4"], "dim": ["2", "0", "true"], "shape": ["[4, 4]", "[4, 0]", "[]"]},
    "hmc": {"chains": ["2", "0", "-3"], "steps": ["4", "0"], "trajectory_length": ["1.0", "inf", "-1"],
            "integrator": ['"omelyan"', '"x"'], "block": ["5", "0"], "seed": ["0", "-1", "1e30"]},
    "train": {"lr": ["0.01", "inf", "nan"], "steps": ["3", "0"], "batch_size": ["4", "0"], "estimator": ['"path"', '"x"']},
    "sample": {"chains": ["2", "0"], "dtype": ['"float32"', '"float16"'], "batch_size": ["8", "-8"]},
    "flow": {"layers": ["2", "0"], "bijection": ['"ncp"', '"spline"', '"affine"'], "components": ["2", "0"],
             "bound": ["inf"], "z2": ["true"], "hidden": ["[4]", "[0]"]},
}


def random_broken_model(rng: random.Random) -> bytes:
    lines = {"theory": {"name": '"u1"', "L": "4", "beta": "1.0"}}
    for section, keys in KEYS.items():
        for key, values in keys.items():
            if rng.random() < 0.3:
                lines.setdefault(section, {})[key] = rng.choice(values)
    section = rng.choice(sorted(KEYS))
    key = rng.choice(sorted(KEYS[section]))
    lines.setdefault(section, {})[key] = rng.choice(["inf", "nan", '"?"', "[[]]", "{a = 1}"])  # invalid for every key
    text = "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in kv.items()) for s, kv in lines.items())
    if rng.random() < 0.1:
        return text.encode("utf-16")
    return text.encode()


def call(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # a traceback: counted, never fatal to the benchmark
            return -1, f"{type(exc).__name__}: {exc}"
    return code, err.getvalue().strip()


def fuzz_files(n: int, tmp: Path, rng: random.Random) -> dict:
    counts = {"files": 0, "runs": 0, "tracebacks": 0, "bad exit": 0, "multi-line": 0, "not refused": 0}
    cases = [(w, c, r) for w, c, r in hostile_model_texts()]
    while len(cases) < n:
        cases.append(("random", random_broken_model(rng), COMMANDS))
    examples = []
    for i, (what, content, refusers) in enumerate(cases[:n]):
        d = tmp / f"f{i}"
        d.mkdir()
        model = d / "m.toml"
        model.write_bytes(content)
        (d / "m.pt").write_bytes(b"")
        counts["files"] += 1
        for argv in (["exact", model], ["hmc", model, "-n", 10, "--out", d / "h.h5", "--quiet"],
                     ["sample", model, "-n", 10, "--out", d / "s.h5", "--quiet"],
                     ["train", model, "--out", d / "t", "--steps", 1, "--quiet"],
                     ["run", model, "-n", 10, "--out", d / "r", "--quiet"]):
            code, err = call(argv)
            counts["runs"] += 1
            problem = None
            if code == -1 or "Traceback" in err:
                problem = "tracebacks"
            elif code not in (0, 2):
                problem = "bad exit"
            elif code == 2 and len(err.splitlines()) != 1:
                problem = "multi-line"
            elif code == 0 and argv[0] in refusers and what != "random":
                problem = "not refused"
            elif code == 0 and what == "random":
                problem = "not refused"
            if problem:
                counts[problem] += 1
                examples.append(f"{problem}: {what} / {argv[0]}: {err[:200]}")
    counts["examples"] = examples[:20]
    return counts


def damaged(tmp: Path) -> dict:
    model = tmp / "u1.toml"
    model.write_text(TINY)
    for n, name in ((40, "good.h5"), (60, "straight60.h5")):
        assert run_command(["hmc", model, "-n", n, "--out", tmp / name, "--quiet"]).returncode == 0
    cases = damaged_copies(tmp / "good.h5", tmp / "damaged", random.Random(7))
    counts = {"files": len(cases), "refused": 0, "continued exactly": 0, "changed while refused": 0,
              "tracebacks": 0, "wrong continuation": 0}
    for what, path in cases:
        before = sha256(path)
        for argv in (["analyze", path], ["compare", path, tmp / "good.h5"]):
            code, err = call(argv)
            counts["tracebacks"] += code not in (0, 2) or "Traceback" in err
        code, err = call(["hmc", model, "-n", 60, "--out", path, "--quiet"])
        if code == 2:
            counts["refused"] += 1
            counts["changed while refused"] += sha256(path) != before
        elif code == 0:
            ok = same_ensemble(tmp / "straight60.h5", path) == []
            counts["continued exactly" if ok else "wrong continuation"] += 1
        else:
            counts["tracebacks"] += 1
    return counts


def kills(n: int, tmp: Path, rng: random.Random) -> dict:
    model = tmp / "u1.toml"
    model.write_text(TINY)
    trained = tmp / "trained"
    assert run_command(["train", model, "--out", trained, "--quiet"]).returncode == 0
    commands = {"hmc": lambda o: ["hmc", model, "-n", 600, "--out", o, "--quiet"],
                "sample": lambda o: ["sample", trained, "-n", 4000, "--out", o, "--quiet"],
                "train": lambda o: ["train", model, "--out", o, "--quiet"],
                "run": lambda o: ["run", model, "-n", 400, "--out", o, "--quiet", "--train"]}
    out = {}
    for name, args in commands.items():
        suffix = ".h5" if name in ("hmc", "sample") else ""
        straight = tmp / f"{name}-straight{suffix}"
        t0 = time.monotonic()
        assert run_command(args(straight)).returncode == 0
        duration = time.monotonic() - t0
        row = {"kills landed": 0, "resumed exactly": 0, "failed": 0, "failures": []}
        for k in range(n):
            target = tmp / f"{name}-k{k}{suffix}"
            code, rerun = kill_and_resume(args(target), rng.uniform(0.3, 0.98) * duration)
            row["kills landed"] += code == -9
            if name == "train" and rerun.returncode == 2 and "already holds" in rerun.stderr:
                rerun = run_command(args(target) + ["--resume"])
            if rerun.returncode != 0:
                row["failed"] += 1
                row["failures"].append(rerun.stderr.strip()[-200:])
                continue
            if name in ("hmc", "sample"):
                diffs = same_ensemble(straight, target)
            elif name == "run":
                diffs = same_ensemble(straight / "flow-mcmc.h5", target / "flow-mcmc.h5") + \
                    same_ensemble(straight / "hmc.h5", target / "hmc.h5")
            else:
                a = [{k: v for k, v in json.loads(s).items() if k != "seconds"}
                     for s in (straight / "metrics.jsonl").read_text().splitlines()]
                b = [{k: v for k, v in json.loads(s).items() if k != "seconds"}
                     for s in (target / "metrics.jsonl").read_text().splitlines()]
                diffs = [] if a == b else ["metrics differ"]
            row["resumed exactly" if not diffs else "failed"] += 1
            if diffs:
                row["failures"].append("; ".join(diffs))
        out[name] = row
    return out


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs per command")
    p.add_argument("--files", type=int, default=2000, help="fuzzed model files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "fuzz").mkdir()
        (tmp / "dmg").mkdir()
        (tmp / "kill").mkdir()
        results = {"fuzzed files": fuzz_files(args.files, tmp / "fuzz", rng),
                   "damaged ensembles": damaged(tmp / "dmg"),
                   "kills": kills(args.kills, tmp / "kill", rng)}
    results["seconds"] = round(time.monotonic() - started, 1)
    f, dm = results["fuzzed files"], results["damaged ensembles"]
    print("| check | cases | result |\n|---|---|---|")
    print(f"| fuzzed model files × 5 commands | {f['files']} files, {f['runs']} runs | "
          f"{f['tracebacks']} tracebacks, {f['bad exit']} bad exit codes, {f['multi-line']} "
          f"multi-line refusals, {f['not refused']} not refused |")
    print(f"| damaged ensembles × (analyze, compare, resume) | {dm['files']} | {dm['refused']} refused "
          f"({dm['changed while refused']} changed), {dm['continued exactly']} continued exactly, "
          f"{dm['wrong continuation']} wrong, {dm['tracebacks']} tracebacks |")
    for name, row in results["kills"].items():
        print(f"| kill -9 + same command: {name} | {args.kills} ({row['kills landed']} landed mid-run) | "
              f"{row['resumed exactly']} bit-identical, {row['failed']} failed |")
    print(f"\n{results['seconds']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main_()
