"""Engine-agnostic core: the step loop, the methods and their rules.

Imports no torch, TensorRT-LLM or Triton (a test blocks them and imports this package).
"""
