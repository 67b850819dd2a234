"""The README stays true: its model table and its two fresh-machine commands."""

from __future__ import annotations

import re
from pathlib import Path

from classicnets.models.table import README, render_readme

REPO = Path(__file__).resolve().parents[1]


def test_model_table_is_current() -> None:
    text = README.read_text()
    assert render_readme(text) == text, (
        "README model table is stale: run `python -m classicnets.models.table --write`")


def test_readme_states_the_ci_test_command() -> None:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    install, tests = blocks[0].strip(), blocks[1].strip()
    assert install.endswith("python src/train.py") and "pip install" in install
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci, "the README's test command must be what .ci/run runs"
