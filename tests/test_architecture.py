"""The package map of docs/architecture.md, enforced: who may import whom, no dispatch on
theory names outside the registries, modules under 400 lines, and a new theory needing
nothing but its own class."""

import ast
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1] / "latticeflow"

#: component -> the components it may import (besides itself).  Components are the modules
#: and subpackages directly under latticeflow/; see docs/architecture.md.
FOUNDATION = {"errors", "schema", "lattice", "groups", "files", "interrupts", "resources", "devices",
              "__init__"}
ALLOWED = {
    **{name: FOUNDATION for name in FOUNDATION},
    "theories": FOUNDATION,
    "flows": FOUNDATION | {"theories"},
    "mcmc": FOUNDATION | {"theories", "ensemble"},
    "ensemble": FOUNDATION,
    "analysis": FOUNDATION | {"theories"},
    "config": FOUNDATION | {"theories", "flows", "config_doc", "samplers", "ensemble"},
    "config_doc": FOUNDATION | {"theories", "flows", "config", "samplers"},
    "training": FOUNDATION | {"theories", "flows", "mcmc", "analysis", "config"},
    "samplers": FOUNDATION | {"theories", "mcmc", "training", "ensemble"},
    "parallel": FOUNDATION | {"config", "ensemble", "training"},
    "results": FOUNDATION | {"theories", "analysis", "config", "ensemble"},
    "pipeline": FOUNDATION | {"theories", "flows", "mcmc", "analysis", "config", "ensemble", "training",
                              "samplers", "parallel", "results"},
    "study": FOUNDATION | {"theories", "flows", "mcmc", "analysis", "config", "ensemble", "training",
                           "samplers", "parallel", "pipeline", "results"},
    "cli": FOUNDATION | {"theories", "flows", "mcmc", "analysis", "config", "ensemble", "training",
                         "samplers", "parallel", "pipeline", "study", "results"},
    "__main__": {"cli"},
    "faults": FOUNDATION,
}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def component(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imported_components(path: Path) -> set[str]:
    """Components of latticeflow imported anywhere in the module (also inside functions)."""
    tree = ast.parse(path.read_text())
    package_parts = ["latticeflow", *path.relative_to(PACKAGE).parts[:-1]]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "latticeflow":
                sub = parts[1] if len(parts) > 1 else "__init__"
                is_module = (PACKAGE / sub).is_dir() or (PACKAGE / f"{sub}.py").is_file()
                found.add(sub if is_module else "__init__")  # e.g. `from .. import __version__`
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_import_rules(path):
    own = component(path)
    assert own in ALLOWED, f"{own}: a new component — add it to docs/architecture.md and ALLOWED"
    bad = imported_components(path) - ALLOWED[own] - {own}
    assert not bad, f"{path.relative_to(PACKAGE)} ({own}) imports {sorted(bad)}"


def test_the_rules_themselves_say_what_the_design_says():
    physics_and_below = {"theories", *FOUNDATION}
    for name in physics_and_below:
        assert not ALLOWED[name] & {"training", "cli", "pipeline", "study"}
    assert "mcmc" not in ALLOWED["flows"] and "flows" not in ALLOWED["mcmc"]
    assert all("cli" not in allowed for name, allowed in ALLOWED.items() if name not in ("__main__",))


def test_no_dispatch_on_theory_names_outside_the_registries():
    pattern = re.compile(r"""name\s*[!=]=\s*["']|["']\s*[!=]=\s*\w*name\b""")
    offenders = []
    for path in modules():
        rel = path.relative_to(PACKAGE)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_package_cites_only_what_ships_with_it():
    """The design a user needs is docs/design.md; the developers' contract outside the
    repository is never cited by the package."""
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in modules()
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "DESIGN" in line]
    assert not offenders, offenders
    cited = {int(m) for p in modules() for m in re.findall(r"docs/design\.md §(\d)", p.read_text())}
    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    assert cited and all(f"## §{n} " in design for n in cited), cited


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_under_400_lines(path):
    assert len(path.read_text().splitlines()) < 400


def test_the_pipeline_is_a_thin_facade():
    """pipeline.py wires the library together and checks inputs; the work lives elsewhere."""
    assert len((PACKAGE / "pipeline.py").read_text().splitlines()) <= 200


