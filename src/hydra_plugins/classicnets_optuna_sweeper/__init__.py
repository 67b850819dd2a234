"""classicnets' Optuna sweeper, on current Optuna: each trial's job in ``<sweep dir>/<trial
number>`` (``conf/hydra/sweeper/study.yaml``, used by ``conf/hparams_search/*.yaml``)."""
