"""Export a model to TorchScript and ONNX with its spec inside, atomically, behind a parity gate."""
