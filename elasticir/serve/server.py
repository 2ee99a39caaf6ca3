"""``elasticir serve`` as a library call: check a :class:`ServeConfig`, load the pipeline
once, settle its operating points, and run the HTTP app on uvicorn until a signal drains it.

Start-up order, so that a mistake costs no model load: the arguments, the index's files, the
points file and its choices, the port (bound, not yet listening); then the models, every
choice checked servable, the start-up profile when no points file was given; then uvicorn
listens. SIGTERM or SIGINT stops accepting, lets every in-flight and queued query be
answered, and returns (a second SIGINT forces the exit).
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from elasticir.data.errors import MissingResourceError
from elasticir.schedule.choices import RERANK_KINDS, Choice
from elasticir.schedule.points import OperatingPoints
from elasticir.schedule.policies import StaticPolicy, parse_schedule
from elasticir.serve.scheduled import ScheduledPipeline

__all__ = ["ServeConfig", "build_pipeline", "is_loopback", "open_socket", "serve"]

Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServeConfig:
    """What ``elasticir serve`` runs. ``rerank``: the reranker kinds to load (None: those the
    served choices use); ``points``: an ``elasticir profile`` file (None: a brief profile at
    start-up); ``choices``: the choices to serve (a subset of the points file's; without one,
    what is profiled); ``slo_ms`` None: :func:`~elasticir.serve.scheduled.default_slo`;
    ``threads``: torch's intra-op threads (None: torch's default)."""

    index: Path
    rerank: tuple[str, ...] | None = None
    points: Path | None = None
    choices: tuple[str, ...] = ()
    policy: str = "deadline"
    slo_ms: float | None = None
    max_batch: int = 16
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    shed: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    allow_remote: bool = False
    k_max: int = 1000
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "k_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("--threads must be at least 1")
        if self.max_wait_ms < 0:
            raise ValueError("--max-wait-ms must be >= 0")
        if self.slo_ms is not None and not self.slo_ms > 0:
            raise ValueError("--slo-ms must be positive")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535 (0: any free port), got {self.port}")
        unknown = [k for k in self.rerank or () if k not in RERANK_KINDS]
        if unknown:
            raise ValueError(
                f"--rerank: unknown stage(s) {', '.join(unknown)}; "
                f"expected {', '.join(RERANK_KINDS)}"
            )
        self.parsed_choices()  # ValueError naming a malformed choice
        parse_schedule(self.policy)  # ValueError naming a malformed policy
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host}: the server has no authentication, TLS or "
                "rate limits, so anyone who can reach the port can query it and fill its "
                "queue; listen on 127.0.0.1 (the default) behind a proxy, or pass "
                "--allow-remote to expose it deliberately"
            )

    def parsed_choices(self) -> list[Choice]:
        return list(dict.fromkeys(Choice.parse(c) for c in self.choices))

    @property
    def slo(self) -> float | None:
        return None if self.slo_ms is None else self.slo_ms / 1000


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (``localhost``, 127.x, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(f[4][0]).is_loopback for f in found)


def open_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one), not yet listening; a
    ``ValueError`` saying why when it cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as error:
        raise ValueError(f"--host {host}: cannot resolve it ({error})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def _check_index(index: Path) -> None:
    for name in ("index", "docid", "meta.json"):
        if not (index / name).is_file():
            raise MissingResourceError(
                f"{index}: not a dense index (missing {name}); build one with `elasticir index`"
            )


def _points_file(config: ServeConfig) -> OperatingPoints | None:
    """The points file, restricted to ``--choices``; None without one."""
    if config.points is None:
        return None
    points = OperatingPoints.load(config.points)
    wanted = config.parsed_choices()
    if wanted:
        missing = [str(c) for c in wanted if c not in points]
        if missing:
            raise ValueError(
                f"--choices: {', '.join(missing)} not in {config.points} (profiled: "
                + ", ".join(str(p.choice) for p in points.points)
                + ")"
            )
        points = points.subset(wanted)
    return points


def build_pipeline(config: ServeConfig, say: Say = _stderr) -> ScheduledPipeline:
    """Load the pipeline of ``config`` and bind its schedule (the worker not yet started)."""
    _check_index(Path(config.index))
    policy = parse_schedule(config.policy)
    static = policy.choice if isinstance(policy, StaticPolicy) else None
    points = _points_file(config)
    choices = [p.choice for p in points.points] if points else config.parsed_choices()
    if static is not None and choices and static not in choices:
        where = f"the points of {config.points}" if points else "--choices"
        raise ValueError(f"--policy {policy}: {static} is not among {where}")
    if static is not None and not choices:
        choices = [static]  # nothing else could be served: profile only it
    kinds = config.rerank
    if kinds is None:
        kinds = tuple(dict.fromkeys(c.rerank for c in choices if c.rerank))
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    from elasticir.schedule.executor import PipelineExecutor, default_choices

    say(f"loading {config.index}" + (f" with {', '.join(kinds)} reranking" if kinds else ""))
    executor = PipelineExecutor(config.index, rerank=kinds)
    if not choices:
        choices = default_choices(executor.levels, executor.kinds)
    for choice in choices:
        executor.check(choice)
    if points is None:
        from elasticir.schedule.profile import quick_profile

        points = quick_profile(executor, choices, say=say)
    else:
        say(
            f"operating points: {config.points} ({len(points)} choices, frontier "
            + ", ".join(str(p.choice) for p in points.frontier)
            + ")"
        )
    pipeline = ScheduledPipeline(
        executor,
        points,
        policy,
        config.slo,
        max_batch=config.max_batch,
        max_wait=config.max_wait_ms / 1000,
        max_queue=config.max_queue,
        shed=config.shed,
        start=False,
    )
    if config.slo_ms is None:
        top = pipeline.choices[-1]
        say(
            f"SLO {pipeline.slo * 1000:g} ms (by default 4x the "
            f"{points[top].cost.predict(1) * 1000:.1f} ms predicted for {top} alone; "
            "set it with --slo-ms)"
        )
    return pipeline


def settle_heap() -> None:
    """Move everything loaded so far (models, tokenizer, index) out of the garbage
    collector's reach. A loaded pipeline holds some 400,000 tracked objects, and each full
    collection walked them all: ~90 ms with the server's core stopped, which under load
    queued ~60 requests at once and made them late. Frozen, they are never scanned again;
    what requests allocate is collected as before."""
    gc.collect()
    gc.freeze()


def _uvicorn_server(settings: Any, app: Any, pipeline: ScheduledPipeline, say: Say) -> Any:
    """uvicorn's server, telling the app when a signal starts the drain, saying where it
    listens once it does, and returning normally after a signalled, graceful stop (uvicorn
    itself re-raises the signal after shutdown, which would end the process by it)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                app.state.draining = True
                say(
                    f"stopping: answering the {pipeline.queue_length} queued and every "
                    "in-flight query first (Ctrl-C again to force)"
                )
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            for sock in sockets or []:
                host, port = sock.getsockname()[:2]
                host = f"[{host}]" if ":" in host else host
                say(
                    f"listening on http://{host}:{port} (POST /search, GET /metrics, "
                    "GET /healthz); SIGTERM or Ctrl-C drains and stops"
                )

    return Server(settings)


