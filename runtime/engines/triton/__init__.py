"""Engines for the Triton `rsd` BLS: the core Protocols implemented by calling sub-models.

Imports neither torch nor Triton: requests go through a `SubModelTransport` (in the server,
`runtime.in_server.host.PbTransport` over BLS; in tests, an in-process transport), and the
tensors follow `contract.py`, TensorRT-LLM's `tensorrt_llm` names for draft and target.
"""
