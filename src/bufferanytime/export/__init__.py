"""Export of the models to other runtimes: ONNX (:mod:`bufferanytime.export.onnx`) for now.

A folder of its own, apart from ``models``: export depends on optional packages (``pip install
bufferanytime[onnx]``: onnx, onnxscript, onnxruntime) that no other part of the package imports, it turns a model
into files (with a description of their inputs and outputs) rather than defining one, and other formats (TensorRT
engines, Core ML) would live beside it.
"""

from bufferanytime.export.onnx import export_onnx

__all__ = ["export_onnx"]
