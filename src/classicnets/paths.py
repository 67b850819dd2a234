"""Where the repository and its configs are: the one module every layer may import for them."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR", "REPO_ROOT"]

# src/classicnets/paths.py -> the repository (an editable install keeps this layout)
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "conf"