def test_subpackages_are_attributes_of_a_plain_import():
    """`import latticeflow` then `latticeflow.ensemble.open`, in a fresh interpreter."""
    code = ("import latticeflow, sys; assert 'latticeflow.ensemble' not in sys.modules; "
            "assert callable(latticeflow.ensemble.open) and latticeflow.theories.THEORIES; "
            "assert 'ensemble' in dir(latticeflow)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- a new theory is one class ------------------------------------------------------------
def test_a_theory_registered_from_outside_runs_through_config_hmc_and_analyze(tmp_path):
    """A Gaussian 'theory' S = (m/2) Σ x² defined here, in nothing but its own class, is
    parsed from TOML, sampled by HMC into an ensemble and analysed against its exact
    ⟨x²⟩ = 1/m (fixed seed, within 4σ)."""
    import latticeflow
    from latticeflow.schema import key, positive
    from latticeflow.theories import THEORIES, Theory, register_theory

    @register_theory
    class Gaussian(Theory):
        name = "toy_gaussian"
        observable_names = ("x2",)

        @dataclass(frozen=True)
        class couplings:
            m: float = key(doc="mass", check=positive)

        def __init__(self, shape, m):
            super().__init__(shape)
            self.m = float(m)

        @property
        def field_shape(self):
            return self.shape

        def action(self, x):
            return 0.5 * self.m * (x**2).flatten(1).sum(1)

        def force(self, x):
            return -self.m * x

        def observables(self, x):
            return {"x2": (x.to(torch.float64) ** 2).flatten(1).mean(1)}

        def exact(self):
            return {"x2": 1.0 / self.m}

        def random_field(self, batch, generator=None):
            return torch.randn((batch, *self.shape), dtype=torch.float64, generator=generator)

    try:
        model = tmp_path / "toy.toml"
        model.write_text('[theory]\nname = "toy_gaussian"\nL = 4\nm = 2.0\n'
                         "[hmc]\nchains = 4\nthermalization = 20\nblock = 50\nseed = 3\n")
        latticeflow.hmc(model, 800, out=tmp_path / "toy.h5", progress=False)
        r = latticeflow.analyze(tmp_path / "toy.h5")["observables"]["x2"]
        assert abs(r["mean"] - 0.5) < 4 * r["error"], r
        assert math.isfinite(r["tau_int"])
        from latticeflow.config import parse_config

        with pytest.raises(latticeflow.ConfigError, match="theory.m: must be > 0"):
            parse_config('[theory]\nname = "toy_gaussian"\nL = 4\nm = -1.0\n')
    finally:
        THEORIES.pop("toy_gaussian", None)


def test_no_dispatch_on_sampler_names_outside_the_registry():
    """No comparison in the package names a registered sampler (``x.sampler == "mixed"``,
    ``kind in ("flow-iid", ...)``, whatever the attribute): the registry answers instead.
    The sampler modules themselves (``latticeflow/samplers/``) declare the names."""
    from latticeflow.samplers import sampler_names

    names = set(sampler_names(None))

    def literals(node):
        if isinstance(node, ast.Constant) and node.value in names:
            yield node.value
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for element in node.elts:
                yield from literals(element)

    offenders = []
    for path in modules():
        if path.relative_to(PACKAGE).parts[0] == "samplers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for operand in [node.left, *node.comparators]:
                    offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno}: {v}" for v in literals(operand)]
    assert not offenders, "\n".join(offenders)


@dataclass(frozen=True)
class WalkOptions:
    """The toy sampler's own ``[sample]`` keys."""

    from latticeflow.schema import key, positive

    step_size: float = key(0.5, "width of the Gaussian step of every site", positive)


class RandomWalk:
    """Random-walk Metropolis of the whole field, C chains at once: the toy sampler a user
    writes in one module (a chain sampler of latticeflow.mcmc.driver and one registration)."""

    sampler = "random-walk"
    mcmc_columns = ["accepted", "delta_h"]

    def __init__(self, theory, n_chains, step_size, seed, store_configs):
        self.theory, self.n_chains, self.step = theory, n_chains, step_size
        self.store_configs = store_configs
        self.generator = torch.Generator().manual_seed(seed)

    def start(self, state):
        from latticeflow.mcmc.driver import restore_generator

        if state:  # a latticeflow.mcmc.state.ChainState
            restore_generator(self.generator, state.rng)
            self.x = torch.from_numpy(state.field)
            return
        self.x = torch.zeros(self.n_chains, *self.theory.field_shape, dtype=torch.float64)

    def advance(self, rows):
        from latticeflow.mcmc.driver import Block

        g, columns, obs, fields = self.generator, {"accepted": [], "delta_h": []}, {}, []
        for _ in range(rows):
            y = self.x + self.step * torch.randn(self.x.shape, dtype=torch.float64, generator=g)
            delta = self.theory.action(y) - self.theory.action(self.x)
            accept = torch.log(torch.rand(self.n_chains, dtype=torch.float64, generator=g)) < -delta
            self.x = torch.where(accept.view(-1, *[1] * (y.dim() - 1)), y, self.x)
            columns["accepted"].append(accept)
            columns["delta_h"].append(delta)
            for name, value in self.theory.observables(self.x).items():
                obs.setdefault(name, []).append(value)
            fields.append(self.x.clone())
        stack = {k: torch.stack(v).numpy() for k, v in {**columns, **obs}.items()}
        return Block({k: stack[k] for k in obs}, {k: stack[k] for k in columns},
                     torch.stack(fields).numpy() if self.store_configs else None)

    def state(self):
        from latticeflow.mcmc.driver import generator_state
        from latticeflow.mcmc.state import ChainState

        return ChainState(field=self.x.numpy(), rng=generator_state(self.generator))

    def extra(self):
        return {"step_size": self.step}


