"""The life of a run: config checks, preflight, loggers, the pipeline of train/eval, sweeps
and their plots."""
