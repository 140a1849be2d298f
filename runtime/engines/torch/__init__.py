"""PyTorch (Hugging Face transformers) engine: any local causal LM as draft or target, PRM adapters,
per-request KV caches reused across steps, and in-flight batching of concurrent requests."""
