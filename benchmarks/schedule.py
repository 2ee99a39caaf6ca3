"""The elastic schedule on this machine: static choices, ``queue`` and ``deadline`` under load,
the real server against the simulator.

    python benchmarks/schedule.py                        # both pipelines, every trace
    python benchmarks/schedule.py --pipelines retrieval  # one of them
    python benchmarks/schedule.py --soak 1800            # + 30 min at 1x lambda_full (retrieval)
    python benchmarks/schedule.py --recheck retrieval/burst:deadline  # again, listed apart
    python benchmarks/schedule.py --render               # only rewrite the Markdown

The report covers the pipelines of the call, so name both (stored runs are not repeated).

Two pipelines, each with the dataset whose judgements score it:

* ``retrieval``: ``elastic-minilm`` dense retrieval at every query level, queries streamed
  from ``nq-open`` (2,600 passages), quality RR@10 against its qrels (the answer passage);
* ``rerank``: dense retrieval plus ElasticRanker (full, and its shipped top-20 calibrations)
  or DiPair over the dense top 20, queries streamed from ``msmarco-dl19`` (43 judged queries,
  20,152 passages), quality nDCG@10.

No shipped model saw a query or judgement of either set. The operating points are profiled on
the same queries the load streams (the quality of a choice is a property of the choice; the
policies only rank choices by it), which the report says.

The two cores: the server is pinned to core 0 with one torch thread, the load generator to
core 1 (``taskset``); the profile is measured pinned the same way, so the cost models describe
the server as it runs. Per pipeline: profile; ``lambda_full``, the highest Poisson rate at which
static-full (the full pipeline) keeps p95 within the SLO, by bisection on short server runs;
then steady 0.5x/1x/2x/4x lambda_full, a burst trace (0.5x with 30 s bursts at 4x) and a step
trace (0.5x then 2x), for every static frontier choice, ``queue`` and ``deadline``; each run
simulated too, on the same arrivals; a closed-loop sweep over 1-64 clients under
``deadline``. Each run's report is kept under ``results/schedule/``; a run already there is
not repeated (delete it to measure again), so the script resumes after a kill.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from elasticir.bench import log, machine  # noqa: E402
from elasticir.data import get_dataset  # noqa: E402
from elasticir.data.topics import read_topics  # noqa: E402
from elasticir.schedule.points import OperatingPoints  # noqa: E402
from elasticir.schedule.policies import parse_schedule  # noqa: E402
from elasticir.schedule.report import (  # noqa: E402
    comparison_table,
    outside_times,
    read_records,
    summarize,
)
from elasticir.schedule.traces import parse_trace  # noqa: E402
from elasticir.simulation import SimulationResult, simulate  # noqa: E402

OUT = Path("results/schedule")
INDEXES = Path("indexes/schedule")
PIPELINES = {
    "retrieval": {
        "dataset": "nq-open",
        "metric": "RR@10",
        "extra": "Success@1",
        "rerank": "",
        "choices": None,  # every query level
        "full": "full",
    },
    "rerank": {
        "dataset": "msmarco-dl19",
        "metric": "nDCG@10",
        "extra": "RR@10",
        "rerank": "dipair,ranker",
        "choices": [
            "full",
            "L2-W50",
            "full>dipair%20",
            "full>ranker%20",
            "full>ranker%20@calibrated:cutoff-top20",
            "L6-W50>ranker%20@calibrated:cutoff-top20",
        ],
        "full": "full>ranker%20",
    },
}
TRACES = {  # name: (trace spec, rate multiple of lambda_full, seconds)
    "steady-0.5x": ("poisson", 0.5, 25),
    "steady-1x": ("poisson", 1.0, 25),
    "steady-2x": ("poisson", 2.0, 25),
    "steady-4x": ("poisson", 4.0, 25),
    # 0.5x, one 30 s burst at 4x from 50 s on, then 20 s to recover
    "burst": ("burst:low=0.5,high=4,on=30,every=100", 1.0, 100),
    "step": ("step:low=0.5,high=2,at=0.5", 1.0, 40),
}
SERVER_CPU, LOADGEN_CPU = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``elasticir serve`` in a subprocess pinned to the server core, one torch thread."""

    def __init__(
        self,
        index: Path,
        rerank: str,
        points: Path,
        policy: str,
        slo_ms: float,
        log_path: Path,
        extra: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            "taskset",
            "-c",
            SERVER_CPU,
            "elasticir",
            "serve",
            "--index",
            str(index),
            "--points",
            str(points),
            "--policy",
            policy,
            "--slo-ms",
            str(slo_ms),
            "--port",
            str(self.port),
            "--threads",
            "1",
            *(extra or []),
        ]
        if rerank:
            command += ["--rerank", rerank]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited ({self.process.returncode}); see {self.log.name}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not healthy after {timeout} s; see {self.log.name}")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as reply:
            return reply.read().decode()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = -9
        self.log.close()
        return code


