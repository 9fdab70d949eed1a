"""Training of VQ-VAEs with KSOM / EMA-VQ codebooks: ``kohonen-vq train`` and ``kohonen-vq demo``.

    from kohonen_vq.train import resolve, train
    result = train(resolve({"preset": "samples-vqvae", "quantizer": "ksom", "max_steps": 2000}))
    result.summary["best_val_loss"]
"""
from .checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint, save_checkpoint
from .config import PRESETS, TrainConfig, resolve, resume_config
from .run_folder import steps_to_within, summarize
from .trainer import RunResult, TrainingInterrupted, train, train_step

__all__ = ["CheckpointError", "CheckpointWriteError", "PRESETS", "RunResult", "TrainConfig", "TrainingInterrupted", "load_checkpoint",
           "resolve", "resume_config", "save_checkpoint", "steps_to_within", "summarize", "train", "train_step"]
