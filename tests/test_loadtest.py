"""``elasticir loadtest`` against a small test server that keeps the serving contract.

The server (Starlette on uvicorn, in a thread, on 127.0.0.1) serves one request at a time
(5 ms each) and can be told to stall on a query, refuse queries with 503, answer 400, or
close its connection after every answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from elasticir.cli.app import app
from typer.testing import CliRunner

from elasticir.data.records import Query
from elasticir.loadtest import ServerAddress, run_closed, run_open
from elasticir.loadtest.runner import LoadTestConfig, check, score_records
from elasticir.schedule.quality import ranking_quality
from elasticir.schedule.report import read_records

uvicorn = pytest.importorskip("uvicorn", reason="the test server runs on uvicorn")
starlette = pytest.importorskip("starlette", reason="the test server is a Starlette app")

runner = CliRunner()
SERVICE_S = 0.005
SLO_MS = 200


@dataclass
class Behaviour:
    """What the test server does; tests change it and :meth:`reset` puts it back."""

    stall: dict[str, float] = field(default_factory=dict)  # qid -> seconds of service
    reject: set[str] = field(default_factory=set)  # qids answered 503
    bad: set[str] = field(default_factory=set)  # qids answered 400
    close: bool = False  # Connection: close after every answer
    health: str = "ok"  # /healthz's status; anything else answers 503
    requests: int = 0
    waiting: int = 0
    lock: asyncio.Lock | None = None

    def reset(self) -> None:
        self.stall, self.reject, self.bad, self.close, self.requests = {}, set(), set(), False, 0
        self.health = "ok"


def make_app(state: Behaviour):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def search(request: Request) -> JSONResponse:
        state.requests += 1
        payload = await request.json()
        qid, k = payload["id"], payload.get("k", 10)
        if qid in state.reject:
            return JSONResponse(
                {"error": "queue full", "reason": "queue full"}, 503, headers={"Retry-After": "1"}
            )
        if qid in state.bad or not isinstance(k, int) or k < 1:
            return JSONResponse({"error": "bad request"}, 400)
        state.lock = state.lock or asyncio.Lock()
        state.waiting += 1
        queue_length = state.waiting
        async with state.lock:  # one at a time: a stall holds up everything behind it
            state.waiting -= 1
            await asyncio.sleep(state.stall.get(qid, SERVICE_S))
        hits = [{"doc_id": f"{qid}-d{i}", "score": 1.0 - i / 100, "rank": i + 1} for i in range(k)]
        result = {
            "id": qid,
            "hits": hits,
            "choice": "full>ranker%20" if queue_length <= 1 else "L4",
            "late": False,
            "timings": {
                "queue_ms": 0.0,
                "service_ms": 5.0,
                "total_ms": 5.0,
                "batch_size": 1,
                "queue_length": queue_length,
            },
        }
        headers = {"Connection": "close"} if state.close else None
        return JSONResponse({"results": [result]}, headers=headers)

    async def healthz(request: Request) -> JSONResponse:
        body = {
            "status": state.health,
            "policy": "queue",
            "slo_ms": SLO_MS,
            "choices": ["L4", "full>ranker%20"],
            "queue_length": state.waiting,
        }
        return JSONResponse(body, 200 if state.health == "ok" else 503)

    routes = [Route("/search", search, methods=["POST"]), Route("/healthz", healthz)]
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Behaviour]]:
    state = Behaviour()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        make_app(state),
        log_config=None,
        log_level="error",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=1,
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", state
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def live(server) -> Iterator[tuple[str, Behaviour]]:
    """The module's server, idle (no stall of an earlier test still holding it) and reset."""
    url, state = server
    deadline = time.monotonic() + 10
    while state.waiting or (state.lock is not None and state.lock.locked()):
        assert time.monotonic() < deadline, "the test server stays busy"
        time.sleep(0.02)
    state.reset()
    yield url, state
    state.reset()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"q{i}\tquery number {i}\n" for i in range(8)), encoding="utf-8")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(
        "".join(f"q{i} 0 q{i}-d{i % 3} {1 + i % 2}\n" for i in range(6)), encoding="utf-8"
    )
    return {"topics": topics, "qrels": qrels}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def queries(n: int, stall_at: int | None = None) -> list[Query]:
    return [Query("stall" if i == stall_at else f"q{i}", f"query {i}") for i in range(n)]


# -- open loop, measured from the intended time --------------------------------------------


