# RSD server image: TensorRT-LLM 1.2.1 (the last release line with the TensorRT-engine backend),
# Triton 26.07 with the tensorrtllm and python backends, plus this project.
# Build:  docker build -t rsd-trtllm .
# The base image already ships torch, tensorrt_llm, numpy<2 and transformers: the project is
# installed with --no-deps so pip never replaces them.
FROM nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3

WORKDIR /opt/rsd
COPY pyproject.toml ./
COPY runtime ./runtime
COPY build_engines ./build_engines
COPY configs ./configs
# rsd serve renders the model repository from these templates, and the BLS reads the pipeline's
# tokenizers (configs/default.yaml points at models/embedded; mount others and pass --pipeline)
COPY triton_repo ./triton_repo
COPY models ./models

RUN python3 -m pip install --no-cache-dir --no-deps -e . \
 && (python3 -c "import yaml, tqdm" 2>/dev/null \
     || python3 -m pip install --no-cache-dir "pyyaml>=6" "tqdm>=4.60") \
 && python3 -c "import build_engines.cli"

# Engines are built at run time on the GPU they will serve on (they are GPU-arch specific):
#   docker run --rm -it --gpus all --shm-size=2g --ulimit memlock=-1 --ulimit stack=67108864 \
#     -v /data/models:/models -v /data/engines:/engines rsd-trtllm \
#     python3 -m build_engines --config configs/engines/qwen25-math-1.5b-7b-skywork.yaml \
#       --models-root /models --output-root /engines/qwen25-math-1.5b-7b-skywork
