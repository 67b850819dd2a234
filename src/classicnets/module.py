"""The documented import path of the LightningModule (``from classicnets.module import
ImageClassifier``); it lives in :mod:`classicnets.training.module`."""

from classicnets.training.module import ImageClassifier

__all__ = ["ImageClassifier"]
