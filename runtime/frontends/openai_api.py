"""An OpenAI-compatible HTTP front (FastAPI + uvicorn) for the `rsd` model of a running Triton server.

    python -m runtime.frontends.openai_api --triton 127.0.0.1:8001 --port 9000 [--pipeline FILE]

Endpoints: GET /health (200 when Triton and the model are ready, else 503), GET /v1/models,
GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions. Each request is one gRPC
stream to the `rsd` model (`runtime.frontends.triton_backend`); with `"stream": true` every decided
step is one SSE chunk, whose `rsd` field holds the step's source and reward (the last chunk also
the request's stats). Errors are OpenAI's JSON with 400 (invalid arguments, including the
server's own validation), 404 (unknown model or path), 503 (Triton unavailable, a sub-model
failed; with `Retry-After` when the server was full and did not start the request) or 500. Token counts in `usage` use the pipeline's tokenizer and prompt template (the ones
the BLS uses); completion tokens are the server's count unless a stop string cut the text.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.frontends.openai_protocol import (
    FINISH,
    ChatRequest,
    CompletionRequest,
    Generation,
    HealthBody,
    ModelCard,
    ModelList,
    OpenAIError,
    ResponseIds,
    StopTail,
    chat_question,
    chunk_body,
    completion_question,
    error_responses,
    generation,
    response_body,
    usage,
    usage_chunk,
)
from runtime.frontends.triton_backend import BackendError, RsdBackend, StepReply, tensor_names

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """Counts tokens as the BLS does: the question in the pipeline's prompt template, with the
    tokenizer's own special tokens; output text without them."""

    encode_prompt: Callable[[str], list[int]]
    encode: Callable[[str], list[int]]
    template: str

    @classmethod
    def from_pipeline(cls, path: str | Path | None) -> TokenCounter:
        from runtime.config import load_config
        from runtime.engines.hf import check_folder, load_tokenizer

        cfg = load_config(path)
        model = cfg.target or cfg.draft
        assert model is not None, "PipelineConfig requires a draft or a target"
        tok = load_tokenizer(check_folder(model.folder, "models.target.path"), "models.target.path")
        return cls(tok.encode_prompt, tok.encode, cfg.prompt_template)

    def prompt(self, question: str) -> int:
        return len(self.encode_prompt(self.template.replace("{question}", question)))

    def text(self, text: str) -> int:
        return len(self.encode(text)) if text else 0


@dataclass(frozen=True, slots=True)
class Piece:
    """What the client gets for one step: the text after stop handling and the OpenAI finish reason."""

    text: str
    step: StepReply
    finish: str | None
    cut: bool = False  # a stop string ended the output here


async def pieces(backend: RsdBackend, gen: Generation) -> AsyncIterator[Piece]:
    """Steps with OpenAI's stop semantics: the server ends the output after a stop string, which
    is left out of what the client gets (StopTail)."""
    tail = StopTail(gen.stop)
    async for step in backend.stream(gen.question, gen.values):
        if step.finish_reason is not None:
            stopped = step.finish_reason == "stop" and bool(gen.stop)
            yield Piece(tail.finish(step.text, stopped), step, FINISH.get(step.finish_reason, "stop"), cut=stopped)
            return
        yield Piece(tail.feed(step.text), step, None)


def step_extension(piece: Piece) -> dict[str, Any]:
    ext: dict[str, Any] = {"source": piece.step.source, "reward": piece.step.reward}
    if piece.finish is not None:
        ext.update(finish_reason=piece.step.finish_reason or "stop", stats=piece.step.stats)
    return ext


@dataclass(slots=True)
class OpenAIFront:
    backend: RsdBackend
    model_name: str
    counter: TokenCounter
    api_key: str = ""  # clients must send `Authorization: Bearer KEY` ("" : open)

    async def serve(self, req: CompletionRequest | ChatRequest) -> Any:
        from fastapi.responses import JSONResponse, StreamingResponse

        if req.model != self.model_name:
            raise OpenAIError(404, f"model {req.model!r} does not exist; this server has {self.model_name!r}",
                              "model", "model_not_found")
        question = completion_question(req) if isinstance(req, CompletionRequest) else chat_question(req)
        spec = await _backend(self.backend.spec())
        gen = generation(req, question, spec.inputs, tensor_names())
        ids = ResponseIds("completion" if isinstance(req, CompletionRequest) else "chat", self.model_name)
        steps = pieces(self.backend, gen)
        try:
            first = await _backend(anext(steps))  # errors before the first step get their own status
        except OpenAIError:
            await steps.aclose()  # type: ignore[attr-defined]
            raise
        if gen.stream:
            return StreamingResponse(self._events(ids, gen, first, steps), media_type="text/event-stream")
        done = [first]
        if first.finish is None:
            done += [p async for p in _backend_iter(steps)]
        await steps.aclose()  # type: ignore[attr-defined]
        text = "".join(p.text for p in done)
        ext = {"steps": [{"text": p.step.text, "source": p.step.source, "reward": p.step.reward} for p in done],
               "finish_reason": done[-1].step.finish_reason or "stop", "stats": done[-1].step.stats}
        return JSONResponse(response_body(ids, text, done[-1].finish or "stop", self._usage(gen, done), ext))

    async def _events(self, ids: ResponseIds, gen: Generation, first: Piece,
                      rest: AsyncIterator[Piece]) -> AsyncIterator[str]:
        done = [first]
        try:
            yield _sse(chunk_body(ids, first.text, True, first.finish, step_extension(first)))
            if first.finish is None:
                async for piece in _backend_iter(rest):
                    done.append(piece)
                    yield _sse(chunk_body(ids, piece.text, False, piece.finish, step_extension(piece)))
            if gen.include_usage:
                yield _sse(usage_chunk(ids, self._usage(gen, done)))
        except OpenAIError as exc:  # the status line is sent: the error goes in the stream
            yield _sse(exc.body())
        finally:
            await rest.aclose()  # type: ignore[attr-defined]  # a client that left cancels the request
        yield "data: [DONE]\n\n"

    def _usage(self, gen: Generation, done: list[Piece]) -> dict[str, int]:
        last = done[-1]
        served = (last.step.stats or {}).get("tokens")
        completion = served if isinstance(served, int) and not last.cut else self.counter.text("".join(p.text for p in done))
        return usage(self.counter.prompt(gen.question), completion)


