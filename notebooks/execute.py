"""Re-execute the notebooks top to bottom and save them with their outputs.

    python notebooks/execute.py                 # every notebook
    python notebooks/execute.py 03 05_sweeps    # those whose names start so

The notebooks are committed with their outputs, so their plots show where the repository is
browsed; this script is how those outputs are made. Each runs in a scratch directory (what it
writes, e.g. `nb_runs/`, stays out of the repository); a cell that raises stops the script
with the notebook's name and the cell, and the file is not overwritten.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent


def notebooks(prefixes: list[str] | None = None) -> list[Path]:
    """The notebooks in this folder whose names start with one of ``prefixes`` (all if none)."""
    found = sorted(HERE.glob("*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(s) for s in prefixes)]
    return found


def execute(path: Path, workdir: Path, timeout: int = 900) -> nbformat.NotebookNode:
    """Run ``path`` in ``workdir`` and return it with fresh outputs (the file is not written)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    args = parser.parse_args(argv)
    paths = notebooks(args.names)
    if not paths:
        names = ", ".join(p.name for p in notebooks())
        parser.error(f"no notebook starts with {' or '.join(args.names)}; there are: {names}")
    for path in paths:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="classicnets-nb-") as work:
            try:
                nb = execute(path, Path(work))
            except CellExecutionError as err:
                print(f"{path.name}: a cell failed, file left as it was\n{err}", file=sys.stderr)
                return 1
        nbformat.write(nb, path)
        print(f"{path.name}: executed and saved in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
