"""The README and the docs stay true: the fresh-machine commands and the generated model pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from classicnets.models import get_model_info, list_models
from classicnets.models.table import DOCS_DIR, render_pages, stale_pages

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_states_the_ci_test_command() -> None:
    blocks = _bash_blocks(README.read_text())
    install, tests = blocks[0], blocks[1]
    assert install.endswith("python src/train.py") and "pip install" in install
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci, "the README's test command must be what .ci/run runs"


def test_model_pages_cover_the_registry() -> None:
    """Quick: every registered network has its section on its family's page and a row in the
    index, and there is no page for a family that does not exist (the figures: below)."""
    families = {get_model_info(n).family for n in list_models()}
    assert {p.stem for p in DOCS_DIR.glob("*.md")} == families | {"index"}, (
        "run `python -m classicnets.models.table --write`")
    index = (DOCS_DIR / "index.md").read_text()
    for name in list_models():
        page = (DOCS_DIR / f"{get_model_info(name).family}.md").read_text()
        assert f"\n## `{name}`\n" in page and f"| `{name}` |" in index, (
            f"{name} is not on the model pages: run `python -m classicnets.models.table --write`")


@pytest.mark.slow
def test_model_pages_are_current() -> None:
    """The generated pages equal what the registry gives now (every figure recomputed)."""
    stale = stale_pages(render_pages())
    assert not stale, (f"stale model pages {stale}: run "
                       f"`python -m classicnets.models.table --write`")


