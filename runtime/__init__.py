"""Reward-guided speculative decoding: engine-agnostic core, engines, pipeline and serving."""