def test_open_loop_latency_counts_from_the_intended_send_time(live) -> None:
    url, state = live
    state.stall = {"stall": 0.5}
    address = ServerAddress.parse(url)
    arrivals = np.arange(40) * 0.05  # one every 50 ms; request 5 stalls the server 0.5 s
    run = run_open(address, queries(40, stall_at=5), arrivals, duration=2.0, timeout=5.0)
    records = run.records
    assert [r.id for r in records] == list(range(40)) and all(r.status == "ok" for r in records)
    stall_end = records[5].intended + 0.5
    waited = [r for r in records if records[5].intended < r.intended < stall_end - 0.05]
    assert len(waited) >= 8
    for r in waited:  # each one's latency includes its wait behind the stall
        assert r.latency >= stall_end - r.intended - 0.03, (r.id, r.intended, r.latency)
    assert all(abs(r.intended - t) < 1e-9 for r, t in zip(records, arrivals))
    # the server's own total (5 ms in every answer) is kept beside the client's latency
    assert all(r.server_latency == pytest.approx(0.005) for r in records)
    open_slow = sum(r.latency > 0.1 for r in records)

    # the naive closed loop hides the stall: one client waits, so nothing queues behind it
    closed = run_closed(address, queries(20, stall_at=5), [1], duration=1.5, timeout=5.0)
    closed_slow = sum(r.latency > 0.1 for r in closed.records if r.latency is not None)
    assert closed_slow <= 3 < open_slow
    assert closed.levels[0][0] == 1


def test_a_late_send_counts_too(live) -> None:
    """With one connection, requests wait for it: their send lag is part of their latency."""
    url, state = live
    state.stall = {"stall": 0.4}
    arrivals = np.arange(12) * 0.05
    shown: list = []
    run = run_open(
        ServerAddress.parse(url),
        queries(12, stall_at=2),
        arrivals,
        duration=1.0,
        max_connections=1,
        progress=shown.append,
        progress_every=0.1,
    )
    assert len(shown) >= 3 and (shown[-1].sent, shown[-1].answered) == (12, 12)
    assert shown[-1].total == 12 and shown[-1].p95_ms > 100  # the wait behind the stall
    # sent at 0.15 to 0.35 s, behind the stall (0.1 s + 0.4 s): each at least 0.15 s late
    behind = [r for r in run.records if 0.14 < r.intended < 0.36]
    assert behind and all(r.send_lag > 0.1 for r in behind)
    assert all(r.latency >= r.send_lag for r in run.records)
    assert run.generator["waited_for_a_connection"] >= len(behind)
    assert run.generator["connections_opened"] == 1


def test_refusals_errors_timeouts_and_closed_connections(live) -> None:
    url, state = live
    state.reject, state.bad, state.stall, state.close = {"q1"}, {"q2"}, {"stall": 1.0}, True
    run = run_open(  # the stalled query comes last: nothing queues behind it
        ServerAddress.parse(url),
        queries(6, stall_at=5),
        np.arange(6) * 0.03,
        duration=1.0,
        timeout=0.3,
    )
    by_qid: dict[str, set[str]] = {}
    for r in run.records:
        by_qid.setdefault(r.qid, set()).add(r.status)
    assert by_qid["q1"] == {"rejected"} and by_qid["q2"] == {"error"}
    timeouts = [r for r in run.records if r.qid == "stall"]
    assert all(r.status == "error" and r.latency is None for r in timeouts)
    assert "no answer within 0.3 s" in timeouts[0].error
    rejected = next(r for r in run.records if r.qid == "q1")
    assert "queue full" in rejected.error and rejected.latency is not None
    assert {"ok"} == by_qid["q0"] == by_qid["q3"] == by_qid["q4"]
    assert run.generator["connections_opened"] >= 4  # every answer closed its connection


def test_a_kept_alive_connection_the_server_closed_is_replaced(live) -> None:
    url, _ = live  # the server drops idle connections after 1 s
    run = run_open(ServerAddress.parse(url), queries(2), np.asarray([0.0, 1.6]), duration=2.0)
    assert [r.status for r in run.records] == ["ok", "ok"]
    assert run.generator["connections_opened"] == 2


