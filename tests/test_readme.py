"""The README and the docs stay true: the fresh-machine commands, the generated model pages,
the links between pages, and the site build (``mkdocs build --strict``)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from classicnets.models import get_model_info, list_models
from classicnets.models.table import DOCS_DIR, render_pages, stale_pages

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 200
MAX_PROSE_WIDTH = 120


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links inside them are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`+[^`\n]*`+", "", text)


def _slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading; GitHub's agrees for ours."""
    text = re.sub(r"[`*]", "", heading).strip()
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


def test_readme_states_the_ci_test_command() -> None:
    blocks = _bash_blocks(README.read_text())
    install, tests = blocks[0], blocks[1]
    assert install.endswith("python src/train.py") and "pip install" in install
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci, "the README's test command must be what .ci/run runs"


def test_getting_started_installs_as_the_readme_does() -> None:
    install = _bash_blocks(README.read_text())[0]
    assert install in _bash_blocks((DOCS / "getting-started.md").read_text()), (
        "docs/getting-started.md#install must show the README's install command")


def test_readme_is_a_landing_page() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move the detail to docs/")


def test_relative_links_resolve() -> None:
    broken = []
    for page in _pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)}: {target}"
            if not file.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{where} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_prose_lines_are_short() -> None:
    long = []
    for page in _pages():
        fence = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                fence = not fence
            elif not fence and not line.startswith("|") and len(line) > MAX_PROSE_WIDTH:
                long.append(f"{page.relative_to(REPO)}:{number} ({len(line)} characters)")
    assert not long, "prose lines over 120 characters (tables and code may be longer):\n" + (
        "\n".join(long))


def _nav_pages(node: object) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(_nav_pages(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_nav_pages(v) for v in node))
    return set()


def test_every_page_is_in_the_nav() -> None:
    nav = _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == nav, (f"not in mkdocs.yml's nav: {sorted(pages - nav)}; "
                          f"in the nav but missing: {sorted(nav - pages)}")


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


def test_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: every link and anchor resolves, every page is in the nav, and
    the API pages' directives find their objects (a few seconds)."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
