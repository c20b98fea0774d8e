"""Every classical baseline beside the flow: which samplers apply to a theory (the registry's
``applies``, the same line each build refuses with), the cost per independent sample, and
`latticeflow run --baselines` naming the best classical sampler and the flow's ratio to it."""

import json

import numpy as np
import pytest

from conftest import refuse
from latticeflow.analysis.cost import against_best, sample_costs
from latticeflow.config import parse_config
from latticeflow.errors import ConfigError
from latticeflow.samplers import SamplerContext, sampler_kind, sampler_names
from latticeflow.samplers.registry import baseline_names

THEORIES = {
    "u1 2D": '[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n',
    "u1 3D": '[theory]\nname = "u1"\nL = 4\ndim = 3\nbeta = 1.0\n',
    "phi4": '[theory]\nname = "phi4"\nL = 4\nm2 = 1.0\nlam = 0.0\n',
    "su2": '[theory]\nname = "sun"\nL = 4\nN = 2\nbeta = 2.0\n',
    "schwinger": '[theory]\nname = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.2\n',
}

U1_MODEL = """
[theory]
name = "u1"
L = 4
beta = 1.0

[flow]
layers = 2
hidden = [4]

[train]
steps = 4
batch_size = 16
eval_every = 4
eval_batch = 64
checkpoint_every = 4

[hmc]
chains = 4
thermalization = 10
block = 100

[sample]
chains = 4
thermalization = 10
block = 100
batch_size = 256
"""


def test_applies_is_what_each_build_refuses():
    """For every classical kind and theory: the build succeeds where ``applies`` finds no
    problem, and refuses with a ConfigError holding that very line where it finds one."""
    classical = [n for n in sampler_names(None) if not sampler_kind(n).needs_flow]
    assert {"hmc", "direct", "heatbath", "instanton-jump", "cluster", "ne-mcmc"} <= set(classical)
    refused = set()
    for label, text in THEORIES.items():
        for name in classical:
            kind = sampler_kind(name)
            cfg = parse_config(text + f'[sample]\nsampler = "{name}"\n' if kind.command == "sample" else text)
            theory = cfg.theory.build()
            problem = kind.problem(theory)
            if problem is None:
                kind.build(SamplerContext(cfg, theory, progress=False))
            else:
                refused.add((label, name))
                with pytest.raises(ConfigError) as info:
                    kind.build(SamplerContext(cfg, theory, progress=False))
                assert problem in str(info.value) and "\n" not in str(info.value), (label, name, info.value)
    assert {("phi4", "heatbath"), ("u1 3D", "instanton-jump"), ("schwinger", "direct"),
            ("su2", "ne-mcmc"), ("u1 2D", "cluster"), ("schwinger", "heatbath")} <= refused
    assert not any(name == "hmc" for _, name in refused)
    assert baseline_names(parse_config(THEORIES["phi4"]).theory.build(), "sample") == ("cluster",)


def test_cost_and_break_even():
    """c = seconds / N_eff; the best classical sampler is the cheapest measured one; with T
    seconds of training the flow pays off beyond T / (c_b − c_f) independent samples."""
    table = {"ensembles": [{"label": k, "n": 1000, "generation_seconds": s}
                           for k, s in (("flow", 1.0), ("hmc", 4.0), ("hb", 2.0), ("frozen", 0.1))],
             "observables": {"Q": {"exact": 0.0,
                                   "flow": {"tau_int": 5.0, "error": 0.1, "n_eff_per_second": 100.0},
                                   "hmc": {"tau_int": 2.0, "error": 0.1, "n_eff_per_second": 62.5},
                                   "hb": {"tau_int": 1.0, "error": 0.1, "n_eff_per_second": 250.0,
                                          "too_short": True},
                                   "frozen": {"tau_int": 0.5, "error": 0.0, "n_eff_per_second": 1e4}}}}
    costs = sample_costs(table, "Q")
    assert costs["flow"]["seconds_per_independent"] == pytest.approx(0.01)
    assert costs["frozen"]["frozen"] and costs["frozen"]["seconds_per_independent"] is None
    v = against_best(costs, "flow", ["hmc", "hb", "frozen"], training_seconds=30.0)
    assert v["best_classical"] == "hb" and v["lower_bound"]
    assert v["generation_ratio"] == pytest.approx(2.5)
    assert v["break_even_independent"] == "never" and v["training_that_pays_off"] == 0
    v = against_best(costs, "flow", ["hmc"], training_seconds=30.0)  # c_b = 0.016, c_f = 0.01
    assert v["break_even_independent"] == pytest.approx(30.0 / 0.006)
    assert v["ratio_with_training"] == pytest.approx((30.0 + 1e4 * 0.01) / (1e4 * 0.016))
    assert against_best(costs, "flow", ["hmc"], None)["training_that_pays_off"] == pytest.approx(60.0)


