"""Calibrated early exit with a rank-aware exit classifier, against the exit-only families and
a calibrated list cutoff, on DL19's dense and BM25 top-100 and NQ's dense top-100.

    python benchmarks/rank_exit.py --ranker models/ranker-minilm-anchor --out results/rank-exit

``benchmarks/exit_headroom.py`` found that the ranker's lower exits barely predict its last one
(within-query correlation 0.17-0.48) while the first stage's order does (0.79). The ``rank``
family (:class:`elasticir.rerank.policies.RankPolicy`) gives the exit classifier the
candidate's first-stage rank; this script measures what that buys once calibrated, next to
the peer that needs no early exit at all, the ``cutoff`` family
(:class:`elasticir.rerank.policies.CutoffPolicy`): reranking only the first stage's top R.

For each first stage (the base bi-encoder's dense top-100 over the DL19 pool, BM25 top-100
over the same pool, and the dense top-100 over the NQ passages plus the DL19 pool):

* calibration: ``--calibration-queries`` unlabelled queries, their top-100 from that first
  stage. For DL19: MS MARCO dev-subset queries (none the ranker was trained on, drawn as
  ``benchmarks/rerank.py`` draws them); for BM25, a Lucene index of the DL19 pool built here,
  not the shipped run, which covers the DL19 queries only. For NQ: DPR NQ dev questions (none
  of them an NQ test question). Every family is calibrated by Learn-then-Test (consistency
  loss, no labels, ``--delta``/``--epsilon``); the rank family fits its exit weights on every
  third query and tests on the others; the cutoff family tests R = 1000, 500, ..., 10;
* evaluation on the 43 DL19 queries, or the first ``--nq-queries`` NQ test questions (never
  used to calibrate): the measured consistency risk against the full ranker, nDCG@10 (DL19,
  qrels) or top-1/5/20 answer accuracy (NQ), FLOPs speedups;
* speed: candidates reranked per second by each calibrated policy and by the full ranker, run
  for real (early exit and cutoff included) on ``--speed-queries`` evaluation queries x their
  top-100 of that first stage, in interleaved rounds (ratios to the full ranker within a
  round).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import (  # noqa: E402
    WORK,
    concat_stores,
    cut_run,
    dense_search,
    encode,
    interleaved_rates,
    load_corpora,
    log,
    machine,
    median_rates,
    report_path,
    trained_query_ids,
)
from elasticir.data import get_dataset, read_qas, read_qrels, read_run  # noqa: E402
from elasticir.data.topics import read_queries_any, read_topics  # noqa: E402
from elasticir.eval.measures import evaluate  # noqa: E402
from elasticir.eval.qa import answer_accuracy, passage_texts  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.rerank.policies import (  # noqa: E402
    FAMILIES,
    PolicyFamily,
    calibrate_records,
    calibration_queries,
    first_stage_ranks,
    query_losses,
    simulate,
)
from elasticir.rerank.ranker import ElasticRanker, RankerScorer  # noqa: E402

NQ_KS = (1, 5, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranker", required=True, help="Trained ElasticRanker directory")
    parser.add_argument("--out", type=Path, default=Path("results/rank-exit"))
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--calibration-queries", type=int, default=200)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--nq-queries", type=int, default=100, help="NQ test questions evaluated")
    parser.add_argument("--speed-queries", type=int, default=8)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--speed-min-seconds", type=float, default=10.0)
    parser.add_argument("--limit", type=int, default=None, help="First N DL19 queries (smoke)")
    args = parser.parse_args()

    dl, nq = get_dataset("msmarco-dl19"), get_dataset("nq-open")
    ranker = ElasticRanker(args.ranker)
    base = ElasticDenser()
    report: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    report["setup"] = {
        "ranker": args.ranker,
        "delta": args.delta,
        "epsilon": args.epsilon,
        "calibration_queries": args.calibration_queries,
        "depth": args.depth,
        "nq_queries": args.nq_queries,
        "speed": {
            "rounds": args.speed_rounds,
            "queries": args.speed_queries,
            "min_seconds": args.speed_min_seconds,
        },
    }
    passages = {"dl19": load_corpora([dl.corpus]), "nq+dl19": load_corpora([nq.corpus, dl.corpus])}
    dl_vectors = EmbeddingStore(encode(base, dl.corpus, "dl19")).load()
    nq_vectors = concat_stores(EmbeddingStore(encode(base, nq.corpus, "nq")).load(), dl_vectors)
    dl_queries = read_topics(dl.queries)[: args.limit]
    nq_queries = read_topics(nq.queries)[: args.nq_queries]
    evaluated = {q.query_id for q in dl_queries}
    qrels = {q: j for q, j in read_qrels(dl.qrels).items() if q in evaluated}
    asked = {q.text.strip() for q in nq_queries}
    qas = [pair for pair in read_qas(nq.qas) if pair.question.strip() in asked]
    nq_texts = passage_texts(passages["nq+dl19"].values())

    dev = read_queries_any(get_dataset("msmarco-dev-subset").queries)
    trained = trained_query_ids(ranker)
    dev = [q for q in dev if q.query_id not in trained]
    sample = random.Random(13).sample(dev, min(args.calibration_queries, len(dev)))
    nq_dev_set = get_dataset("dpr-nq-dev")
    nq_dev = read_queries_any(nq_dev_set.queries or nq_dev_set.qas)
    nq_sample = random.Random(13).sample(nq_dev, min(args.calibration_queries, len(nq_dev)))
    report["setup"]["calibration_excluded"] = len(trained)

    log("first stages")
    bm25 = _bm25(dl.corpus)
    stages = {
        "DL19, dense top-100": (
            "dl19",
            sample,
            dense_search(base, dl_vectors, sample, args.depth),
            dl_queries,
            dense_search(base, dl_vectors, dl_queries, args.depth),
        ),
        "DL19, BM25 top-100": (
            "dl19",
            sample,
            bm25.search(sample, k=args.depth),
            dl_queries,
            cut_run(read_run(dl.runs["bm25"]), args.depth, evaluated),
        ),
        "NQ with the DL19 distractors, dense top-100": (
            "nq+dl19",
            nq_sample,
            dense_search(base, nq_vectors, nq_sample, args.depth),
            nq_queries,
            dense_search(base, nq_vectors, nq_queries, args.depth),
        ),
    }
    bm25.close()

    report["stages"] = {}
    for name, (corpus, cal_queries, calibration_run, queries, evaluation_run) in stages.items():
        log(f"{name}: calibration records")
        cal = _records(ranker, calibration_run, cal_queries, passages[corpus], args.depth)
        calibrations = {
            family: calibrate_records(
                cal["records"], cal["offsets"], PolicyFamily(family), args.delta, args.epsilon
            )
            for family in FAMILIES
            if family != "classifier" or ranker.has_classifier
        }
        log(f"{name}: evaluation records")
        ev = _records(ranker, evaluation_run, queries, passages[corpus], args.depth)

        def quality(run: dict, q=queries, c=corpus) -> dict:
            if c == "dl19":
                return {"nDCG@10": round(evaluate(run, qrels, ("nDCG@10",))["nDCG@10"], 4)}
            accuracy = answer_accuracy(run, qas, nq_texts, ks=NQ_KS, topics=q)
            return {key: round(value, 4) for key, value in accuracy.items()}

        rows = {"full": _evaluate_scores(ev, ev["records"].scores[:, -1], quality, 1.0)}
        for family, calibration in calibrations.items():
            exits, scores = simulate(calibration.policy, ev["records"], ev["ranks"])
            spent = float((exits * ev["records"].layer_cost).sum())
            flops = float(ev["records"].layer_cost.sum()) * ev["records"].depth / spent
            rows[family] = _evaluate_scores(ev, scores, quality, flops)
        log(f"{name}: speed")
        speed = _speed(ranker, calibrations, evaluation_run, queries, passages[corpus], args)
        report["stages"][name] = {
            "corpus": corpus,
            "calibration": {f: c.to_dict() for f, c in calibrations.items()},
            "evaluation": rows,
            "speed": speed,
        }
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


def _bm25(corpus: Path):
    from elasticir.retrieve.bm25 import BM25Searcher, build_bm25_index

    index = WORK / "dl19.bm25"
    if not (index / "meta.json").exists():
        build_bm25_index(corpus, index)
    return BM25Searcher(index)


def _records(ranker, run: dict, queries, passages: dict, depth: int) -> dict:
    """Every exit of the full ranker on each query's top ``depth`` (first-stage order)."""
    texts = {q.query_id: q.text for q in queries}
    data = calibration_queries(
        run,
        texts,
        {d: passages[d].encoder_text() for docs in run.values() for d in docs},
        depth=depth,
    )
    order = [qid for qid, docs in run.items() if qid in texts and docs]
    q_texts = [d.query for d in data for _ in d.passages]
    p_texts = [p for d in data for p in d.passages]
    offsets = np.cumsum([0, *(len(d.passages) for d in data)])
    records = ranker.layer_records(q_texts, p_texts, progress=True)
    ranked = {
        qid: [d for d, _ in sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))[:depth]]
        for qid in order
    }
    return {
        "records": records,
        "offsets": offsets,
        "ranks": first_stage_ranks(offsets),
        "qids": order,
        "docs": ranked,
    }


