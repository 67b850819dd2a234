"""Test a checkpoint: `python src/eval.py ckpt_path=logs/.../checkpoints/last.ckpt data=cifar10`."""

from classicnets.cli import eval_main

if __name__ == "__main__":
    eval_main()
