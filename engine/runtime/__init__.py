"""Exported-model runtimes (ONNX Runtime, TensorRT) and their artifact cache. Torch-free."""