def _evaluate_scores(data: dict, scores: np.ndarray, quality, flops: float) -> dict:
    reference = data["records"].scores[:, -1]
    losses = query_losses(scores, reference, data["offsets"])
    run: dict = {}
    offsets = data["offsets"]
    for q, qid in enumerate(data["qids"]):
        a, b = int(offsets[q]), int(offsets[q + 1])
        # trec_eval reads scores as 32-bit floats: the tiered scores (logit minus PRUNE_GAP per
        # skipped layer, a cutoff's skipped_scores) go in as their order, n for the first
        # down to 1
        order = np.argsort(-scores[a:b].astype(np.float64), kind="stable")
        places = np.empty(b - a, dtype=np.int64)
        places[order] = np.arange(b - a, 0, -1)
        run[qid] = {doc: float(places[i]) for i, doc in enumerate(data["docs"][qid])}
    return {
        "risk": round(float(losses.mean()), 4),
        **quality(run),
        "flops_speedup": round(flops, 3),
    }


def _speed(ranker, calibrations, run, queries, passages, args) -> dict:
    texts = {q.query_id: q.text for q in queries}
    chosen = [q for q in run if q in texts][: args.speed_queries]
    work = [
        (
            texts[q],
            [
                passages[d]
                for d, _ in sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0]))[: args.depth]
            ],
        )
        for q in chosen
    ]
    scorers = {"full": RankerScorer(ranker)}
    for family, calibration in calibrations.items():
        scorers[family] = RankerScorer(ranker, calibration.level, calibration.policy)
    rates = interleaved_rates(scorers, work, args.speed_rounds, args.speed_min_seconds)
    return median_rates(rates, lambda label: "full", "speedup_vs_full")


