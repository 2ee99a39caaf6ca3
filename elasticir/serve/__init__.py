"""Serving the elastic schedule: in Python (:class:`ScheduledPipeline`) and over HTTP
(``elasticir serve``: :func:`serve`, :func:`create_app`).

``scheduled``: the worker thread and its scheduler; ``protocol``: the JSON bodies;
``metrics``: the Prometheus text; ``app``: the Starlette app; ``server``: the config, the
start-up and uvicorn. Importing this package loads neither torch nor the web stack.
"""

from __future__ import annotations

from elasticir.serve.scheduled import Answer, Hit, Refused, ScheduledPipeline, default_slo
from elasticir.serve.server import ServeConfig, build_pipeline, serve

__all__ = [
    "Answer",
    "Hit",
    "Refused",
    "ScheduledPipeline",
    "ServeConfig",
    "build_pipeline",
    "create_app",
    "default_slo",
    "serve",
]


def __getattr__(name: str) -> object:
    if name == "create_app":  # Starlette is imported only when the app is built
        from elasticir.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
