"""Test support: scripted fake engines, a fake TensorRT-LLM engine, server fixtures. Never shipped."""
