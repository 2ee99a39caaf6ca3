"""``elasticir serve``: the real app on uvicorn over a tiny index of the packaged sample, talked
to over HTTP; the schedule from Python; a subprocess drained by SIGTERM."""

from __future__ import annotations

import http.client
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticir.cli.app import app as cli
from typer.testing import CliRunner

from elasticir import api
from elasticir.data import sample_dataset
from elasticir.data.records import Query
from elasticir.schedule.choices import Choice
from elasticir.schedule.executor import PipelineExecutor
from elasticir.schedule.points import CostModel, OperatingPoint, OperatingPoints
from elasticir.schedule.policies import parse_schedule
from elasticir.serve import Refused, ScheduledPipeline, create_app, default_slo
from elasticir.serve.metrics import Counter as MetricCounter
from elasticir.serve.metrics import Histogram as MetricHistogram
from elasticir.serve.metrics import Registry, escape_label
from elasticir.serve.server import open_socket

MODEL = "elastic-minilm"  # the shipped elastic encoder: its index has query levels
QUERY = "who wrote the play hamlet"


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "sample-index"
    api.build_index(
        api.IndexConfig(sample_dataset().corpus, out, model=MODEL, progress=False, threads=1)
    )
    return out


@pytest.fixture(scope="module")
def executor(sample_index: Path) -> PipelineExecutor:
    return PipelineExecutor(sample_index)


def _points() -> OperatingPoints:
    """Hand-made points over two fast query levels (a few ms each, as on this sample)."""

    def point(choice: str, fixed: float, per: float, quality: float) -> OperatingPoint:
        return OperatingPoint(Choice.parse(choice), CostModel(fixed, per), {"nDCG@10": quality})

    return OperatingPoints(
        [point("L4", 0.002, 0.001, 0.3), point("full", 0.004, 0.002, 0.4)], "nDCG@10"
    )


class Served:
    """The real app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, pipeline: ScheduledPipeline, *, lifespan: str = "on", **options: Any):
        import uvicorn

        self.pipeline = pipeline
        self.sock = open_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(pipeline, **options), log_level="warning", lifespan=lifespan
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()
        self.pipeline.close(timeout=20)


@pytest.fixture(scope="module")
def served(executor: PipelineExecutor) -> Iterator[Served]:
    pipeline = ScheduledPipeline(executor, _points(), "deadline", slo=5.0, start=False)
    running = Served(pipeline, k_max=50)
    yield running
    running.stop()


def call(
    url: str,
    path: str,
    body: Any = None,
    *,
    method: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """``(status, headers, JSON body or text)`` of one request, errors included."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, head, text = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, head, text = error.code, error.headers, error.read()
    if head.get_content_type() == "application/json":
        return status, head, json.loads(text)
    return status, head, text.decode()


def _direct(executor: PipelineExecutor, text: str, choice: str, k: int) -> list[str]:
    run = executor.run([Query("q", text)], Choice.parse(choice), k=k).run["q"]
    return [d for d, _ in sorted(run.items(), key=lambda item: (-item[1], item[0]))]


# -- searching -------------------------------------------------------------------------------