async def _backend(awaitable: Any) -> Any:
    try:
        return await awaitable
    except BackendError as exc:
        raise OpenAIError(exc.status, str(exc), exc.param, "overloaded" if exc.retry_after_s else None,
                          exc.retry_after_s) from None
    except StopAsyncIteration:
        raise OpenAIError(503, "the model ended the request without a step") from None


async def _backend_iter(steps: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    try:
        async for piece in steps:
            yield piece
    except BackendError as exc:
        raise OpenAIError(exc.status, str(exc), exc.param) from None
    finally:
        await steps.aclose()  # type: ignore[attr-defined]  # cancels the server request if left early


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


def create_app(front: OpenAIFront) -> Any:
    """The FastAPI application (the routes are thin: OpenAIFront does the work)."""
    import time

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="rsd-serve OpenAI-compatible API")
    created = int(time.time())

    def error(exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    if front.api_key:
        @app.middleware("http")
        async def _authorize(request: Request, call_next: Any) -> Any:
            """`Authorization: Bearer KEY` on /v1/* (as vLLM's and trtllm-serve's --api-key); /health open."""
            if request.url.path.startswith("/v1") and request.headers.get("authorization") != f"Bearer {front.api_key}":
                return error(OpenAIError(401, "Incorrect API key provided: send 'Authorization: Bearer <key>'",
                                         code="invalid_api_key"))
            return await call_next(request)

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(OpenAIError(400, f"{param or 'body'}: {first.get('msg', 'invalid request')}", param))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        response = error(OpenAIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None))
        response.headers.update(exc.headers or {})  # e.g. a 405's Allow (RFC 9110)
        return response

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with the one model id this front serves as the only valid `model`."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version="1", routes=app.routes)
            for name in ("CompletionRequest", "ChatRequest"):
                schema["components"]["schemas"][name]["properties"]["model"]["enum"] = [front.model_name]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", response_model=HealthBody, responses=error_responses(503))
    async def health() -> Any:
        if await front.backend.ready():
            return JSONResponse({"status": "ok"})
        return error(OpenAIError(503, f"the Triton server at {front.backend.url} or its model "
                                 f"{front.backend.model!r} is not ready"))

    def card() -> ModelCard:
        return ModelCard(id=front.model_name, created=created, owned_by="rsd-serve")

    keyed = (401,) if front.api_key else ()

    @app.get("/v1/models", response_model=ModelList, responses=error_responses(*keyed))
    async def models() -> ModelList:
        return ModelList(data=[card()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=error_responses(404, *keyed))
    async def model(model_id: str) -> ModelCard:
        if model_id != front.model_name:
            raise OpenAIError(404, f"model {model_id!r} does not exist", "model", "model_not_found")
        return card()

    generated = {200: {"description": "the completion (JSON), or its chunks as server-sent events (stream)",
                       "content": {"application/json": {}, "text/event-stream": {}}},
                 **error_responses(400, 404, 500, 503, *keyed)}

    @app.post("/v1/completions", response_model=None, responses=generated)
    async def completions(req: CompletionRequest) -> Any:
        return await front.serve(req)

    @app.post("/v1/chat/completions", response_model=None, responses=generated)
    async def chat(req: ChatRequest) -> Any:
        return await front.serve(req)

    return app


def build_front(triton_grpc_url: str, model_name: str = "rsd", pipeline_config: str | Path | None = None,
                triton_model: str = "rsd", timeout_s: float = 300.0, api_key: str = "") -> OpenAIFront:
    """`api_key`: clients must send it (Bearer), and Triton's inference is keyed with it too."""
    return OpenAIFront(RsdBackend(triton_grpc_url, triton_model, timeout_s, api_key), model_name,
                       TokenCounter.from_pipeline(pipeline_config), api_key)


def run(triton_grpc_url: str, host: str = "127.0.0.1", port: int = 9000, model_name: str = "rsd",
        pipeline_config: str | Path | None = None, triton_model: str = "rsd", timeout_s: float = 300.0,
        log_level: str = "info", api_key: str = "") -> None:
    """Serve until SIGINT/SIGTERM (blocking). `pipeline_config`: the server's pipeline YAML (its
    tokenizer and template count usage tokens; None: the embedded default)."""
    import uvicorn

    app = create_app(build_front(triton_grpc_url, model_name, pipeline_config, triton_model, timeout_s, api_key))
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.frontends.openai_api", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--triton", default="127.0.0.1:8001", help="Triton gRPC endpoint host:port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on")
    parser.add_argument("--model-name", default="rsd", help="the model id clients ask for")
    parser.add_argument("--triton-model", default="rsd", help="the Triton model to call")
    parser.add_argument("--pipeline", default=None, help="pipeline YAML the server uses (default: the embedded one)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each step")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--api-key", default=os.environ.get("RSD_API_KEY", ""),
                        help="clients send 'Authorization: Bearer KEY' (default: $RSD_API_KEY; empty: open)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.triton, args.host, args.port, args.model_name, args.pipeline, args.triton_model, args.timeout,
        args.log_level, args.api_key)


if __name__ == "__main__":
    main()
