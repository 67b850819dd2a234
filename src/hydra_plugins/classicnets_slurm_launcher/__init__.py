"""classicnets' SLURM launchers: hydra-submitit-launcher's, with a cluster check and the job
shape taken from the trainer (``hydra/launcher=slurm`` and ``hydra/launcher=submitit_local``,
configured in ``conf/hydra/launcher/``)."""