def serve(spec: dict, ctx: dict, policy: str, folder: Path, slo_ms: float | None = None) -> Server:
    """The pipeline's server under ``policy`` (at the benchmark's SLO unless ``slo_ms``),
    logging to ``folder/server.log``."""
    slo = ctx["slo_ms"] if slo_ms is None else slo_ms
    return Server(
        ctx["index"], spec["rerank"], ctx["points_path"], policy, slo, folder / "server.log"
    )


def loadtest_command(url: str, ctx: dict, metric: str, out: Path, *load: str) -> list[str]:
    """``elasticir loadtest`` pinned to the load generator's core, streaming the pipeline's
    topics scored by its judgements; ``load``: the trace or closed-loop options."""
    return [
        "taskset",
        "-c",
        LOADGEN_CPU,
        "elasticir",
        "loadtest",
        url,
        *load,
        "--topics",
        str(ctx["topics"]),
        "--qrels",
        str(ctx["qrels"]),
        "--metric",
        metric,
        "-o",
        str(out),
        "--overwrite",
    ]


def loadtest(
    url: str, ctx: dict, metric: str, out: Path, trace: str, rate: float, seconds: float
) -> dict:
    """One open-loop run; its summary and seed."""
    load = ("--trace", trace, "--rate", f"{rate:.4f}", "--duration", str(seconds))
    command = loadtest_command(url, ctx, metric, out, *load)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((out / "summary.json").read_text())
    return {**report["summary"], "seed": report["meta"].get("seed", 0)}


def profile(name: str, spec: dict, index: Path, data) -> tuple[OperatingPoints, Path]:
    path = OUT / name / "points.json"
    if not path.exists():
        command = [
            "taskset",
            "-c",
            SERVER_CPU,
            "elasticir",
            "profile",
            "--index",
            str(index),
            "--topics",
            os.path.relpath(data.queries),
            "--qrels",
            os.path.relpath(data.qrels),
            "--metric",
            spec["metric"],
            "--extra-metrics",
            spec["extra"],
            "-o",
            str(path),
            "--repeats",
            "3",
            "-q",
        ]
        if spec["rerank"]:
            command += ["--rerank", spec["rerank"]]
        if spec["choices"]:
            command += ["--choices", ",".join(spec["choices"])]
        log(f"{name}: profiling")
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return OperatingPoints.load(path), path


def ensure_index(dataset) -> Path:
    from elasticir import api

    index = INDEXES / f"{dataset.name}-elastic-minilm"
    if not (index / "meta.json").exists():
        log(f"indexing {dataset.corpus}")
        api.build_index(
            api.IndexConfig(
                corpus=dataset.corpus, output=index, model="elastic-minilm", progress=True
            )
        )
    return index


def held(summary: dict, slo_ms: float) -> bool:
    p95 = summary.get("p95_ms")
    return p95 is not None and p95 <= slo_ms and summary.get("errors", 0) == 0


class ForeignCPU:
    """CPU seconds this machine spent outside this script and its children between ``start``
    and ``stop`` (from ``/proc/stat`` and ``getrusage``): other tenants' work that would
    disturb a run on a 2-core machine. Call ``stop`` after the children have been waited
    for."""

    def __init__(self) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.busy0, self.own0, self.wall0 = self._busy(), self._own(), time.time()

    def _busy(self) -> float:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return (sum(values[:8]) - idle) / self.ticks

    @staticmethod
    def _own() -> float:
        me, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def stop(self) -> dict:
        busy, own, wall = (
            self._busy() - self.busy0,
            self._own() - self.own0,
            time.time() - self.wall0,
        )
        foreign = max(0.0, busy - own)
        return {
            "wall_s": wall,
            "foreign_cpu_s": foreign,
            "foreign_share": foreign / max(wall, 1e-9),
        }


