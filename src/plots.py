"""Redraw the plots of runs or sweeps: `python src/plots.py logs/train/runs/<time>`."""

from classicnets.cli import plots_main

if __name__ == "__main__":
    raise SystemExit(plots_main())