@pytest.fixture(scope="module")
def u1_run(tmp_path_factory):
    """`latticeflow run` of a tiny U(1) model (its flow trained 4 steps) with two baselines."""
    import contextlib
    import io

    from latticeflow.cli import main

    root = tmp_path_factory.mktemp("baselines")
    model = root / "tiny_u1.toml"
    model.write_text(U1_MODEL)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as patch:
        patch.setattr("latticeflow.analysis.plots.plot_comparison", lambda *a, **k: [])  # tested elsewhere
        code = main(["run", str(model), "-n", "400", "--out", str(root / "run"), "--quiet", "--json",
                     "--baselines", "direct,heatbath"])
    assert code == 0
    return root / "run", json.loads(out.getvalue())


def test_run_names_the_best_classical_sampler(u1_run):
    from latticeflow import ensemble
    from latticeflow.analysis import gamma_method

    run_dir, result = u1_run
    table, cost = result["comparison"], result["cost"]
    assert [e["label"] for e in table["ensembles"]] == ["flow-mcmc", "hmc", "direct", "heatbath"]
    assert cost["observable"] == "topological_charge" and cost["classical"] == ["hmc", "direct", "heatbath"]
    # seconds per independent Q = seconds / (n / 2 tau_int), tau_int recomputed from the file
    for label in ("hmc", "direct", "heatbath"):
        with ensemble.open(run_dir / f"{label}.h5") as ens:
            tau = gamma_method(ens.observable("topological_charge").T).tau_int
            expected = ens.generation_seconds * 2 * tau / ens.n
        assert cost["ensembles"][label]["seconds_per_independent"] == pytest.approx(expected, rel=1e-6)
    per = {k: cost["ensembles"][k]["seconds_per_independent"] for k in cost["classical"]}
    best = min(per, key=per.get)
    assert cost["best_classical"] == best
    flow = cost["ensembles"]["flow-mcmc"]["seconds_per_independent"]
    assert cost["generation_ratio"] == pytest.approx(flow / per[best])
    t = cost["training_seconds"]
    assert t > 0 and cost["ratio_with_training"] == pytest.approx((t + 1e4 * flow) / (1e4 * per[best]))
    # the exact baselines agree with the exact torus values
    for label in ("direct", "heatbath"):
        for name, row in table["observables"].items():
            if row["exact"] is not None:
                assert abs(row[label]["deviation_sigma"]) < 4, (label, name, row[label])
    report = (run_dir / "report.md").read_text()
    assert f"Best classical sampler: **{best}**" in report and f"**{cost['generation_ratio']:.3g}×**" in report
    assert "flow-MCMC vs HMC and direct (exact i.i.d.), heat bath + overrelaxation" in report
    assert "--baselines direct,heatbath" in report and "--sampler heatbath" in report
    saved = json.loads((run_dir / "run.json").read_text())
    assert saved["cost"] == cost and saved["baselines"] == ["hmc", "direct", "heatbath"]


def test_compare_of_four_files_has_the_cost_table(u1_run, capsys):
    from latticeflow.cli import main

    run_dir, result = u1_run
    files = [str(run_dir / f"{k}.h5") for k in ("heatbath", "direct", "hmc", "flow-mcmc")]
    assert main(["compare", *files]) == 0
    text = capsys.readouterr().out
    assert "Cost per independent `topological_charge`" in text
    rows = [line for line in text.splitlines() if "| s per" not in line and line.count("|") == 7
            and line.split("|")[2].strip() in ("heatbath", "direct", "hmc", "flow-mcmc")]
    assert [r.split("|")[1].strip() for r in rows] == ["heatbath", "direct", "hmc", "flow-mcmc"]
    cheapest = min(result["cost"]["ensembles"].values(), key=lambda c: c["seconds_per_independent"])
    assert sum(r.split("|")[6].strip() == "1" for r in rows) == 1 and np.isfinite(cheapest["tau_int"])


def test_run_refuses_baselines_that_do_not_apply(tmp_path, capsys):
    model = tmp_path / "tiny_u1.toml"
    model.write_text(U1_MODEL)
    for spec, words in (("cluster", "phi4 only"), ("flow-mcmc", "not a classical baseline"),
                        ("heatbath,nonsense", "unknown sampler 'nonsense'")):
        err = refuse(["run", model, "-n", 100, "--out", tmp_path / "run", "--baselines", spec], capsys)
        assert words in err and "--baselines" in err, err
    assert not (tmp_path / "run").exists()


def test_the_committed_every_baseline_tables_are_the_results_file():
    """docs/critical_slowing_down.md's "Every baseline" tables are what the committed results
    file gives (``--baselines --replot`` redraws them), and direct sampling is the best
    classical sampler at every point."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import csd_baselines
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    data = json.loads((ROOT / "docs" / "critical_slowing_down_baselines.json").read_text())
    doc = (ROOT / "docs" / "critical_slowing_down.md").read_text()
    rows = csd_baselines.verdicts(data["points"])
    assert csd_baselines.table(data["points"]) in doc and csd_baselines.verdict_table(rows) in doc
    assert {(v["L"], v["beta"]) for v in rows} == {(16, 2), (16, 4), (16, 6), (16, 8), (32, 8)}
    assert all(v["best_classical"] == "direct" and not v["best_lower_bound"] for v in rows)
    assert all(v["generation_ratio"] > 1 for v in rows if "best_flow" in v)
