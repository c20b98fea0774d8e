"""The typed, versioned resume state (mcmc/state.py): it round-trips through the arrays of a
file's state group, reads files written before it was versioned, refuses a newer layout
in one line with the file untouched, and keeps its settings from shadowing its own names."""

import hashlib

import h5py
import numpy as np
import pytest

from latticeflow.mcmc.state import VERSION, ChainState

from conftest import refuse


def test_round_trip_and_legacy_arrays():
    state = ChainState(field=np.zeros((2, 3)), rng=np.arange(4, dtype=np.uint8), log_weight=np.ones(2),
                       observables={"plaquette": np.full(2, 0.5)}, settings={"hmc": np.frombuffer(b"{}", np.uint8)})
    arrays = state.to_arrays()
    assert sorted(arrays) == ["field", "hmc", "log_weight", "obs__plaquette", "rng", "state_version"]
    back = ChainState.from_arrays(arrays)
    assert back.version == VERSION and back.observables.keys() == {"plaquette"} and back.settings.keys() == {"hmc"}
    np.testing.assert_array_equal(back.field, state.field)
    legacy = {k: v for k, v in arrays.items() if k != "state_version"}  # a file of an earlier release
    assert ChainState.from_arrays(legacy).version == 1 and ChainState.from_arrays({}) is None
    with pytest.raises(ValueError, match="may not use the names"):
        ChainState(settings={"field": np.zeros(1)}).to_arrays()
    with pytest.raises(ValueError, match="newer latticeflow"):
        ChainState.from_arrays({"state_version": np.array(VERSION + 1)})


def test_a_state_of_a_newer_layout_is_refused_untouched(tmp_path, capsys):
    from latticeflow.cli import main

    model = tmp_path / "u1.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n[hmc]\nthermalization = 4\nchains = 2\n')
    assert main(["hmc", str(model), "-n", "8", "--out", str(tmp_path / "h.h5"), "--quiet"]) == 0
    capsys.readouterr()
    with h5py.File(tmp_path / "h.h5", "r+") as f:
        for slot in f["state"].values():
            if "state_version" in slot:
                slot["state_version"][()] = VERSION + 1
    digest = hashlib.sha256((tmp_path / "h.h5").read_bytes()).hexdigest()
    err = refuse(["hmc", model, "-n", 16, "--out", tmp_path / "h.h5", "--quiet"], capsys)
    assert "written by a newer latticeflow" in err
    assert hashlib.sha256((tmp_path / "h.h5").read_bytes()).hexdigest() == digest