def _scrape(server: Server) -> dict[str, float]:
    """process CPU, model CPU and queries served, from the server's /metrics."""
    values = {"process": 0.0, "model": 0.0, "served": 0.0}
    for line in server.metrics().splitlines():
        if line.startswith("process_cpu_seconds_total "):
            values["process"] = float(line.split()[-1])
        elif line.startswith("elasticir_model_cpu_seconds_total "):
            values["model"] = float(line.split()[-1])
        elif line.startswith("elasticir_served_total{"):
            values["served"] += float(line.split()[-1])
    return values


def _cpu_per_request(before: dict, after: dict) -> dict:
    """Milliseconds of the server's CPU per query served between two scrapes: in the model
    and beside it (HTTP, JSON, scheduling)."""
    served = after["served"] - before["served"]
    if served <= 0:
        return {"served": 0}
    model = after["model"] - before["model"]
    beside = (after["process"] - before["process"]) - model
    return {
        "served": served,
        "model_ms": model / served * 1000,
        "beside_ms": max(0.0, beside) / served * 1000,
    }


def measure_outside(name, spec, ctx) -> dict:
    """What the cost models do not hold, on the cheapest choice: ``outside_ms``, the median of
    client latency minus the server's own total (HTTP, JSON, the client) at a light 20
    req/s, and ``cpu_per_request_ms``, the server's CPU per query beside the model (process
    CPU minus the worker's model CPU, from /metrics) under 10 s of a Poisson stream at 60% of
    the cheapest choice's full-batch throughput, the load at which it competes with the
    model. The simulator draws each answer's outside time from the light run's answers (less
    the CPU, which it adds to every batch, per request: the server's core is shared)."""
    cached = OUT / name / "outside.json"
    if cached.exists():
        got = json.loads(cached.read_text())
        if "outside_samples_ms" in got:
            return got
    cheapest = str(ctx["points"].frontier[0].choice)
    folder = OUT / name / "outside"
    server = serve(spec, ctx, f"static:{cheapest}", folder, slo_ms=10_000)
    try:
        server.wait()
        got = loadtest(server.url, ctx, spec["metric"], folder / "loadtest", "poisson", 20.0, 15)
        # the CPU beside the model where it matters: a heavy open-loop stream, 60% of what
        # the cheapest choice computes in full batches (a run of its own, not one compared)
        cheap = ctx["points"].frontier[0].cost
        heavy = 0.6 * 16 / cheap.predict(16)
        before = _scrape(server)
        stream = ("--trace", "poisson", "--rate", f"{heavy:.2f}", "--duration", "10")
        command = loadtest_command(server.url, ctx, spec["metric"], folder / "heavy", *stream)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        after = _scrape(server)
    finally:
        server.stop()
    usage = _cpu_per_request(before, after)
    records = read_records(folder / "loadtest" / "requests.jsonl")
    result = {
        "outside_ms": float(got["outside_p50_ms"]),
        "outside_samples_ms": [round(t * 1000, 4) for t in outside_times(records)],
        "cpu_per_request_ms": usage.get("beside_ms", 0.0),
        "heavy_rate": heavy,
        "choice": cheapest,
        "served": usage["served"],
        "summary": got,
    }
    cached.write_text(json.dumps(result, indent=2))
    log(
        f"{name}: {result['outside_ms']:.2f} ms per request outside the server's clock, "
        f"{result['cpu_per_request_ms']:.2f} ms of it CPU on the server's core"
    )
    return result


def simulate_like_server(ctx, policy: str, arrivals) -> SimulationResult:
    """The simulation of one server run: same arrivals, same query order, the measured
    outside time and per-request CPU."""
    cpu = ctx["cpu_ms"] / 1000
    samples = ctx.get("outside_samples_ms") or [ctx["overhead_ms"]]
    sim = simulate(
        ctx["points"],
        parse_schedule(policy),
        arrivals,
        [q.query_id for q in ctx["queries"]],
        slo=ctx["slo_ms"] / 1000,
        overhead=[max(0.0, t / 1000 - cpu) for t in samples],
        cpu_per_request=cpu,
    )
    return sim