def render(report: dict) -> str:
    setup = report["setup"]
    speed = setup["speed"]
    lines = [
        "# Calibrated early exit: a rank-aware exit classifier against the exit-only families "
        "and a calibrated cutoff",
        "",
        f"Machine: {report['machine']}. Run {report['started']} to {report['finished']}. "
        f"Ranker `{setup['ranker']}` (never trained on DL19 or NQ test queries or judgements). "
        f"Command: `python benchmarks/rank_exit.py --ranker {setup['ranker']} "
        f"--calibration-queries {setup['calibration_queries']} --nq-queries "
        f"{setup['nq_queries']}`.",
        "",
        f"Calibration: {setup['calibration_queries']} unlabelled queries per first stage x their "
        f"top {setup['depth']} from the same kind of first stage: MS MARCO dev-subset queries "
        f"for DL19 (the {setup['calibration_excluded']} the ranker was trained on left out), "
        f"DPR NQ dev questions for NQ. delta {setup['delta']}, epsilon {setup['epsilon']}, "
        "consistency loss (1 - nDCG@10 against the full ranker's own top 10, no labels). The "
        "rank family fits its exit weights on every third calibration query and runs "
        "Learn-then-Test on the others; the cutoff family tests R = 1000, 500, 300, 200, 150, "
        "100, 90, ..., 10. Evaluation: the DL19 queries and the first "
        f"{setup['nq_queries']} NQ test questions, never used to calibrate. Speed: candidates "
        f"reranked per second, every policy run for real, {speed['rounds']} interleaved rounds "
        f"over {speed['queries']} evaluation queries x their top {setup['depth']} (each scorer "
        f"at least {speed['min_seconds']:g} s a round), medians, ratios to the full ranker "
        "taken within a round.",
        "",
    ]
    for name, stage in report["stages"].items():
        dl = stage.get("corpus", "dl19") == "dl19"
        quality = ["nDCG@10"] if dl else [f"Top{k}" for k in NQ_KS]
        lines += [
            f"## {name}",
            "",
            "| policy | chosen | calibration risk (queries) | held-out risk | "
            + " | ".join(quality)
            + f" | {quality[0]} drop vs full, points | FLOPs speedup | candidates/s | vs full | "
            "within delta and >= 1.5x |",
            "|---|---|---|---|" + "---|" * len(quality) + "---|---|---|---|---|",
        ]
        full = stage["evaluation"]["full"]
        for label, row in stage["evaluation"].items():
            cal = stage["calibration"].get(label)
            if label == "full":
                chosen, cal_risk = "no early exit", ""
            else:
                spec = cal["policy"]
                chosen = f"`{spec if len(spec) <= 40 else spec.split(',w=')[0] + ',w=...'}`"
                fit = f" + {cal['fit_queries']} to fit" if cal.get("fit_queries") else ""
                cal_risk = f"{cal['risk']:.4f} ({cal['n_queries']}{fit})"
            rate = stage["speed"][label]
            drop = (full[quality[0]] - row[quality[0]]) * 100
            meets = (
                ""
                if label == "full"
                else (
                    "yes"
                    if row["risk"] <= setup["delta"] and rate["speedup_vs_full"] >= 1.5
                    else "no"
                )
            )
            values = " | ".join(f"{row[m]:.4f}" for m in quality)
            lines.append(
                f"| {label} | {chosen} | {cal_risk} | {row['risk']:.4f} | {values} "
                f"| {drop:+.2f} | {row['flops_speedup']:.2f}x | {rate['pairs_per_s']} | "
                f"{rate['speedup_vs_full']:.2f}x | {meets} |"
            )
        lines.append("")
    lines += [
        "*held-out risk*: mean over the evaluated queries of 1 - nDCG@10 against the full "
        "ranker's top 10, the loss calibration bounds by delta. *cutoff* is the peer with no "
        "early exit (`elasticir calibrate --family cutoff`): the first stage's top R only, the "
        "others never encoded and kept below in first-stage order, R chosen by the same "
        "Learn-then-Test. The rank family's full weights are in the JSON file.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