def serve(config: ServeConfig, say: Say = _stderr) -> None:
    """Run the server of ``config`` until a signal drains and stops it."""
    import uvicorn

    from elasticir.serve.app import create_app

    _check_index(Path(config.index))
    _points_file(config)  # a bad points file or choice fails before the port and the models
    sock = open_socket(config.host, config.port)
    try:
        pipeline = build_pipeline(config, say)
        settle_heap()
        app = create_app(pipeline, k_max=config.k_max)
        served = pipeline.choices
        unused = [str(p.choice) for p in pipeline.scheduler.points.points if p.choice not in served]
        say(
            f"policy {pipeline.policy}, choices {', '.join(str(c) for c in served)}"
            + (f" (never picked: {', '.join(unused)})" if unused else "")
            + f", max batch {config.max_batch}, max wait {config.max_wait_ms:g} ms, "
            f"queue {config.max_queue}" + (", shedding" if config.shed else "")
        )
        settings = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", server_header=False
        )
        server = _uvicorn_server(settings, app, pipeline, say)
        server.run(sockets=[sock])
    finally:
        sock.close()
    counts = pipeline.scheduler.counts
    refused = int(sum(pipeline.metrics.rejected.value(r) for r in ("queue_full", "shed")))
    answered = counts["served"]
    say(
        f"stopped: {answered} quer{'y' if answered == 1 else 'ies'} answered "
        f"({counts['late']} late), {refused} refused"
    )
