"""Training and evaluation: the engine that joins the model and the data.

    cfg = load_config("synthetic_cpu", ["data.train=...", "model.pretrained=..."])
    result = train(cfg)                       # -> TrainResult (history, checkpoints, metrics)
    metrics = evaluate_checkpoint(result.best_checkpoint, split="val")  # -> EvalResult

Predicting with a trained model is `aim_video.Predictor.from_checkpoint(...)`, which builds on
the engine; the engine depends on neither the predictor nor the report.
"""

from aim_video.engine.checkpoint import RandomBackboneError, read_training_checkpoint
from aim_video.engine.config import (
    ConfigError,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    preset_names,
    save_config,
)
from aim_video.engine.evaluate import EvalResult, evaluate_checkpoint, evaluate_model
from aim_video.engine.train import TrainResult, train

__all__ = [
    "ConfigError", "EvalConfig", "EvalResult", "ModelConfig", "OptimConfig",
    "RandomBackboneError", "RunConfig", "TrainConfig", "TrainResult", "config_from_dict",
    "config_to_dict", "evaluate_checkpoint", "evaluate_model", "load_config",
    "preset_names", "read_training_checkpoint", "save_config", "train",
]
