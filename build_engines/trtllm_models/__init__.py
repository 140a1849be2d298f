"""Custom TensorRT-LLM model classes, passed to trtllm-build with --model_cls_file.

Do not import `prm_heads` from library code: it needs tensorrt_llm and runs only in the container.
"""