def run_once(name, spec, ctx, policy, trace_name, trace, rate, seconds) -> dict:
    """One server run (fresh process) and the simulation of the same arrivals."""
    folder = run_folder(name, trace_name, policy)
    done = folder / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if ctx.get("resimulate"):
            arrivals = parse_trace(trace).arrivals(rate, seconds, result["server"].get("seed", 0))
            sim = simulate_like_server(ctx, policy, arrivals)
            result["simulated"] = summarize(sim.records, ctx["slo_ms"] / 1000, seconds)
            done.write_text(json.dumps(result, indent=2, default=str))
        return result
    foreign = ForeignCPU()
    server = serve(spec, ctx, policy, folder)
    try:
        server.wait()
        before = _scrape(server)
        real = loadtest(server.url, ctx, spec["metric"], folder / "loadtest", trace, rate, seconds)
        after = _scrape(server)
    finally:
        code = server.stop()
    disturbance = foreign.stop()
    sim = simulate_like_server(
        ctx, policy, parse_trace(trace).arrivals(rate, seconds, real.get("seed", 0))
    )
    simulated = summarize(sim.records, ctx["slo_ms"] / 1000, seconds)
    result = {
        "policy": policy,
        "trace": trace_name,
        "rate": rate,
        "seconds": seconds,
        "server": real,
        "simulated": simulated,
        "server_exit": code,
        "foreign_cpu": disturbance,
        "server_cpu": _cpu_per_request(before, after),
        "commit": code_version(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=2, default=str))
    return result


def simulated_lambda(spec, ctx) -> float:
    """The simulator's lambda_full: bisection on 60 s of Poisson arrivals."""
    full = ctx["points"][spec["full"]]
    low, high = 0.01, 8.0 / full.cost.predict(1)
    for _ in range(30):
        rate = (low * high) ** 0.5
        arrivals = parse_trace("poisson").arrivals(rate, 60, 0)
        sim = simulate_like_server(ctx, f"static:{spec['full']}", arrivals)
        ok = held(summarize(sim.records, ctx["slo_ms"] / 1000, 60), ctx["slo_ms"])
        low, high = (rate, high) if ok else (low, rate)
        if high / low < 1.02:
            break
    log(f"simulated lambda_full: {low:.2f} req/s")
    return low


def lambda_full(name, spec, ctx) -> float:
    """The highest Poisson rate static-full holds (p95 within the SLO), by bisection."""
    cached = OUT / name / "lambda_full.json"
    if cached.exists():
        return json.loads(cached.read_text())["lambda_full"]
    # start from the simulator's answer, then bracket it with the real server
    guess = simulated_lambda(spec, ctx)
    low, high = guess / 3, guess * 2
    probes = []
    for _ in range(7):
        rate = (low * high) ** 0.5
        result = run_once(
            name, spec, ctx, f"static:{spec['full']}", f"lambda-{rate:.3f}", "poisson", rate, 20
        )
        ok = held(result["server"], ctx["slo_ms"])
        probes.append({"rate": rate, "p95_ms": result["server"].get("p95_ms"), "held": ok})
        low, high = (rate, high) if ok else (low, rate)
        if high / low < 1.15:
            break
    cached.write_text(json.dumps({"lambda_full": low, "probes": probes}, indent=2))
    return low


def closed_sweep(name, spec, ctx, levels: str) -> list | None:
    """Closed-loop clients 1..64 against ``deadline``: throughput and latency per level."""
    if not levels:
        return None
    folder = OUT / name / "closed"
    done = folder / "levels.json"
    if done.exists():
        return json.loads(done.read_text())
    server = serve(spec, ctx, "deadline", folder)
    try:
        server.wait()
        log(f"{name}: closed loop {levels}")
        load = ("--closed", levels, "--duration", "10")
        command = loadtest_command(server.url, ctx, spec["metric"], folder / "loadtest", *load)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    finally:
        server.stop()
    levels_out = json.loads((folder / "loadtest" / "summary.json").read_text())["levels"]
    done.write_text(json.dumps(levels_out, indent=2))
    return levels_out