def test_ctrl_c_stops_sending_and_keeps_what_was_sent(live, files, tmp_path) -> None:
    url, state = live
    stop = threading.Event()

    def press_ctrl_c() -> None:  # once the run is under way: sending has begun
        deadline = time.monotonic() + 20
        while state.requests < 5 and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.02)
        if not stop.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    try:
        out = tmp_path / "stopped"
        result = invoke(
            "loadtest",
            url,
            "--rate",
            20,
            "--duration",
            30,
            "--topics",
            files["topics"],
            "-o",
            out,
        )
    finally:
        stop.set()
        presser.join(5)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "summary.json").read_text())
    assert payload["meta"]["interrupted"] is True
    assert 0.1 < payload["meta"]["measured_s"] < 10
    assert 5 <= payload["summary"]["count"] < 200
    assert payload["summary"]["duration_s"] == payload["meta"]["measured_s"]
    assert "interrupted" in (out / "summary.md").read_text()


# -- the command ---------------------------------------------------------------------------


def test_command_end_to_end_with_qrels(live, files, tmp_path) -> None:
    url, state = live
    out = tmp_path / "run"
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    result = invoke(
        "loadtest",
        url,
        "--trace",
        "step:low=0.5,high=3",
        "--rate",
        20,
        "--duration",
        1.5,
        "--topics",
        files["topics"],
        "--qrels",
        files["qrels"],
        "--cpu",
        cpu,
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert os.sched_getaffinity(0) == before  # the pin is undone
    assert "| run | policy |" in result.output and f"pinned to CPU {cpu}" in result.output
    payload = json.loads((out / "summary.json").read_text())
    meta, summary = payload["meta"], payload["summary"]
    assert meta["slo_ms"] == SLO_MS and meta["slo_from"] == "/healthz"
    assert meta["policy"] == "queue" and meta["generator"]["pinned_cpu"] == cpu
    assert meta["trace"] == "step:high=3" and meta["machine"]["cpu_model"]
    assert 0 <= meta["generator"]["cpu_share_of_one_core"] < 1.5
    assert summary["count"] == state.requests > 5 and summary["answered"] == summary["count"]
    assert {p.name for p in out.iterdir()} >= {
        "requests.jsonl",
        "summary.json",
        "summary.md",
        "timeseries.png",
    }

    records = read_records(out / "requests.jsonl")
    assert [r.qid for r in records] == [f"q{i % 8}" for i in range(len(records))]
    # the quality in the records is ranking_quality of the served rankings, nothing else
    answered = [r for r in records if r.qid in {f"q{i}" for i in range(6)}]
    rankings = [(r.qid, {d: 1.0 - i / 100 for i, d in enumerate(r.doc_ids)}) for r in answered]
    direct = ranking_quality(rankings, _qrels(files["qrels"]), "nDCG@10")
    assert [r.quality for r in answered] == pytest.approx(direct)
    assert all(r.quality is None for r in records if r.qid in ("q6", "q7"))
    assert summary["mean_quality"] == pytest.approx(np.mean(direct))
    assert "q6" not in result.output  # no stray output; the unjudged queries are a warning
    assert "2 of 8 queries have no judgements" in result.output


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    from elasticir.data.trec import read_qrels

    return read_qrels(path)


def test_score_records_scores_the_served_order() -> None:
    from elasticir.schedule.report import RequestRecord

    tie = RequestRecord(0, "a", 0.0, 0.01, "ok", doc_ids=["d2", "d1"])
    qrels = {"a": {"d1": 1}}
    score_records([tie], qrels, "RR@10")
    assert tie.quality == pytest.approx(0.5)  # d1 served second, whatever its score


def test_closed_loop_gives_one_row_per_concurrency(live, files, tmp_path) -> None:
    url, _ = live
    out = tmp_path / "closed"
    result = invoke(
        "loadtest",
        url,
        "--closed",
        "1,2,4",
        "--duration",
        0.4,
        "--topics",
        files["topics"],
        "--slo-ms",
        50,
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "summary.json").read_text())
    levels = payload["levels"]
    assert [level["concurrency"] for level in levels] == [1, 2, 4]
    assert all(level["throughput"] > 0 and level["p95_ms"] > 0 for level in levels)
    assert payload["meta"]["slo_from"] == "--slo-ms"
    table = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 3
    assert (out / "closed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_folder_is_not_clobbered(live, files, tmp_path) -> None:
    url, state = live
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = [
        "loadtest",
        url,
        "--rate",
        10,
        "--duration",
        0.5,
        "--topics",
        files["topics"],
        "-o",
        out,
    ]
    result = invoke(*args)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert state.requests == 0 and [p.name for p in out.iterdir()] == ["notes.txt"]
    result = invoke(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "summary.json").exists()


def test_bad_input_is_refused_before_anything_is_sent(live, files, tmp_path) -> None:
    url, state = live
    bad_trace = tmp_path / "arrivals.txt"
    bad_trace.write_text("0.1\n0.2\nsoon\n")
    bad_qrels = tmp_path / "bad.qrels"
    bad_qrels.write_text("q0 0 d1 1\nq1 0 d2\n")
    bad_topics = tmp_path / "bad.tsv"
    bad_topics.write_text("q0\tfine\nq1 no tab here\n")
    base = ["loadtest", url, "--rate", 10, "--duration", 1, "-o", tmp_path / "never"]
    cases = [
        (["--topics", files["topics"], "--trace", bad_trace], f"{bad_trace}:3: expected"),
        (["--topics", files["topics"], "--qrels", bad_qrels], f"{bad_qrels}:2: expected 4"),
        (["--topics", bad_topics], f"{bad_topics}:2: expected qid<TAB>"),
        (["--topics", files["topics"], "--trace", "sawtooth"], "unknown trace 'sawtooth'"),
        (["--topics", files["topics"], "--trace", "step:at=2"], "at is a fraction"),
        (["--topics", files["topics"], "--metric", "nDCG@"], "quality metric"),
        (["--topics", tmp_path / "missing.tsv"], "missing.tsv: not found"),
    ]
    for extra, message in cases:
        result = invoke(*base, *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (message, result.output)
        assert result.output.count("\n") == 1, result.output  # one clear line
    assert state.requests == 0 and not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1:8000", "http://example.com:8000", "https://127.0.0.1:8000", "127.0.0.1:80"],
)
def test_only_loopback_urls(url: str, files) -> None:
    result = invoke("loadtest", url, "--rate", 1, "--duration", 1, "--topics", files["topics"])
    assert result.exit_code == 2 and "error:" in result.output
    assert "loopback" in result.output or "http://" in result.output


def test_loopback_addresses_parse() -> None:
    assert ServerAddress.parse("http://localhost:9000/").authority == "localhost:9000"
    v6 = ServerAddress.parse("http://[::1]:9000/search")
    assert (v6.authority, v6.prefix) == ("[::1]:9000", "")
    assert ServerAddress.parse("http://127.0.0.2:80/api").prefix == "/api"


def test_runs_are_bounded(files, tmp_path) -> None:
    common = dict(url="http://127.0.0.1:1", topics=files["topics"], output=tmp_path / "o")
    with pytest.raises(ValueError, match="more than 2,000,000 requests"):
        check(LoadTestConfig(rate=1000.0, duration=3000.0, **common))
    with pytest.raises(ValueError, match="4 h"):
        check(LoadTestConfig(rate=1.0, duration=5 * 3600.0, **common))
    with pytest.raises(ValueError, match="--rate is required"):
        check(LoadTestConfig(duration=1.0, **common))
    with pytest.raises(ValueError, match="--max-connections"):
        check(LoadTestConfig(duration=1.0, closed=(8,), max_connections=4, **common))


def test_a_server_not_ready_is_refused(live, files, tmp_path) -> None:
    url, state = live
    state.health = "starting"
    result = invoke(
        "loadtest",
        url,
        "--rate",
        5,
        "--duration",
        1,
        "--topics",
        files["topics"],
        "-o",
        tmp_path / "o",
    )
    assert result.exit_code == 2 and "not ready (/healthz: starting)" in result.output
    assert state.requests == 0


def test_an_unreachable_server_is_one_clear_error(files, tmp_path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke(
        "loadtest",
        f"http://127.0.0.1:{port}",
        "--rate",
        5,
        "--duration",
        1,
        "--topics",
        files["topics"],
        "-o",
        tmp_path / "o",
    )
    assert result.exit_code == 2 and "cannot reach the server" in result.output


def test_help_explains_every_option() -> None:
    result = invoke("loadtest", "--help")
    assert result.exit_code == 0
    for option in (
        "--trace",
        "--rate",
        "--duration",
        "--topics",
        "--qrels",
        "--metric",
        "--slo-ms",
        "--k",
        "--seed",
        "--timeout-s",
        "--max-connections",
        "--closed",
        "--warmup-s",
        "--cpu",
        "--output",
        "--overwrite",
        "Examples",
        "elasticir loadtest http://127.0.0.1:8000",
    ):
        assert option in result.output, option
