"""The elastic schedule on this machine: static choices, ``queue`` and ``deadline`` under load,
the real server against the simulator.

    python benchmarks/schedule.py                        # both pipelines, every trace
    python benchmarks/schedule.py --pipelines retrieval  # one of them
    python benchmarks/schedule.py --soak 1800            # + 30 min at 1x lambda_full

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
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from elasticir.bench import log, machine  # noqa: E402
from elasticir.data import get_dataset  # noqa: E402
from elasticir.data.topics import read_topics  # noqa: E402
from elasticir.schedule.points import OperatingPoints  # noqa: E402
from elasticir.schedule.policies import parse_schedule  # noqa: E402
from elasticir.schedule.report import comparison_table, summarize  # noqa: E402
from elasticir.schedule.traces import parse_trace  # noqa: E402
from elasticir.simulation import simulate  # noqa: E402

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
            "L6-W50",
            "L2-W50",
            "full>dipair%20",
            "full>ranker%20",
            "full>ranker%20@calibrated:cutoff-top20",
            "full>ranker%20@calibrated:rank-top20",
            "full>ranker%10",
            "L6-W50>ranker%20@calibrated:cutoff-top20",
        ],
        "full": "full>ranker%20",
    },
}
TRACES = {  # name: (trace spec, rate multiple of lambda_full, seconds)
    "steady-0.5x": ("poisson", 0.5, 40),
    "steady-1x": ("poisson", 1.0, 40),
    "steady-2x": ("poisson", 2.0, 40),
    "steady-4x": ("poisson", 4.0, 40),
    "burst": ("burst:low=0.5,high=4,on=30,every=120", 1.0, 150),
    "step": ("step:low=0.5,high=2,at=0.5", 1.0, 60),
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


def loadtest(
    url: str,
    trace: str,
    rate: float,
    seconds: float,
    topics: Path,
    qrels: Path,
    metric: str,
    out: Path,
    closed: str | None = None,
) -> dict:
    command = [
        "taskset",
        "-c",
        LOADGEN_CPU,
        "elasticir",
        "loadtest",
        url,
        "--trace",
        trace,
        "--rate",
        f"{rate:.4f}",
        "--duration",
        str(seconds),
        "--topics",
        str(topics),
        "--qrels",
        str(qrels),
        "--metric",
        metric,
        "-o",
        str(out),
        "--overwrite",
    ]
    if closed:
        command += ["--closed", closed]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


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
            str(data.queries),
            "--qrels",
            str(data.qrels),
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


def run_once(name, spec, ctx, policy, trace_name, trace, rate, seconds) -> dict:
    """One server run (fresh process) and the simulation of the same arrivals."""
    folder = (
        OUT
        / name
        / "runs"
        / trace_name
        / policy.replace(":", "_").replace(">", "_").replace("%", "_").replace("@", "_")
    )
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    server = Server(
        ctx["index"],
        spec["rerank"],
        ctx["points_path"],
        policy,
        ctx["slo_ms"],
        folder / "server.log",
    )
    try:
        server.wait()
        real = loadtest(
            server.url,
            trace,
            rate,
            seconds,
            ctx["topics"],
            ctx["qrels"],
            spec["metric"],
            folder / "loadtest",
        )
    finally:
        code = server.stop()
    sim = simulate(
        ctx["points"],
        parse_schedule(policy),
        parse_trace(trace).arrivals(rate, seconds, real.get("seed", 0)),
        [q.query_id for q in ctx["queries"]],
        slo=ctx["slo_ms"] / 1000,
        overhead=ctx["overhead_ms"] / 1000,
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
    }
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=2, default=str))
    return result


def lambda_full(name, spec, ctx) -> float:
    """The highest Poisson rate static-full holds (p95 within the SLO), by bisection."""
    cached = OUT / name / "lambda_full.json"
    if cached.exists():
        return json.loads(cached.read_text())["lambda_full"]
    full = ctx["points"][spec["full"]]
    # start from the simulator's answer, then bracket it with the real server
    low, high = 0.05, 4.0 / full.cost.predict(1)
    probes = []
    for _ in range(7):
        rate = (low * high) ** 0.5
        result = run_once(
            name, spec, ctx, f"static:{spec['full']}", f"lambda-{rate:.3f}", "poisson", rate, 25
        )
        ok = held(result["server"], ctx["slo_ms"])
        probes.append({"rate": rate, "p95_ms": result["server"].get("p95_ms"), "held": ok})
        low, high = (rate, high) if ok else (low, rate)
        if high / low < 1.15:
            break
    cached.write_text(json.dumps({"lambda_full": low, "probes": probes}, indent=2))
    return low


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", default="retrieval,rerank")
    parser.add_argument("--traces", default=",".join(TRACES))
    parser.add_argument("--soak", type=float, default=0.0, help="seconds at 1x lambda_full")
    parser.add_argument(
        "--slo-factor",
        type=float,
        default=4.0,
        help="SLO = this x the full pipeline's single-query time (+ overhead)",
    )
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset is needed to pin the server and the load generator")
    report: dict = {"machine": machine(), "pipelines": {}}
    for name in args.pipelines.split(","):
        spec = PIPELINES[name]
        data = get_dataset(spec["dataset"])
        index = ensure_index(data)
        points, points_path = profile(name, spec, index, data)
        full = points[spec["full"]]
        overhead_ms = 2.0  # HTTP + JSON per request, measured below against the server
        slo_ms = round(args.slo_factor * full.cost.predict(1) * 1000 + 10)
        queries = read_topics(data.queries)
        queries = [q for q in queries if q.query_id in points[spec["full"]].per_query]
        ctx = {
            "index": index,
            "points": points,
            "points_path": points_path,
            "slo_ms": slo_ms,
            "overhead_ms": overhead_ms,
            "queries": queries,
            "topics": data.queries,
            "qrels": data.qrels,
        }
        frontier = ", ".join(str(p.choice) for p in points.frontier)
        log(f"{name}: SLO {slo_ms} ms; frontier: {frontier}")
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
        report["pipelines"][name] = {
            "slo_ms": slo_ms,
            "lambda_full": lam,
            "runs": runs,
            "frontier": [str(p.choice) for p in points.frontier],
        }
        (OUT / "schedule.json").write_text(json.dumps(report, indent=2, default=str))
    (OUT / "schedule.md").write_text(render(report))
    log(f"written {OUT / 'schedule.md'}")


def render(report: dict) -> str:
    lines = ["# The elastic schedule under load", ""]
    m = report["machine"]
    lines.append(f"Machine: {m['cpu_model']} ({m['cores']} cores), flags {', '.join(m['flags'])}.")
    for name, block in report["pipelines"].items():
        lines += [
            "",
            f"## {name}: SLO {block['slo_ms']} ms, lambda_full {block['lambda_full']:.2f} req/s",
            "",
        ]
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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