def test_a_search_returns_ranked_hits_with_choice_and_timings(
    served: Served, executor: PipelineExecutor
) -> None:
    status, head, body = call(served.url, "/search", {"query": QUERY, "k": 5, "id": "h1"})
    assert status == 200, body
    assert head.get_content_type() == "application/json"
    (result,) = body["results"]
    assert result["id"] == "h1"
    assert result["choice"] in ("L4", "full") and result["late"] is False
    hits = result["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # the same ranking as the executor run directly at the choice the schedule picked
    assert [h["doc_id"] for h in hits] == _direct(executor, QUERY, result["choice"], 5)
    timings = result["timings"]
    assert set(timings) == {"queue_ms", "service_ms", "total_ms", "batch_size", "queue_length"}
    assert timings["batch_size"] == 1 and timings["queue_length"] == 0
    assert 0 <= timings["queue_ms"] and 0 < timings["service_ms"] <= timings["total_ms"]
    assert timings["total_ms"] == pytest.approx(
        timings["queue_ms"] + timings["service_ms"], abs=0.01
    )


def test_a_list_of_queries_is_answered_in_order_with_its_ids(served: Served) -> None:
    texts = ["capital of france", "who wrote hamlet", "capital of france"]
    status, _, body = call(served.url, "/search", {"queries": texts, "k": 3, "ids": ["a", 7, "c"]})
    assert status == 200, body
    results = body["results"]
    assert [r["id"] for r in results] == ["a", 7, "c"]
    assert all(len(r["hits"]) == 3 for r in results)
    # a list is dispatched together (one batch) and the same text gets the same answer
    assert {r["timings"]["batch_size"] for r in results} == {3}
    assert [h["doc_id"] for h in results[0]["hits"]] == [h["doc_id"] for h in results[2]["hits"]]
    status, _, body = call(served.url, "/search", {"queries": ["x", "y"]})
    assert [r["id"] for r in body["results"]] == ["0", "1"]
    assert all(len(r["hits"]) == 10 for r in body["results"])  # k defaults to 10


TOO_BIG = b'{"query": "' + b"a" * (64 * 1024) + b'"}'
BAD = [
    # (what, path, method, body (bytes or JSON value), status, part of the error message)
    ("malformed JSON", "/search", "POST", b'{"query": "x"', 400, "malformed JSON"),
    ("not UTF-8", "/search", "POST", b'{"query": "\xff"}', 400, "UTF-8"),
    ("not an object", "/search", "POST", ["x"], 400, "JSON object"),
    ("no query", "/search", "POST", {"k": 3}, 400, 'missing "query"'),
    ("empty query", "/search", "POST", {"query": ""}, 400, "empty"),
    ("blank query", "/search", "POST", {"query": " \t\n"}, 400, "empty"),
    ("number query", "/search", "POST", {"query": 5}, 400, "must be a string"),
    ("null query", "/search", "POST", {"query": None}, 400, "must be a string"),
    ("both", "/search", "POST", {"query": "a", "queries": ["b"]}, 400, "not both"),
    ("queries not a list", "/search", "POST", {"queries": "a"}, 400, "list"),
    ("empty list", "/search", "POST", {"queries": []}, 400, "empty list"),
    ("blank in list", "/search", "POST", {"queries": ["a", " "]}, 400, '"queries"[1]'),
    ("too many", "/search", "POST", {"queries": ["a"] * 65}, 413, "too many queries"),
    ("k text", "/search", "POST", {"query": "a", "k": "10"}, 400, "integer"),
    ("k float", "/search", "POST", {"query": "a", "k": 1.5}, 400, "integer"),
    ("k bool", "/search", "POST", {"query": "a", "k": True}, 400, "integer"),
    ("k zero", "/search", "POST", {"query": "a", "k": 0}, 400, "between 1 and 50"),
    ("k too big", "/search", "POST", {"query": "a", "k": 51}, 400, "between 1 and 50"),
    ("ids wrong length", "/search", "POST", {"queries": ["a"], "ids": [1, 2]}, 400, '"ids"'),
    ("id with queries", "/search", "POST", {"queries": ["a"], "id": "x"}, 400, '"id" goes'),
    ("unknown field", "/search", "POST", {"query": "a", "topk": 3}, 400, "unknown field"),
    ("body too big", "/search", "POST", TOO_BIG, 413, "limit"),
    ("wrong method", "/search", "GET", None, 405, "not allowed"),
    ("wrong method", "/healthz", "POST", {}, 405, "not allowed"),
    ("unknown path", "/search/v2", "POST", {"query": "a"}, 404, "no such path"),
]


@pytest.mark.parametrize("what, path, method, body, status, message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_json_error_and_the_server_goes_on(
    served: Served, what: str, path: str, method: str, body: Any, status: int, message: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    got, head, answer = call(
        served.url, path, None if raw is not None else body, method=method, raw=raw
    )
    assert got == status, answer
    assert head.get_content_type() == "application/json"
    assert message in answer["error"], answer
    assert call(served.url, "/search", {"query": "after " + what, "k": 1})[0] == 200


def test_a_chunked_body_is_cut_off_at_the_limit_while_it_is_read(served: Served) -> None:
    # no Content-Length: only counting while reading can refuse it
    host, port = served.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = (b'{"query": "' if i == 0 else b"a" * 4096 for i in range(20))
    connection.request("POST", "/search", body=chunks, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    assert "limit" in json.loads(response.read())["error"]
    connection.close()
    assert call(served.url, "/search", {"query": QUERY, "k": 1})[0] == 200


def test_healthz_says_what_is_served(served: Served) -> None:
    status, _, body = call(served.url, "/healthz")
    assert status == 200
    assert body == {
        "status": "ok",
        "policy": "deadline",
        "slo_ms": 5000.0,
        "choices": ["L4", "full"],
        "queue_length": 0,
    }


# -- overload --------------------------------------------------------------------------------


def test_a_full_queue_gets_503_with_retry_after(executor: PipelineExecutor) -> None:
    # lifespan off: the worker waits until started by hand, so the queue fills for certain
    pipeline = ScheduledPipeline(
        executor, _points(), "static:full", slo=5.0, max_queue=2, start=False
    )
    running = Served(pipeline, lifespan="off")
    try:
        status, _, health = call(running.url, "/healthz")
        assert status == 503 and health["status"] == "starting"
        waiting: list[tuple[int, Any, Any]] = []
        first = threading.Thread(
            target=lambda: waiting.append(call(running.url, "/search", {"queries": ["a", "b"]}))
        )
        first.start()
        deadline = time.monotonic() + 10
        while pipeline.queue_length < 2:
            assert time.monotonic() < deadline, "the first request never queued"
            time.sleep(0.005)
        status, head, body = call(running.url, "/search", {"query": QUERY})
        assert status == 503, body
        assert body["reason"] == "queue full" and "overloaded" in body["error"]
        assert int(head["Retry-After"]) >= 1
        pipeline.start()
        first.join(30)
        assert waiting and waiting[0][0] == 200  # the queued request is answered
        metrics = _parse(call(running.url, "/metrics")[2])
        assert metrics[("elasticir_rejected_total", (("reason", "queue_full"),))] == 1
        assert metrics[("elasticir_http_requests_total", (("code", "503"),))] >= 1
    finally:
        running.stop()


def test_a_hopeless_query_is_shed_and_a_draining_server_refuses_new_ones(
    executor: PipelineExecutor,
) -> None:
    # an SLO of 1 ms, under the cheapest choice's predicted 3 ms: nothing can make it
    pipeline = ScheduledPipeline(executor, _points(), "deadline", slo=0.001, shed=True)
    running = Served(pipeline)
    try:
        status, head, body = call(running.url, "/search", {"queries": ["a", "b"]})
        assert status == 503, body
        assert body["reason"] == "shed" and int(head["Retry-After"]) >= 1
        metrics = _parse(call(running.url, "/metrics")[2])
        assert metrics[("elasticir_rejected_total", (("reason", "shed"),))] == 2
        pipeline.drain()  # what the lifespan's shutdown starts with
        status, _, health = call(running.url, "/healthz")
        assert status == 503 and health["status"] == "draining"
        status, head, body = call(running.url, "/search", {"query": QUERY})
        assert status == 503 and body["reason"] == "stopping" and head["Retry-After"] == "1"
    finally:
        running.stop()


# -- metrics ---------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of the text format, keyed by name and labels; checks every line's syntax and
    that each sample's family was declared by a TYPE line before it."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match[1]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line before it"
        labels = tuple(
            (k, v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
            for k, v in _LABEL.findall(match[3] or "")
        )
        samples[(name, labels)] = float(match[4])
    return samples


def _histograms(samples: dict, name: str) -> dict[tuple, list[tuple[float, float]]]:
    """Per label set (le removed): the (bound, cumulative count) of each bucket, in order."""
    series: dict[tuple, list[tuple[float, float]]] = {}
    for (sample, labels), value in samples.items():
        if sample == f"{name}_bucket":
            rest = tuple(kv for kv in labels if kv[0] != "le")
            le = dict(labels)["le"]
            series.setdefault(rest, []).append((math.inf if le == "+Inf" else float(le), value))
    return {k: sorted(v) for k, v in series.items()}


def test_metrics_parse_and_count_what_was_sent(executor: PipelineExecutor) -> None:
    pipeline = ScheduledPipeline(executor, _points(), "queue", slo=5.0, max_batch=4)
    running = Served(pipeline)
    try:
        sent = 0
        for n in (1, 3, 2):
            assert call(running.url, "/search", {"queries": [QUERY] * n, "k": 2})[0] == 200
            sent += n
        assert call(running.url, "/search", {"query": ""})[0] == 400
        assert call(running.url, "/nowhere")[0] == 404
        status, head, text = call(running.url, "/metrics")
        assert status == 200 and head["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = _parse(text)
        names = {name for name, _ in samples}
        for expected in (
            "elasticir_request_latency_seconds_bucket",
            "elasticir_service_seconds_bucket",
            "elasticir_batch_size_bucket",
            "elasticir_queue_length",
            "elasticir_served_total",
            "elasticir_slo_misses_total",
            "elasticir_rejected_total",
            "elasticir_http_requests_total",
            "elasticir_schedule_info",
            "elasticir_choice_switches_total",
            "process_resident_memory_bytes",
        ):
            assert expected in names, expected
        for family in ("elasticir_request_latency_seconds", "elasticir_service_seconds"):
            for labels, buckets in _histograms(samples, family).items():
                counts = [c for _, c in buckets]
                assert counts == sorted(counts), f"{family} buckets are not cumulative"
                assert buckets[-1][0] == math.inf
                assert buckets[-1][1] == samples[(f"{family}_count", labels)]
        latency = _histograms(samples, "elasticir_request_latency_seconds")[()]
        assert latency[-1][1] == sent
        served = sum(v for (n, _), v in samples.items() if n == "elasticir_served_total")
        assert served == sent
        batches = samples[("elasticir_batch_size_count", ())]
        assert samples[("elasticir_batch_size_sum", ())] == sent and 3 <= batches <= sent
        service = _histograms(samples, "elasticir_service_seconds")
        assert sum(b[-1][1] for b in service.values()) == batches
        http = {
            dict(k)["code"]: v for (n, k), v in samples.items() if n.endswith("http_requests_total")
        }
        assert http == {"200": 3, "400": 1, "404": 1}  # this scrape counts once it is sent
        info = [dict(k) for (n, k), _ in samples.items() if n == "elasticir_schedule_info"]
        assert info == [
            {"policy": "queue", "slo_ms": "5000", "max_batch": "4", "choices": "L4,full"}
        ]
        assert samples[("process_resident_memory_bytes", ())] > 10 * 2**20
        assert samples[("elasticir_slo_misses_total", ())] == 0
        # the model's CPU (worker thread) is a part of the process's, and not nothing
        model_cpu = samples[("elasticir_model_cpu_seconds_total", ())]
        assert 0 < model_cpu <= samples[("process_cpu_seconds_total", ())]
    finally:
        running.stop()


def test_label_values_are_escaped_and_histograms_render_cumulatively() -> None:
    registry = Registry()
    counter = registry.add(MetricCounter("odd_total", "Help with a \\ and\na newline.", ("v",)))
    counter.inc('a "quoted" \\ back\nslash')
    histogram = registry.add(MetricHistogram("h_seconds", "A histogram.", (0.1, 1.0)))
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    text = registry.render()
    assert "# HELP odd_total Help with a \\\\ and\\na newline." in text
    assert 'odd_total{v="a \\"quoted\\" \\\\ back\\nslash"} 1' in text
    assert escape_label('"\\\n') == '\\"\\\\\\n'
    samples = _parse(text)
    assert samples[("odd_total", (("v", 'a "quoted" \\ back\nslash'),))] == 1
    buckets = _histograms(samples, "h_seconds")[()]
    assert buckets == [(0.1, 2), (1.0, 3), (math.inf, 4)]  # le is inclusive: 0.1 <= 0.1
    assert samples[("h_seconds_sum", ())] == pytest.approx(7.65)


# -- from Python -----------------------------------------------------------------------------


def test_the_schedule_serves_python_callers_from_many_threads(
    executor: PipelineExecutor,
) -> None:
    texts = [QUERY, "capital of france", "largest ocean on earth"]
    expected = {t: _direct(executor, t, "L4", 4) for t in texts}
    with ScheduledPipeline(executor, _points(), "static:L4", slo=5.0) as pipeline:
        assert pipeline.state == "running"
        answers: dict[int, list] = {}

        def ask(i: int) -> None:
            answers[i] = pipeline.search(texts[i % 3 :] + texts[: i % 3], k=4)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(answers) == list(range(6))
        for i, got in answers.items():
            order = texts[i % 3 :] + texts[: i % 3]
            assert [[h.doc_id for h in a.hits] for a in got] == [expected[t] for t in order]
            assert all(str(a.choice) == "L4" and not a.late for a in got)
        (one,) = pipeline.search(QUERY, k=2)  # one string is one query
        assert [h.rank for h in one.hits] == [1, 2]
    assert pipeline.state == "stopped"
    with pytest.raises(Refused, match="shutting down"):
        pipeline.search(QUERY)


def test_late_and_shed_queries_from_python(executor: PipelineExecutor) -> None:
    with ScheduledPipeline(executor, _points(), "deadline", slo=0.001) as late:
        (answer,) = late.search(QUERY, k=3)
        assert answer.late and len(answer.hits) == 3 and str(answer.choice) == "L4"
        assert late.metrics.slo_misses.value() == 1
    with ScheduledPipeline(executor, _points(), "deadline", slo=0.001, shed=True) as shedding:
        with pytest.raises(Refused) as refused:
            shedding.search(QUERY)
        assert refused.value.reason == "shed" and refused.value.retry_after >= 1


def test_the_default_slo_is_four_times_the_best_choice_alone() -> None:
    slow = OperatingPoint(Choice.parse("L6-W50"), CostModel(0.01, 0.0025), {"nDCG@10": 0.35})
    points = OperatingPoints([*_points().points, slow], "nDCG@10")  # slow: off the frontier
    assert [str(p.choice) for p in points.frontier] == ["L4", "full"]
    assert default_slo(points) == 0.024  # 4 x (4 + 2) ms for full, the dearest frontier choice
    assert default_slo(points, parse_schedule("static:L6-W50")) == 0.05  # 4 x 12.5 ms


# -- the command -----------------------------------------------------------------------------


def test_help_explains_every_option() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in (
        "--index", "--rerank", "--points", "--slo-ms", "--policy", "--choices", "--max-batch",
        "--max-wait-ms", "--max-queue", "--shed", "--host", "--port", "--allow-remote",
        "--k-max", "--threads", "Example", "POST /search", "GET /metrics", "GET /healthz",
    ):  # fmt: skip
        assert option in result.output, option


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--index", "no/such/index"], "not a dense index"),
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--policy", "fastest"], "unknown schedule policy"),
        (["--choices", "full>bm25%5"], "choice"),
        (["--points", "no/such/points.json"], "no/such/points.json"),
        (["--max-batch", "0"], "--max-batch"),
        (["--port", "70000"], "--port"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_any_model_loads(
    sample_index: Path, arguments: list[str], message: str
) -> None:
    argv = ["serve", "--index", str(sample_index), *arguments]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_choice_missing_from_the_points_file_is_refused(
    sample_index: Path, tmp_path: Path
) -> None:
    path = tmp_path / "points.json"
    _points().save(path)
    argv = ["serve", "-i", str(sample_index), "--points", str(path), "--choices", "L4,L2-W50"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and "L2-W50 not in" in result.output, result.output


def test_sigterm_drains_every_query_then_exits_0(sample_index: Path) -> None:
    # no --points: the server profiles its choice at start-up; one query per batch, so
    # the queued queries take a while to serve
    command = [
        sys.executable, "-c", "from elasticir.cli.app import main; main()", "serve",
        "--index", str(sample_index), "--choices", "full", "--policy", "static:full",
        "--max-batch", "1", "--port", "0", "--threads", "1",
    ]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stderr or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("listening on http://" in line for line in lines):
            assert server.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        address = re.search(r"http://(\S+):(\d+)", "".join(lines))
        assert address is not None
        host, port = address[1], int(address[2])
        assert any("SLO" in line and "4x" in line for line in lines), "".join(lines)

        sent = threading.Barrier(17)
        results: list[tuple[int, float, dict]] = []

        def ask(i: int) -> None:
            connection = http.client.HTTPConnection(host, port, timeout=60)
            body = json.dumps({"queries": [f"{QUERY} {i} {j}" for j in range(4)], "k": 3})
            connection.request("POST", "/search", body=body)
            sent.wait(30)
            response = connection.getresponse()
            results.append((response.status, time.monotonic(), json.loads(response.read())))
            connection.close()

        clients = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for client in clients:
            client.start()
        sent.wait(30)  # every request is on the wire
        time.sleep(0.1)
        queued = call(f"http://{host}:{port}", "/healthz")[2]["queue_length"]
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(60)
        assert server.wait(60) == 0, "".join(lines)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    reader.join(10)
    assert len(results) == 16 and {status for status, _, _ in results} == {200}, results
    assert all(len(r["results"]) == 4 for _, _, r in results)
    # the drain did something: queries were waiting at the signal and answered after it
    assert queued > 0 and any(at > signalled for _, at, _ in results), (queued, lines)
    assert any(line.startswith("stopped: ") for line in lines), "".join(lines)


def test_the_server_freezes_what_it_loaded_out_of_the_collectors_reach() -> None:
    import gc

    from elasticir.serve.server import settle_heap

    loaded = [[f"token {i}"] for i in range(10_000)]  # stands in for a model's objects
    try:
        assert any(o is loaded[0] for o in gc.get_objects())  # a collection walks it
        settle_heap()
        assert gc.get_freeze_count() >= len(loaded)
        # frozen: in no generation a collection walks, and still alive
        assert not any(o is loaded[0] for o in gc.get_objects())
        assert loaded[-1] == ["token 9999"]
    finally:
        gc.unfreeze()
