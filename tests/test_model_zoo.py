"""Every shipped model file parses, and its weights (where shipped) load into its flow."""

from pathlib import Path

import pytest

from latticeflow.config import load_config
from latticeflow.training import load_flow
from latticeflow.training.run_files import training_seconds

MODELS = Path(__file__).resolve().parents[1] / "models"
FILES = sorted(MODELS.glob("*.toml"))


def test_the_zoo_is_there():
    assert len(FILES) > 30


@pytest.mark.parametrize("model", FILES, ids=[f.stem for f in FILES])
def test_a_shipped_model_parses_and_loads_its_weights(model):
    cfg = load_config(model)
    weights = model.with_suffix(".pt")
    if cfg.flow is None or not weights.exists():
        return
    flow = load_flow(weights, cfg)
    assert sum(p.numel() for p in flow.parameters()) > 0
    seconds = training_seconds(weights)
    assert seconds is None or seconds > 0


def test_the_l16_schwinger_study_models_record_their_training():
    """The models of the L = 16 study's best flow-based samplers: `latticeflow run` counts
    the training their weights record."""
    for stem in ("schwinger_L16_b2_k0.26", "flow_jump_schwinger_L16_b4_k0.255", "flow_jump_schwinger_L16_b6_k0.24"):
        assert training_seconds(MODELS / f"{stem}.pt") > 0, stem
