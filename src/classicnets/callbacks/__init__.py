"""Callbacks that plug into the Trainer: dashboards (confusion matrices, tables, galleries)."""

from classicnets.callbacks.dashboard import Dashboard, render_confusion_matrix, render_grid

__all__ = ["Dashboard", "render_confusion_matrix", "render_grid"]
