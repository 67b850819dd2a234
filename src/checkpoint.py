"""Check checkpoint files or re-save trusted ones with plain values:
`python src/checkpoint.py check <file>`, `python src/checkpoint.py resave <file>`."""

from classicnets.cli import checkpoint_main

if __name__ == "__main__":
    raise SystemExit(checkpoint_main())
