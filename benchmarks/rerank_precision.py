"""bfloat16 autocast against fp32 for reranking: the same models, both precisions, one run.

    python benchmarks/rerank_precision.py --ranker models/ranker-minilm-anchor

``elasticir rerank --precision bf16`` (``ElasticRanker(..., precision="bf16")``) runs the
encoder under bfloat16 autocast. On CPUs with AMX or AVX512-BF16 that is faster; on others it
only adds conversions. This script measures, on this machine:

* quality: the ElasticRanker at full compute and the base bi-encoder's scores (the reference
  reranker), each at fp32 and bf16, reranking the shipped DL19 BM25 top-100 and the
  bi-encoder's dense top-100 (43 queries): nDCG@10 and RR(rel=2)@10 with the official qrels,
  how far bf16 moves each query's top 10 from fp32's (mean 1 - nDCG@10 against fp32's own
  top 10, the loss early-exit calibration bounds), and the largest score change;
* speed: pairs/s of every scorer over the same ``--speed-queries`` queries x their BM25
  candidates, in interleaved rounds (each scorer repeats its passes for at least
  ``--speed-min-seconds``), medians over rounds, bf16/fp32 ratios taken within a round.

It also records whether the CPU reports AMX / AVX512-BF16 (``/proc/cpuinfo`` flags), since
the speed ratio depends on it. Writes ``results/rerank-precision.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import (  # noqa: E402
    DL_MEASURES,
    consistency_risk,
    cut_run,
    dense_search,
    encode,
    interleaved_rates,
    load_corpora,
    log,
    machine,
    median_rates,
    report_path,
)
from elasticir.data import get_dataset, read_qrels, read_run  # noqa: E402
from elasticir.data.topics import read_topics  # noqa: E402
from elasticir.eval.measures import evaluate  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.rerank.pipeline import BiEncoderScorer, Rerank, RunFile  # noqa: E402
from elasticir.rerank.ranker import ElasticRanker, RankerScorer  # noqa: E402

PRECISIONS = ("fp32", "bf16")
CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranker", required=True, help="Trained ElasticRanker directory")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--speed-queries", type=int, default=10)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--speed-min-seconds", type=float, default=3.0)
    parser.add_argument(
        "--limit", type=int, default=None, help="Evaluate on the first N queries (smoke test)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/rerank-precision"))
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    dl = get_dataset("msmarco-dl19")
    queries = read_topics(dl.queries)[: args.limit]
    passages = load_corpora([dl.corpus])
    base = {p: ElasticDenser(precision=p) for p in PRECISIONS}
    rankers = {p: ElasticRanker(args.ranker, precision=p) for p in PRECISIONS}
    scorers = {}
    for p in PRECISIONS:
        scorers[f"ElasticRanker full, {p}"] = RankerScorer(rankers[p])
        scorers[f"bi-encoder scores, {p}"] = BiEncoderScorer(base[p])

    store = EmbeddingStore(encode(base["fp32"], dl.corpus, "dl19")).load()
    wanted = {q.query_id for q in queries}
    firsts = {
        "dl19 BM25 top-100 (shipped run)": cut_run(read_run(dl.runs["bm25"]), args.depth, wanted),
        "dl19 dense top-100": dense_search(base["fp32"], store, queries, args.depth),
    }
    qrels = {q: j for q, j in read_qrels(dl.qrels).items() if q in wanted}
    quality: dict = {}
    for name, first in firsts.items():
        log(f"reranking: {name}")
        table: dict = {"first stage": evaluate(first, qrels, DL_MEASURES)}
        runs: dict = {}
        for label, scorer in scorers.items():
            runs[label] = (RunFile(first) >> Rerank(scorer, passages, name=label)).run(queries)
            table[label] = evaluate(runs[label], qrels, DL_MEASURES)
        for label in scorers:
            if label.endswith("bf16"):
                exact = runs[label.replace("bf16", "fp32")]
                table[label]["risk_vs_fp32"] = consistency_risk(runs[label], exact)
                table[label]["max_score_change"] = _max_change(runs[label], exact)
        quality[name] = table

    log("speed: pairs/s, interleaved rounds")
    speed = _speed(scorers, firsts["dl19 BM25 top-100 (shipped run)"], queries, passages, args)
    here = machine()
    report = {
        "machine": {**here, "cpu_flags": _cpu_flags(here["flags"])},
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ranker": args.ranker,
        "command": "python benchmarks/rerank_precision.py " + " ".join(sys.argv[1:]),
        "queries": len(queries),
        "speed_setup": {
            "queries": args.speed_queries,
            "rounds": args.speed_rounds,
            "min_seconds": args.speed_min_seconds,
        },
        "quality": quality,
        "speed": speed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


def _cpu_flags(flags: list[str]) -> dict[str, bool]:
    """Which native bf16 flags of :data:`CPU_FLAGS` are among ``flags`` (``machine()``'s);
    ``{}`` where none are known (no ``/proc/cpuinfo``)."""
    return {flag: flag in flags for flag in CPU_FLAGS} if flags else {}


def _max_change(run: dict, reference: dict) -> float:
    """The largest |score change| over all pairs, relative to the mean within-query standard
    deviation of the reference scores."""
    changes, spreads = [], []
    for qid, docs in reference.items():
        ref = np.array(list(docs.values()))
        mine = np.array([run[qid][d] for d in docs])
        changes.append(float(np.abs(mine - ref).max()))
        spreads.append(float(ref.std()))
    return round(max(changes) / float(np.mean(spreads)), 4)


def _speed(scorers: dict, first: dict, queries, passages, args) -> dict:
    texts = {q.query_id: q.text for q in queries}
    chosen = [q for q in first if q in texts][: args.speed_queries]
    work = [(texts[q], [passages[d] for d in first[q]]) for q in chosen]
    rates = interleaved_rates(scorers, work, args.speed_rounds, args.speed_min_seconds)
    return median_rates(rates, lambda label: label.replace("bf16", "fp32"), "vs_fp32")


def render(report: dict) -> str:
    flags = report["machine"].get("cpu_flags", {})
    native = ", ".join(f for f, present in flags.items() if present) or "none"
    setup = report["speed_setup"]
    lines = [
        "# Reranking at bf16 against fp32",
        "",
        f"Machine: {report['machine']}. Native bf16 CPU flags: {native}. Ranker "
        f"`{report['ranker']}`; {report['queries']} DL19 queries; measured "
        f"{report['started']} to {report['finished']}. Regenerate: `{report['command']}`.",
        "",
        "Risk vs fp32: mean over queries of 1 - nDCG@10 of the bf16 ranking against the fp32 "
        "ranking's own top 10 (0: the same top 10 in the same order). Largest score change: "
        "the largest |bf16 - fp32| over all pairs, over the mean within-query spread (standard "
        "deviation) of the fp32 scores.",
    ]
    for name, table in report["quality"].items():
        lines += [
            "",
            f"## {name}",
            "",
            "| reranker | nDCG@10 | RR(rel=2)@10 | risk vs fp32 | largest score change |",
            "|---|---|---|---|---|",
        ]
        for label, row in table.items():
            risk = row.get("risk_vs_fp32", "")
            change = row.get("max_score_change", "")
            lines.append(
                f"| {label} | {row['nDCG@10']:.4f} | {row['RR(rel=2)@10']:.4f} | {risk} | "
                f"{change} |"
            )
    lines += [
        "",
        "## Speed (DL19 BM25 candidates)",
        "",
        f"{setup['rounds']} interleaved rounds over the same {setup['queries']} queries x their "
        f"candidates; a scorer repeats its passes for at least {setup['min_seconds']:g} s per "
        "round; medians over rounds, ratios taken within a round.",
        "",
        "| reranker | pairs/s | vs the same scorer at fp32 |",
        "|---|---|---|",
    ]
    for label, row in report["speed"].items():
        lines.append(f"| {label} | {row['pairs_per_s']} | {row['vs_fp32']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