def run_soak(name, spec, ctx, lam: float, seconds: float) -> dict:
    """``deadline`` at 1x lambda_full for ``seconds``: errors, and the server's resident
    memory sampled every 10 s from /metrics (flat memory: last minute against the first)."""
    folder = OUT / name / "soak"
    done = folder / "soak.json"
    if done.exists():
        return json.loads(done.read_text())
    server = serve(spec, ctx, "deadline", folder)
    memory: list[tuple[float, float]] = []
    try:
        server.wait()
        log(f"{name}: soak {seconds:.0f} s at {lam:.1f} req/s")
        load = ("--trace", "poisson", "--rate", f"{lam:.4f}", "--duration", str(seconds))
        command = loadtest_command(server.url, ctx, spec["metric"], folder / "loadtest", *load)
        generator = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        started = time.time()
        while generator.poll() is None:
            for line in server.metrics().splitlines():
                if line.startswith("process_resident_memory_bytes"):
                    memory.append((time.time() - started, float(line.split()[-1])))
            time.sleep(10)
        if generator.returncode:
            raise RuntimeError(f"soak load generator failed ({generator.returncode})")
    finally:
        code = server.stop()
    summary = json.loads((folder / "loadtest" / "summary.json").read_text())["summary"]
    first = [m for t, m in memory if t <= 60] or [memory[0][1]]
    last = [m for t, m in memory if t >= memory[-1][0] - 60] or [memory[-1][1]]
    result = {
        "seconds": seconds,
        "rate": lam,
        "summary": summary,
        "server_exit": code,
        "memory": memory,
        "rss_first_min_mb": max(first) / 2**20,
        "rss_last_min_mb": max(last) / 2**20,
        "commit": code_version(),
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def code_version() -> str:
    """The commit the run measured (``+changes`` when the work tree differed from it outside
    ``results/``, which the benchmark itself rewrites)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def run_folder(name: str, trace_name: str, policy: str) -> Path:
    safe = policy.replace(":", "_").replace(">", "_").replace("%", "_").replace("@", "_")
    return OUT / name / "runs" / trace_name / safe


def keep_plots(name: str, spec: dict) -> None:
    """Copy the time series worth looking at next to the pipeline's results (the per-run
    plots stay local with the per-request records)."""
    for trace_name, policy in (
        ("burst", "deadline"),
        ("burst", "queue"),
        ("burst", f"static:{spec['full']}"),
        ("step", "deadline"),
    ):
        plot = run_folder(name, trace_name, policy) / "loadtest" / "timeseries.png"
        if plot.exists():
            target = OUT / name / f"timeseries-{trace_name}-{run_folder(name, '', policy).name}.png"
            shutil.copyfile(plot, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", default="retrieval,rerank")
    parser.add_argument("--traces", default=",".join(TRACES))
    parser.add_argument("--soak", type=float, default=0.0, help="seconds at 1x lambda_full")
    parser.add_argument(
        "--soak-on", default="retrieval", help="the pipelines --soak runs on (default: retrieval)"
    )
    parser.add_argument(
        "--recheck",
        default="",
        help="[PIPELINE/]TRACE:POLICY,... measured again into runs/<TRACE>-recheck (e.g. "
        "after a fix), listed apart from the main table",
    )
    parser.add_argument(
        "--slo-factor",
        type=float,
        default=4.0,
        help="SLO = this x the full pipeline's single-query time (+ overhead)",
    )
    parser.add_argument("--render", action="store_true", help="only rewrite schedule.md")
    parser.add_argument(
        "--resimulate",
        action="store_true",
        help="recompute the simulation of every stored server run (same arrivals)",
    )
    parser.add_argument("--closed", default="1,2,4,8,16,32,64", help="closed-loop clients")
    args = parser.parse_args()
    if args.render:
        report = json.loads((OUT / "schedule.json").read_text())
        (OUT / "schedule.md").write_text(render(report))
        return
    if shutil.which("taskset") is None:
        sys.exit("taskset is needed to pin the server and the load generator")
    report: dict = {"machine": machine(), "pipelines": {}}
    for name in args.pipelines.split(","):
        spec = PIPELINES[name]
        data = get_dataset(spec["dataset"])
        index = ensure_index(data)
        points, points_path = profile(name, spec, index, data)
        full = points[spec["full"]]
        slo_ms = round(args.slo_factor * full.cost.predict(1) * 1000 + 10)
        queries = read_topics(data.queries)
        queries = [q for q in queries if q.query_id in points[spec["full"]].per_query]
        ctx = {
            "index": index,
            "points": points,
            "points_path": points_path,
            "slo_ms": slo_ms,
            "overhead_ms": 0.0,
            "cpu_ms": 0.0,
            "resimulate": args.resimulate,
            "queries": queries,
            # relative: the committed reports name no machine's folders
            "topics": Path(os.path.relpath(data.queries)),
            "qrels": Path(os.path.relpath(data.qrels)),
        }
        frontier = ", ".join(str(p.choice) for p in points.frontier)
        log(f"{name}: SLO {slo_ms} ms; frontier: {frontier}")
        outside = measure_outside(name, spec, ctx)
        ctx["overhead_ms"], ctx["cpu_ms"] = outside["outside_ms"], outside["cpu_per_request_ms"]
        ctx["heavy_rate"] = outside.get("heavy_rate", 0)
        ctx["outside_samples_ms"] = outside["outside_samples_ms"]
        lam = lambda_full(name, spec, ctx)
        log(f"{name}: lambda_full = {lam:.2f} req/s")
        policies = [f"static:{p.choice}" for p in points.frontier] + ["queue", "deadline"]
        if f"static:{spec['full']}" not in policies:
            policies.insert(0, f"static:{spec['full']}")
        runs = []
        for trace_name in args.traces.split(","):
            trace, multiple, seconds = TRACES[trace_name]
            for policy in policies:
                log(f"{name}: {trace_name} {policy}")
                runs.append(
                    run_once(name, spec, ctx, policy, trace_name, trace, multiple * lam, seconds)
                )
        for item in filter(None, args.recheck.split(",")):
            pipeline, _, item = item.rpartition("/")
            if pipeline and pipeline != name:
                continue
            trace_name, _, policy = item.partition(":")
            trace, multiple, seconds = TRACES[trace_name]
            log(f"{name}: recheck {trace_name} {policy}")
            label = f"{trace_name}-recheck"
            run_once(name, spec, ctx, policy, label, trace, multiple * lam, seconds)
        keep_plots(name, spec)
        closed = closed_sweep(name, spec, ctx, args.closed)
        soak = (
            run_soak(name, spec, ctx, lam, args.soak)
            if args.soak > 0 and name in args.soak_on.split(",")
            else None
        )
        rechecks = [  # this call's and earlier ones
            json.loads(f.read_text())
            for f in sorted((OUT / name / "runs").glob("*-recheck/*/result.json"))
        ]
        report["pipelines"][name] = {
            "rechecks": rechecks,
            "closed": closed,
            "soak": soak,
            "full": spec["full"],
            "slo_ms": slo_ms,
            "outside_ms": ctx["overhead_ms"],
            "cpu_per_request_ms": ctx["cpu_ms"],
            "heavy_rate": ctx.get("heavy_rate", 0),
            "lambda_full": lam,
            "runs": runs,
            "frontier": [str(p.choice) for p in points.frontier],
        }
        (OUT / "schedule.json").write_text(json.dumps(report, indent=2, default=str))
    (OUT / "schedule.md").write_text(render(report))
    log(f"written {OUT / 'schedule.md'}")


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ratio(a, b) -> str:
    return "-" if a in (None, 0) or b is None else f"{b / a:.2f}"


def targets(block: dict) -> list[tuple[str, str, bool | None]]:
    """The issue's targets, each with what was measured."""
    runs = {(r["trace"], r["policy"]): r["server"] for r in block["runs"]}
    full = f"static:{block['full']}"
    out: list[tuple[str, str, bool | None]] = []
    burst_d, burst_f = runs.get(("burst", "deadline")), runs.get(("burst", full))
    if burst_d and burst_f:
        out.append(
            (
                "burst: deadline >= 99% within the SLO where static-full < 50%",
                f"deadline {_pct(burst_d['within_slo'])}, "
                f"static-full {_pct(burst_f['within_slo'])}",
                burst_d["within_slo"] >= 0.99 and burst_f["within_slo"] < 0.5,
            )
        )
    low_d, low_f = runs.get(("steady-0.5x", "deadline")), runs.get(("steady-0.5x", full))
    if low_d and low_f and low_f["effective_quality"]:
        share = low_d["effective_quality"] / low_f["effective_quality"]
        out.append(
            (
                "low load (0.5x): deadline's effective quality >= 95% of static-full's",
                f"{share * 100:.1f}%",
                share >= 0.95,
            )
        )
    for trace in TRACES:
        d = runs.get((trace, "deadline"))
        if not d:
            continue
        holding = [
            (p, r)
            for (t, p), r in runs.items()
            if t == trace and p.startswith("static:") and r["within_slo"] >= 0.99
        ]
        best = max(holding, key=lambda pr: pr[1]["effective_quality"] or 0, default=None)
        if best is not None:
            out.append(
                (
                    f"{trace}: deadline's quality above every static choice holding the SLO (99%)",
                    f"deadline {d['effective_quality']:.4f}, best holding static {best[0]} "
                    f"{best[1]['effective_quality']:.4f}",
                    d["effective_quality"] > best[1]["effective_quality"],
                )
            )
        q = runs.get((trace, "queue"))
        if q:
            out.append(
                (
                    f"{trace}: deadline misses the SLO less often than queue at equal or "
                    "better quality",
                    f"misses {_pct(1 - d['within_slo'])} vs {_pct(1 - q['within_slo'])}; quality "
                    f"{d['effective_quality']:.4f} vs {q['effective_quality']:.4f}",
                    None
                    if d["within_slo"] == q["within_slo"] == 1.0
                    and abs(d["effective_quality"] - q["effective_quality"]) < 0.001
                    else d["within_slo"] >= q["within_slo"]
                    and d["effective_quality"] >= q["effective_quality"] - 1e-9,
                )
            )
    compared = [
        r for r in block["runs"] if r["server"].get("p95_ms") and r["simulated"].get("p95_ms")
    ]

    def agree(r: dict, tolerance: float) -> bool:
        a, b = r["server"], r["simulated"]
        quality = (b["effective_quality"] or 0) / max(a["effective_quality"] or 0, 1e-9)
        return abs(b["p95_ms"] / a["p95_ms"] - 1) <= tolerance and abs(quality - 1) <= tolerance

    holding = [r for r in compared if (r["server"]["within_slo"] or 0) >= 0.5]
    if compared:
        ratios = sorted(r["simulated"]["p95_ms"] / r["server"]["p95_ms"] for r in compared)
        out.append(
            (
                "simulator's p95 and quality within 10% of the server's",
                f"{sum(agree(r, 0.1) for r in compared)} of {len(compared)} runs (within 20%: "
                f"{sum(agree(r, 0.2) for r in compared)}); of the {len(holding)} runs where the "
                f"server kept half its requests within the SLO: "
                f"{sum(agree(r, 0.1) for r in holding)} within 10%, "
                f"{sum(agree(r, 0.2) for r in holding)} within 20%; median sim/server p95 "
                f"{ratios[len(ratios) // 2]:.2f}",
                all(agree(r, 0.1) for r in compared),
            )
        )
    return out


