"""Training, evaluation and inference: the engine that joins the model and the data.

    cfg = load_config("synthetic_cpu", ["data.train=...", "model.pretrained=..."])
    result = train(cfg)                       # -> TrainResult (history, checkpoints, metrics)
    metrics = evaluate_checkpoint(result.best_checkpoint, split="val")
    top = predict(["clip.mp4"], checkpoint=result.best_checkpoint)
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


def __getattr__(name: str):
    # Prediction lives in aim_video.predictor, which builds on the engine: imported on use.
    if name in ("Prediction", "predict"):
        from aim_video import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError", "EvalConfig", "EvalResult", "ModelConfig", "OptimConfig", "Prediction",
    "RandomBackboneError", "RunConfig", "TrainConfig", "TrainResult", "config_from_dict",
    "config_to_dict", "evaluate_checkpoint", "evaluate_model", "load_config", "predict",
    "preset_names", "read_training_checkpoint", "save_config", "train",
]
