"""ONNX export, verification and onnxruntime inference."""
