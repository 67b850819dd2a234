"""classicnets' Hydra launcher: a multirun's jobs several at once on one machine
(``hydra/launcher=parallel``, configured in ``conf/hydra/launcher/parallel.yaml``)."""
