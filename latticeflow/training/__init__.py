"""Training flows by reverse KL: the loss (:mod:`.loss`), the loop with checkpoints and exact
resume (:mod:`.trainer`) and the files of a run directory and the model format
(:mod:`.run_files`)."""

from .loss import frozen_twin, kl_loss, learning_rate
from .run_files import (CHECKPOINT, CONFIG, EFFECTIVE_CONFIG, METRICS, MODEL, PLOT, load_flow,
                        read_metrics, run_config)
from .launch import train
from .trainer import MAX_BAD_STEPS, TrainResult, Trainer

__all__ = ["train", "TrainResult", "Trainer", "load_flow", "kl_loss", "learning_rate", "frozen_twin",
           "MAX_BAD_STEPS", "CHECKPOINT", "CONFIG", "EFFECTIVE_CONFIG", "METRICS", "MODEL", "PLOT",
           "read_metrics", "run_config"]
