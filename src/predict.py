"""Classify images: `python src/predict.py ckpt_path=logs/.../last.ckpt input=photos/`.

Writes predictions.csv (file, top-k classes and probabilities) to the run directory.
"""

from classicnets.cli import predict_main

if __name__ == "__main__":
    predict_main()
