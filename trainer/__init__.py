"""Swingup trainer: A2C on Pendulum-v1 (PyTorch, gymnasium), evaluation and ONNX export."""
