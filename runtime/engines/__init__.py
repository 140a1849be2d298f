"""Engines: the PyTorch reference engine, the Triton BLS adapters and the TensorRT-LLM adapter.

Heavy libraries are imported inside these subpackages only; `runtime.core` never imports them.
"""