def render(report: dict) -> str:
    lines = [
        "# The elastic schedule under load",
        "",
        "`python benchmarks/schedule.py` (see its docstring for the setup). Every row is a "
        "real server run (its own process, pinned to core 0, one torch thread) driven by "
        "`elasticir loadtest` pinned to core 1; the simulator ran the same arrivals "
        "against the profiled points.",
        "",
    ]
    m = report["machine"]
    lines.append(f"Machine: {m['cpu_model']} ({m['cores']} cores), flags {', '.join(m['flags'])}.")
    for name, block in report["pipelines"].items():
        spec = PIPELINES[name]
        lines += [
            "",
            f"## {name} ({spec['dataset']}, {spec['metric']}): SLO {block['slo_ms']} ms, "
            f"lambda_full {block['lambda_full']:.1f} req/s",
            "",
        ]
        points = OperatingPoints.load(OUT / name / "points.json")
        lines += [
            "Operating points (profiled pinned to one core; `results/schedule/"
            f"{name}/points.png`):",
            "",
            f"| choice | 1 query ms | 16 queries ms | {points.metric} | frontier |",
            "|---|---|---|---|---|",
        ]
        for p in sorted(points.points, key=lambda p: p.cost.predict(1)):
            lines.append(
                f"| {p.choice} | {p.cost.predict(1) * 1000:.1f} | "
                f"{p.cost.predict(16) * 1000:.1f} | {p.value(points.metric):.4f} | "
                f"{'yes' if p.frontier else ''} |"
            )
        shares = [r["foreign_cpu"]["foreign_share"] for r in block["runs"] if r.get("foreign_cpu")]
        if "outside_ms" in block:
            lines += [
                "",
                f"Per request, {block['outside_ms']:.2f} ms (median) pass outside the server's "
                "own clock (HTTP, JSON, the client), measured at 20 req/s on the cheapest "
                "choice; under a Poisson stream at 60% of that choice's full-batch throughput "
                f"({block.get('heavy_rate', 0):.0f} req/s), the server spends "
                f"{block.get('cpu_per_request_ms', 0):.2f} ms of CPU per request on its own core "
                "beside the model (its /metrics: process CPU minus model CPU). The simulator "
                "draws each answer's outside time from the light run's answers (less that CPU) "
                "and adds the CPU to every batch, per request.",
            ]
        if shares:
            worst = max(
                block["runs"], key=lambda r: (r.get("foreign_cpu") or {}).get("foreign_share", 0)
            )
            lines += [
                "",
                "Other processes on the machine during the runs (CPU outside this benchmark, "
                f"from /proc/stat): median {np.median(shares) * 100:.1f}% of a core, at most "
                f"{max(shares) * 100:.1f}% (run {worst['trace']} {worst['policy']}).",
            ]
        commits: dict[str, list[str]] = {}
        for r in block["runs"]:
            commits.setdefault(r.get("commit", "not recorded (before bf96466)"), []).append(
                f"{r['trace']} {r['policy']}"
            )
        if len(commits) > 1:
            lines += [
                "",
                "Runs measured on different code: "
                + "; ".join(
                    f"{c}: {len(v)} runs ({', '.join(sorted({x.split()[0] for x in v}))})"
                    for c, v in commits.items()
                )
                + " (`git log` says what changed).",
            ]
        lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
        for target, value, met in targets(block):
            verdict = "tie (neither misses)" if met is None else "yes" if met else "**no**"
            lines.append(f"| {target} | {value} | {verdict} |")
        lines += ["", "### Server runs", ""]
        rows = [
            {
                "meta": {
                    "name": f"{r['trace']} {r['policy']}",
                    "policy": r["policy"],
                    "trace": r["trace"],
                    "rate": r["rate"],
                },
                "summary": r["server"],
            }
            for r in block["runs"]
        ]
        lines.append(comparison_table(rows))
        if block.get("rechecks"):
            lines += [
                "### Rechecks (measured again later, on the code named)",
                "",
                "| run | commit | p95 ms | within SLO | eff. quality | sim p95 ms | sim within |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in block["rechecks"]:
                a, b = r["server"], r["simulated"]
                lines.append(
                    f"| {r['trace']} {r['policy']} | {r.get('commit', '-')} | "
                    f"{a['p95_ms']:.1f} | {_pct(a['within_slo'])} | "
                    f"{a['effective_quality']:.4f} | {b['p95_ms']:.1f} | "
                    f"{_pct(b['within_slo'])} |"
                )
            lines.append("")
        if block.get("closed"):
            lines += [
                "### Closed loop under deadline (10 s per level)",
                "",
                "| clients | throughput (req/s) | p50 ms | p95 ms | within SLO | eff. quality "
                "| choices (share of answers) |",
                "|---|---|---|---|---|---|---|",
            ]
            for level in block["closed"]:
                shares = sorted((level.get("choice_shares") or {}).items(), key=lambda kv: -kv[1])
                picked = ", ".join(f"{c} {v * 100:.0f}%" for c, v in shares if v >= 0.01)
                quality = level.get("effective_quality")
                lines.append(
                    f"| {level['concurrency']} | {level['throughput']:.1f} | "
                    f"{level['p50_ms']:.1f} | {level['p95_ms']:.1f} | "
                    f"{_pct(level['within_slo'])} | "
                    f"{'-' if quality is None else f'{quality:.4f}'} | {picked} |"
                )
            lines.append("")
        soak = block.get("soak")
        if soak:
            got = soak["summary"]
            lines += [
                f"Soak: {soak['seconds'] / 60:.0f} min of Poisson at {soak['rate']:.1f} "
                f"req/s under deadline: {got['count']} requests, {got['errors']} errors, "
                f"{got['rejected']} rejected, p95 {got['p95_ms']:.1f} ms, within SLO "
                f"{_pct(got['within_slo'])}; server RSS {soak['rss_first_min_mb']:.0f} MB "
                f"in the first minute, {soak['rss_last_min_mb']:.0f} MB in the last.",
                "",
            ]
        else:
            lines += ["Soak: not run in this report (`--soak 1800`).", ""]
        lines += [
            "### Simulator against server (same arrivals)",
            "",
            "| run | server p50 ms | sim p50 ms | server p95 ms | sim p95 ms | sim/server "
            "p95 | server eff. quality | sim eff. quality | sim/server quality | server CPU "
            "beside the model, ms/query | other processes, share of a core |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in block["runs"]:
            a, b = r["server"], r["simulated"]
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            q = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            fmt2 = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(
                f"| {r['trace']} {r['policy']} | {fmt(a.get('p50_ms'))} | "
                f"{fmt(b.get('p50_ms'))} | {fmt(a.get('p95_ms'))} | {fmt(b.get('p95_ms'))} "
                f"| {_ratio(a.get('p95_ms'), b.get('p95_ms'))} | "
                f"{q(a.get('effective_quality'))} | {q(b.get('effective_quality'))} | "
                f"{_ratio(a.get('effective_quality'), b.get('effective_quality'))} | "
                f"{fmt2((r.get('server_cpu') or {}).get('beside_ms'))} | "
                f"{_pct((r.get('foreign_cpu') or {}).get('foreign_share'))} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
