"""Using a trained network: prediction on images and export (TorchScript, ONNX)."""
