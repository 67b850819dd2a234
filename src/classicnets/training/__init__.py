"""Training: the generic LightningModule, its optimizers and schedules, fine-tuning and the
compiled step."""

from classicnets.training.module import ImageClassifier

__all__ = ["ImageClassifier"]