@pytest.fixture
def random_walk_registered():
    from latticeflow.ensemble import Weighting
    from latticeflow.samplers import SamplerKind, register_sampler, unregister_sampler

    def build(ctx):
        s = ctx.cfg.sample
        return RandomWalk(ctx.theory, s.chains, s.step_size, s.seed, ctx.store_configs)

    register_sampler(SamplerKind("random-walk", "random-walk Metropolis", build, Weighting("delta_h"),
                                 "Gaussian steps of the whole field", options=WalkOptions, needs_flow=False))
    yield
    unregister_sampler("random-walk")


def test_a_sampler_registered_from_a_test_runs_through_sample_analyze_and_compare(
        tmp_path, capsys, random_walk_registered):
    """One registration, no edit elsewhere: the toy sampler is a [sample] sampler with its own
    validated key, writes and resumes an ensemble through `latticeflow sample` on a model
    file without weights, and `analyze` and `compare` read it (its ΔS as the weight column);
    it samples the free field exactly."""
    import json

    from latticeflow.cli import main
    from latticeflow.samplers import sampler_names

    from conftest import refuse

    assert "random-walk" in sampler_names()
    model = tmp_path / "walk.toml"
    model.write_text('[theory]\nname = "phi4"\nL = 4\nm2 = 1.0\nlam = 0.0\n'
                     '[sample]\nsampler = "random-walk"\nstep_size = 0.12\nchains = 8\nblock = 200\nseed = 5\n'
                     '[hmc]\nchains = 4\nthermalization = 20\nblock = 100\n')
    assert main(["sample", str(model), "-n", "4000", "--out", str(tmp_path / "walk.h5"), "--quiet"]) == 0
    assert main(["sample", str(model), "-n", "8000", "--out", str(tmp_path / "walk.h5"), "--quiet"]) == 0
    assert main(["hmc", str(model), "-n", "800", "--out", str(tmp_path / "hmc.h5"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "walk.h5"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sampler"] == "random-walk" and summary["n"] == 8000
    assert 0.2 < summary["acceptance"] < 0.9
    r = summary["observables"]["phi2"]
    assert abs(r["mean"] - summary["exact"]["phi2"]) < 4 * r["error"], r
    assert main(["compare", str(tmp_path / "walk.h5"), str(tmp_path / "hmc.h5"), "--json",
                 "--out", str(tmp_path / "cmp")]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [e["sampler"] for e in table["ensembles"]] == ["random-walk", "hmc"]
    assert (tmp_path / "cmp" / "phi2.png").is_file()
    bad = tmp_path / "bad.toml"
    bad.write_text(model.read_text().replace("step_size = 0.12", "step_size = -1.0"))
    assert "sample.step_size: must be > 0" in refuse(["sample", bad, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    bad.write_text(model.read_text().replace("step_size = 0.12", "hmc_steps = 4"))
    assert "sample.hmc_steps: unknown key for the random-walk sampler (its own keys: step_size)" in refuse(
        ["sample", bad, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    # the file records how it is weighted: a reader needs no registration to analyze it
    from latticeflow import ensemble

    with ensemble.open(tmp_path / "walk.h5") as ens:
        assert (ens.weights.column, ens.reweighted) == ("delta_h", False)


def test_a_run_parses_its_model_file_once(tmp_path, monkeypatch):
    """`latticeflow run` loads and validates the model's TOML once and hands the Config on
    (training, both ensembles, the report): every parse of that file is counted."""
    import sys

    import latticeflow.config as config
    from latticeflow.cli import main

    original, parses = config.parse_config, []

    def counting(text, path=None, legacy=False):
        if path is not None and Path(path).name == "m.toml":
            parses.append(path)
        return original(text, path, legacy)

    for module in [m for name, m in sys.modules.items() if name.startswith("latticeflow")]:
        if getattr(module, "parse_config", None) is original:
            monkeypatch.setattr(module, "parse_config", counting)
    model = tmp_path / "m.toml"
    model.write_text('[theory]\nname = "phi4"\nL = 4\nm2 = -4.0\nlam = 8.0\n[flow]\nlayers = 2\nhidden = [4]\n'
                     "[train]\nsteps = 3\nbatch_size = 8\neval_every = 3\neval_batch = 16\ncheckpoint_every = 3\n"
                     "[hmc]\nchains = 2\nthermalization = 2\nblock = 10\n[sample]\nchains = 2\nblock = 10\n"
                     "batch_size = 16\n")
    assert main(["run", str(model), "-n", "20", "--out", str(tmp_path / "run"), "--train", "--quiet"]) == 0
    assert (tmp_path / "run" / "report.md").is_file()
    assert len(parses) == 1, parses
