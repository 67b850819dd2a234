"""Export a checkpoint: `python src/export.py ckpt_path=logs/.../last.ckpt format=onnx`.

`format=onnx` or `format=torchscript`; dynamic batch axis, normalisation inside (see
docs/inference.md).
"""

from classicnets.cli import export_main

if __name__ == "__main__":
    export_main()
