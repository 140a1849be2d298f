"""TensorRT-LLM engine builds for the RSD server: draft, target and PRM engines per GPU arch.

Pure planning (`config`, `yaml_config`, `quant`, `plan`) is separate from execution (`executor`).
Importing this package needs neither torch nor tensorrt_llm; `trtllm_models/` is loaded only by
trtllm-build inside the TensorRT-LLM container (--model_cls_file).
"""
