"""Files written by an earlier latticeflow keep working.

``tests/fixtures/v0_1_0/`` was written by latticeflow 0.1.0 (the version before the
architecture change of issue 9), with the commands::

    latticeflow hmc tiny_u1.toml -n 20 --out u1_hmc.h5
    latticeflow train tiny_u1.toml --out u1_train
    latticeflow sample u1_train -n 20 --out u1_flow_mcmc.h5
    latticeflow train tiny_phi4.toml --out phi4_train
    latticeflow sample phi4_train -n 20 --iid --out phi4_flow_iid.h5
    latticeflow hmc tiny_phi4.toml -n 20 --out phi4_hmc.h5 --no-configs

plus ``analyze --json`` of each file, the same three ensembles generated to ``-n 40`` in one
go (``continued_40.npz``) and the training run resumed to step 6
(``u1_train_resumed_to_6.jsonl``).  The current code must read them, analyse them to the
same numbers, and continue them bit for bit as the old code did.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import latticeflow
from latticeflow import ensemble

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"
ENSEMBLES = ["u1_hmc", "u1_flow_mcmc", "phi4_flow_iid", "phi4_hmc"]


@pytest.mark.parametrize("name", ENSEMBLES)
def test_old_ensembles_analyse_to_the_same_numbers(name):
    old = json.loads((FIXTURES / f"{name}.analyze.json").read_text())
    new = latticeflow.analyze(FIXTURES / f"{name}.h5")
    old.pop("path"), new.pop("path")
    assert new.keys() == old.keys()

    def same_numbers(got: dict, want: dict, where) -> None:  # every old field; new ones may be added
        for field, value in want.items():
            assert got[field] == value or got[field] == pytest.approx(value, rel=1e-12, abs=1e-15), (where, field)

    for key in old:
        if key == "observables":
            assert new[key].keys() == old[key].keys()
            for obs, values in old[key].items():
                same_numbers(new[key][obs], values, obs)
        elif key == "exp_minus_delta_h":
            same_numbers(new[key], old[key], key)
        else:
            assert new[key] == old[key] or new[key] == pytest.approx(old[key], rel=1e-12), key


def _same_rows(path: Path, prefix: str, float32_flow: bool = False) -> None:
    """The rows of ``path`` equal the recorded continuation.  Bit for bit, except the float
    columns of a float32 flow's ensemble: its convolutions take different vector kernels on
    different CPUs (AVX2, AVX-512), so those agree to float32 rounding (1e-6, relative or
    absolute), while the random streams, and hence every accept/reject decision, are exact."""
    expected = np.load(FIXTURES / "continued_40.npz")
    with ensemble.open(path) as ens:
        assert ens.n == 40
        got = {f"{prefix}/observables/{k}": v for k, v in ens.observables.items()}
        got |= {f"{prefix}/mcmc/{k}": v for k, v in ens.mcmc.items()}
    want = {k: expected[k] for k in expected.files if k.startswith(prefix + "/")}
    assert got.keys() == want.keys()
    for key, value in want.items():
        if float32_flow and np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_old_hmc_ensemble_continues_bit_for_bit(tmp_path):
    path = tmp_path / "u1_hmc.h5"
    shutil.copy(FIXTURES / "u1_hmc.h5", path)
    result = latticeflow.hmc(FIXTURES / "tiny_u1.toml", 40, out=path, progress=False)
    assert result["resumed"] and result["rows_added"] == 10
    _same_rows(path, "u1_hmc_40")


@pytest.mark.parametrize("name, run, iid", [("u1_flow_mcmc", "u1_train", False),
                                            ("phi4_flow_iid", "phi4_train", True)])
def test_old_flow_ensembles_continue_bit_for_bit_from_old_run_directories(tmp_path, name, run, iid):
    path = tmp_path / f"{name}.h5"
    shutil.copy(FIXTURES / f"{name}.h5", path)
    result = latticeflow.sample(FIXTURES / run, 40, out=path, iid=iid, progress=False)
    assert result["resumed"]
    _same_rows(path, f"{name}_40", float32_flow=True)


def test_old_training_checkpoint_resumes_exactly(tmp_path):
    run_dir = tmp_path / "u1_train"
    shutil.copytree(FIXTURES / "u1_train", run_dir)
    latticeflow.train(run_dir / "config.toml", out=run_dir, steps=6, resume=True, progress=False)
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(s) for s in (FIXTURES / "u1_train_resumed_to_6.jsonl").read_text().splitlines()]
    got = [r for r in lines if r["step"] in (5, 6)]
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        g.pop("seconds"), w.pop("seconds")
        assert g == w


# --- files of the release before the sampler registry -------------------------------------
#: ``tests/fixtures/pre_registry/`` was written by the release before the sampler registry
#: (commit 01fa1ca), from the v0_1_0 fixture's training run and ``tiny_schwinger.toml``::
#:
#:     latticeflow sample u1_train -n 20 --sampler mixed --out u1_mixed.h5
#:     latticeflow sample u1_train -n 20 --sampler flow-hmc --out u1_flow_hmc.h5
#:     latticeflow hmc tiny_schwinger.toml -n 20 --out schwinger_hmc.h5      (pseudofermions)
#:
#: and the same three to ``-n 40`` in one go (``continued_40.npz``).  They record no
#: ``weight_column``/``reweighted`` attributes and their HMC settings held the fermion keys;
#: the current code must read them and continue them bit for bit.
PRE_REGISTRY = Path(__file__).parent / "fixtures" / "pre_registry"


@pytest.mark.parametrize("name, source, sampler", [
    ("u1_mixed", FIXTURES / "u1_train", "mixed"),
    ("u1_flow_hmc", FIXTURES / "u1_train", "flow-hmc"),
    ("schwinger_hmc", PRE_REGISTRY / "tiny_schwinger.toml", "hmc"),
])
def test_ensembles_of_the_release_before_the_registry_continue_bit_for_bit(tmp_path, name, source, sampler):
    path = tmp_path / f"{name}.h5"
    shutil.copy(PRE_REGISTRY / f"{name}.h5", path)
    with ensemble.open(path) as ens:  # the weighting its sampler's name implies
        assert ens.sampler == sampler and not ens.reweighted
        assert ens.weights.column == ("log_weight" if sampler == "mixed" else "delta_h")
    if sampler == "hmc":
        result = latticeflow.hmc(source, 40, out=path, progress=False)
    else:
        result = latticeflow.sample(source, 40, out=path, sampler=sampler, progress=False)
    assert result["resumed"] and result["rows_added"] == 10
    expected = np.load(PRE_REGISTRY / "continued_40.npz")
    with ensemble.open(path) as ens:
        got = {f"{name}_40/observables/{k}": v for k, v in ens.observables.items()}
        got |= {f"{name}_40/mcmc/{k}": v for k, v in ens.mcmc.items()}
    want = {k: expected[k] for k in expected.files if k.startswith(f"{name}_40/")}
    assert got.keys() == want.keys()
    for key, value in want.items():
        if sampler != "hmc" and np.issubdtype(value.dtype, np.floating):  # float32 flows: see _same_rows
            np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
