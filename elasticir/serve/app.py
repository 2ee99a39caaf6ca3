"""The HTTP application (Starlette) over a :class:`~elasticir.serve.scheduled.
ScheduledPipeline`: ``POST /search``, ``GET /metrics``, ``GET /healthz``.

The event loop only parses, waits and answers: every query goes to the pipeline's worker
thread through its scheduler, and the loop awaits the answers (see
:mod:`elasticir.serve.protocol` for the bodies). Every refusal is a JSON ``{"error": ...}``,
unknown paths and wrong methods included. The lifespan starts the worker; on shutdown (after
uvicorn has let in-flight requests finish) it drains the queue and stops the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from elasticir.serve.metrics import CONTENT_TYPE
from elasticir.serve.protocol import MAX_BODY, BadRequest, parse_search, results_json
from elasticir.serve.scheduled import Refused, ScheduledPipeline, SearchFailed

__all__ = ["create_app"]


def create_app(
    pipeline: ScheduledPipeline,
    *,
    k_max: int = 1000,
    max_body: int = MAX_BODY,
    max_queries: int | None = None,
) -> Starlette:
    """The app serving ``pipeline``; ``max_queries`` per request defaults to four batches."""
    if k_max < 1:
        raise ValueError(f"k_max must be at least 1, got {k_max}")
    limit = max_queries or pipeline.scheduler.max_batch * 4
    limit = min(limit, pipeline.scheduler.max_queue)  # more could never be queued at once

    async def search(request: Request) -> Response:
        if app.state.draining:
            return _error(
                503, "the server is shutting down", reason="stopping", headers={"Retry-After": "1"}
            )
        try:
            body = await _read_body(request, max_body)
            asked = parse_search(body, k_max=k_max, max_queries=limit)
            answers = await pipeline.asearch(asked.queries, asked.k)
        except BadRequest as error:
            return _error(error.status, str(error))
        except Refused as error:
            headers = {"Retry-After": str(error.retry_after)}
            return _error(503, str(error), reason=error.reason, headers=headers)
        except SearchFailed as error:
            return _error(500, str(error))
        return JSONResponse(results_json(asked.ids, answers))

    async def metrics(request: Request) -> Response:
        return Response(pipeline.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        state = pipeline.state  # starting, running, draining or stopped
        if state == "running" and app.state.draining:
            state = "draining"  # a signal came; uvicorn is letting requests finish
        body = {
            "status": "ok" if state == "running" else state,
            "policy": str(pipeline.policy),
            "slo_ms": round(pipeline.slo * 1000, 3),
            "choices": [str(c) for c in pipeline.choices],
            "queue_length": pipeline.queue_length,
        }
        return JSONResponse(body, status_code=200 if state == "running" else 503)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        message = {
            404: f"no such path {request.url.path}; the server answers POST /search, "
            "GET /metrics and GET /healthz",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(error.status_code, str(error.detail))
        return _error(error.status_code, message, headers=error.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pipeline.start()
        yield
        # uvicorn has waited for the requests in flight; answer whatever is still queued
        await asyncio.to_thread(pipeline.close)

    app = Starlette(
        routes=[
            Route("/search", search, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.draining = False  # set by the server when a signal asks it to stop
    app.add_middleware(_CountStatus, pipeline=pipeline)
    return app


def _error(
    status: int, message: str, *, reason: str | None = None, headers: Any = None
) -> JSONResponse:
    body = {"error": message} if reason is None else {"error": message, "reason": reason}
    return JSONResponse(body, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes: by its Content-Length before reading,
    and while reading (a chunked body names no length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest(400, f"bad Content-Length {declared!r}") from None
        if length > limit:
            raise BadRequest(413, f"the body is {length} bytes, over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class _CountStatus:
    """Counts every response by its status code (404s and 405s included)."""

    def __init__(self, app: ASGIApp, pipeline: ScheduledPipeline) -> None:
        self.app, self.counter = app, pipeline.metrics.http_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = False

        async def counting(message: Message) -> None:
            nonlocal sent
            if message["type"] == "http.response.start":
                sent = True
                self.counter.inc(str(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send=counting)
        except Exception:
            if not sent:  # Starlette's outermost middleware answers it with a 500
                self.counter.inc("500")
            raise
