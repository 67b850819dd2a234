"""Train a network: `python src/train.py model=resnet18 data=cifar10 trainer=gpu`.

Hydra composes `conf/train.yaml` (its config groups: docs/training/config-groups.md). Returns
the metric named by `optimized_metric` so Hydra sweepers can optimise it.
"""

from classicnets.cli import train_main

if __name__ == "__main__":
    train_main()
