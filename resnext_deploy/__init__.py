"""resnext-deploy: take trained ResNeXt classifiers to TorchScript and ONNX, prove parity, run
them on onnxruntime (CPU or CUDA, never a silent fallback) and benchmark every backend.

Importing this package is cheap and does not import torch; the public API lives in
:mod:`resnext_deploy.api`.
"""

__version__ = "0.1.0"
