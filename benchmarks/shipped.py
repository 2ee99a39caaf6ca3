"""The shipped models, benchmarked in one run: every level of ``elastic-minilm``, every level
and shipped calibration of ``ranker-minilm``, ``dipair-minilm``, and the cascades.

    python benchmarks/shipped.py                 # writes results/shipped.md and .json

Quality is reported only where the model never saw the set's judgements (each model's card
says what it saw):

* ``msmarco-dl19`` (43 queries; no shipped model saw a DL19 query or judgement): the dense
  levels over the 20,152-passage pool, and reranking of the dense full top ``--depth``.
* ``nq-open`` with the DL19 passages as distractors (2,000 questions for the levels; a seeded
  sample of ``--nq-rerank`` questions, dense top ``--nq-depth``, for reranking): top-1/5/20
  answer accuracy and RR@10.
* ``msmarco-dl21`` (53 queries): the dense levels only. The ranker was trained on its
  judgements and DiPair distilled from that ranker, so no reranking row is reported there.

Cost, measured in the same run on this machine: the levels' single-query latency (encode +
flat search, the levels interleaved query by query) and batch-32 throughput, as ratios to
full; the rerankers' pairs/s over the whole reranking pass of each set (the machine otherwise
idle), as ratios to the full ranker's, and each cascade's median per-query latency. The
calibrated policies are the files shipped with the ranker, used as they are (they were
calibrated on MS MARCO dev queries over the DL21 pool, none of them reported here); their
drop is measured on the reported queries, both against the full ranker's own top 10 (what
calibration bounds by delta) and in nDCG@10.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import (  # noqa: E402
    DL_MEASURES,
    NQ_MEASURES,
    WORK,
    concat_stores,
    consistency_risk,
    encode,
    log,
    machine,
    paired_bootstrap,
    report_path,
)
from elasticir.compute.flops import flops_ratio  # noqa: E402
from elasticir.data import get_dataset, load_passages, read_qrels  # noqa: E402
from elasticir.data.corpus import write_corpus  # noqa: E402
from elasticir.data.topics import read_qas, read_topics  # noqa: E402
from elasticir.eval.measures import evaluate, evaluate_per_query  # noqa: E402
from elasticir.eval.qa import answer_accuracy, passage_texts  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.models.shipped import get_shipped  # noqa: E402

DENSE, RANKER, DIPAIR = "elastic-minilm", "ranker-minilm", "dipair-minilm"


def rerender(path: Path) -> None:
    """Recompute the targets and the Markdown of an existing report (no measuring)."""
    report = json.loads(report_path(path, ".json").read_text())
    report["targets"] = targets(report)
    report_path(path, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(path, ".md").write_text(render(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/shipped"))
    parser.add_argument("--depth", type=int, default=100, help="DL19 candidates reranked")
    parser.add_argument("--nq-rerank", type=int, default=50, help="NQ questions reranked")
    parser.add_argument("--nq-depth", type=int, default=20, help="NQ candidates reranked")
    parser.add_argument("--dipair-keep", type=int, default=30, help="DiPair's top K to the ranker")
    parser.add_argument("--latency-queries", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per level")
    parser.add_argument(
        "--ranker-levels", default="full,L6-W50", help="Ranker levels with a row (comma-separated)"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report: dict = {"machine": machine(), "setup": vars(args) | {"out": str(args.out)}}
    report["cards"] = {n: _card_summary(n) for n in (DENSE, RANKER, DIPAIR)}
    sets = _sets()
    elastic, base = ElasticDenser(DENSE), ElasticDenser()
    report["dense"] = dense_levels(elastic, base, sets, args)
    report["rerank"] = reranking(elastic, sets, args)
    report["targets"] = targets(report)
    report["models"] = card_rows(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    log(f"written {report_path(args.out, '.md')}")


def _card_summary(name: str) -> dict:
    card = get_shipped(name).card
    return {k: card.get(k) for k in ("kind", "summary", "trained_on", "never_saw")}


def _sets() -> dict:
    """The evaluation sets: queries, judgements, the store of passage vectors (the base
    model's at full: the index space of every level) and the passage texts."""
    dl19, nq, dl21 = (get_dataset(n) for n in ("msmarco-dl19", "nq-open", "msmarco-dl21"))
    base = ElasticDenser()
    log("passage vectors (cached under indexes/bench/)")
    stores = {n: EmbeddingStore(encode(base, d.corpus, n)).load() for n, d in
              (("dl19", dl19), ("nq", nq), ("dl21", dl21))}  # fmt: skip
    dl19_passages = load_passages(dl19.corpus)
    nq_passages = {**load_passages(nq.corpus), **dl19_passages}
    return {
        "msmarco-dl19": {
            "queries": read_topics(dl19.queries),
            "qrels": read_qrels(dl19.qrels),
            "store": stores["dl19"],
            "passages": dl19_passages,
        },
        "nq-open+dl19": {
            "queries": read_topics(nq.queries),
            "qrels": read_qrels(nq.qrels),
            "qas": read_qas(nq.qas),
            "store": concat_stores(stores["nq"], stores["dl19"]),
            "passages": nq_passages,
            "texts": passage_texts(nq_passages.values()),
        },
        "msmarco-dl21": {
            "queries": read_topics(dl21.queries),
            "qrels": read_qrels(dl21.qrels),
            "store": stores["dl21"],
        },
    }


class Flat:
    """An exact inner-product index over one store."""

    def __init__(self, store) -> None:
        import faiss

        self.ids, vectors = store
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, vectors: np.ndarray, depth: int, qids: list[str]) -> dict:
        scores, rows = self.index.search(np.ascontiguousarray(vectors), depth)
        return {
            q: {self.ids[r]: float(s) for s, r in zip(ss, rr) if r >= 0}
            for q, ss, rr in zip(qids, scores, rows)
        }


def quality(run: dict, data: dict) -> dict:
    """DL: nDCG@10, RR@10, R@100 (grade >= 2); NQ: top-1/5/20 answer accuracy and RR@10."""
    if "qas" in data:
        # only the questions the run answers: a sample is scored over itself
        asked = {q.text.strip() for q in data["queries"] if q.query_id in run}
        qas = [p for p in data["qas"] if p.question.strip() in asked]
        accuracy = answer_accuracy(run, qas, data["texts"], ks=(1, 5, 20),
                                   topics=data["queries"])  # fmt: skip
        qrels = {q: j for q, j in data["qrels"].items() if q in run}  # the sample's own
        return {**accuracy, **evaluate(run, qrels, NQ_MEASURES)}
    return evaluate(run, data["qrels"], DL_MEASURES)


def _round(values: dict) -> dict:
    return {k: round(float(v), 4) for k, v in values.items()}


def dense_levels(elastic: ElasticDenser, base: ElasticDenser, sets: dict, args) -> dict:
    """Quality of every level (and the untrained base model) on every set; latency and
    throughput of every level as ratios to full."""
    out: dict = {"levels": {}, "base": {}}
    levels = [str(level) for level in elastic.levels]
    config = elastic.model.config
    flats = {name: Flat(data["store"]) for name, data in sets.items()}
    per_query: dict = {}
    for name, data in sets.items():
        texts = [q.text for q in data["queries"]]
        qids = [q.query_id for q in data["queries"]]
        log(f"dense levels on {name} ({len(texts)} queries)")
        for level in levels:
            run = flats[name].search(elastic.encode_queries(texts, level=level), 100, qids)
            entry = out["levels"].setdefault(level, {"flops": round(flops_ratio(config, level), 3)})
            entry[name] = _round(quality(run, data))
            if "qas" not in data:
                per_query.setdefault(name, {})[level] = evaluate_per_query(
                    run, data["qrels"], ("nDCG@10",)
                )
        run = flats[name].search(base.encode_queries(texts), 100, qids)
        out["base"][name] = _round(quality(run, data))
    # paired bootstrap of each level against full, nDCG@10 on the DL sets
    for name, levels_pq in per_query.items():
        full = levels_pq["full"]
        for level, values in levels_pq.items():
            if level == "full":
                continue
            low, high = paired_bootstrap(
                {q: v["nDCG@10"] for q, v in full.items()},
                {q: v["nDCG@10"] for q, v in values.items()},
            )
            out["levels"][level][name]["nDCG@10 vs full 95% CI"] = [round(low, 2), round(high, 2)]
    out["speed"] = level_speed(elastic, flats["msmarco-dl19"], sets, levels, args)
    return out


def level_speed(elastic: ElasticDenser, flat: Flat, sets: dict, levels: list[str], args) -> dict:
    """Median single-query latency (encode + flat search over DL19) and batch-32 queries/s,
    each as a ratio to full taken within a round, medians over rounds / queries."""
    pool = [q.text for name in ("msmarco-dl19", "nq-open+dl19") for q in sets[name]["queries"]]
    chosen = random.Random(7).sample(pool, min(args.latency_queries, len(pool)))
    for level in levels:  # warm-up
        elastic.encode_queries(chosen[:2], level=level)
    single: dict[str, list[float]] = {level: [] for level in levels}
    for i, text in enumerate(chosen):
        for level in random.Random(i).sample(levels, len(levels)):
            start = time.perf_counter()
            flat.search(elastic.encode_queries([text], level=level), 100, ["q"])
            single[level].append(time.perf_counter() - start)
    batch = random.Random(11).sample(pool, min(256, len(pool)))
    rates: dict[str, list[float]] = {level: [] for level in levels}
    for r in range(args.rounds):
        for level in random.Random(100 + r).sample(levels, len(levels)):
            start = time.perf_counter()
            elastic.encode_queries(batch, level=level, batch_size=32)
            rates[level].append(len(batch) / (time.perf_counter() - start))
    full = single["full"]
    return {
        level: {
            "single_query_ms": round(statistics.median(single[level]) * 1000, 2),
            "latency_vs_full": round(
                statistics.median(x / f for x, f in zip(single[level], full)), 3
            ),
            "queries_per_s": round(statistics.median(rates[level]), 1),
            "throughput_vs_full": round(
                statistics.median(x / f for x, f in zip(rates[level], rates["full"])), 2
            ),
        }
        for level in levels
    }


def reranking(elastic: ElasticDenser, sets: dict, args) -> dict:
    """Every reranker and cascade over the dense full candidates of DL19 and an NQ sample."""
    from elasticir.pipeline import Rerank
    from elasticir.rerank.dipair import DiPair, DiPairScorer
    from elasticir.rerank.factory import resolve_policy
    from elasticir.rerank.ranker import ElasticRanker, RankerScorer

    ranker = ElasticRanker(RANKER)
    dipair = DiPair.load(DIPAIR)
    shipped = get_shipped(RANKER).calibrations()
    calibrations = {
        name: resolve_policy("full", f"calibrated:{path}") for name, path in shipped.items()
    }
    # a calibration holds for lists of the depth it was made on: used on those only
    cal_depth = {
        name: json.loads(path.read_text(encoding="utf-8")).get("depth")
        for name, path in shipped.items()
    }
    work: dict = {}
    for name, source, depth, count in (
        ("msmarco-dl19", "msmarco-dl19", args.depth, None),
        ("msmarco-dl19 top-20", "msmarco-dl19", 20, None),
        ("nq-open+dl19", "nq-open+dl19", args.nq_depth, args.nq_rerank),
    ):
        data = sets[source]
        queries = data["queries"]
        if count is not None and count < len(queries):
            queries = random.Random(23).sample(queries, count)
        texts = [q.text for q in queries]
        run = Flat(data["store"]).search(
            elastic.encode_queries(texts), depth, [q.query_id for q in queries]
        )
        work[name] = {"queries": queries, "run": run, "depth": depth, "data": data}
    wanted = {d for w in work.values() for docs in w["run"].values() for d in docs}
    passages = {**sets["nq-open+dl19"]["passages"]}
    subset = write_corpus([passages[d] for d in sorted(wanted)], WORK / "shipped-candidates.jsonl")
    log(f"DiPair token cache for {len(wanted)} candidate passages")
    tokens = WORK / f"shipped-dipair-tokens-{dipair.fingerprint[:12]}"  # one per model
    dipair.build_cache(subset, tokens, progress=True)
    dipair_scorer = DiPairScorer(dipair, tokens)
    systems: dict = {f"ElasticRanker {level}": [RankerScorer(ranker, level)]
                     for level in args.ranker_levels.split(",")}  # fmt: skip
    for cal, (level, policy) in calibrations.items():
        systems[f"ElasticRanker {cal} policy"] = [RankerScorer(ranker, level, policy)]
    systems["DiPair"] = [dipair_scorer]
    systems["DiPair%K >> ElasticRanker full"] = [dipair_scorer, RankerScorer(ranker)]
    if "rank" in calibrations:
        level, policy = calibrations["rank"]
        systems["DiPair%K >> ElasticRanker rank policy"] = [
            dipair_scorer,
            RankerScorer(ranker, level, policy),
        ]
    out: dict = {
        "calibrations": {
            k: {"level": v[0], "policy": v[1], "depth": cal_depth[k]}
            for k, v in calibrations.items()
        }
    }
    for name, w in work.items():
        data, queries, first = w["data"], w["queries"], w["run"]
        log(f"reranking on {name}: {len(queries)} queries x {w['depth']} candidates")
        rows = {"dense full (first stage)": {"quality": _round(quality(first, data))}}
        runs = {"dense full (first stage)": first}
        lookup = {d: passages[d] for docs in first.values() for d in docs}
        for label, scorers in systems.items():
            uses = [c for c in calibrations if f" {c} policy" in label]
            if any(cal_depth[c] not in (None, w["depth"]) for c in uses):
                continue  # calibrated on lists of another depth
            if w["depth"] == 20 and label.startswith("DiPair%K"):
                continue  # no cascade over 20 candidates
            log(f"  {label}")
            stages = [Rerank(s, lookup) for s in scorers]
            merged: dict = {}
            seconds: list[float] = []
            pairs = {"first": 0}
            for q in queries:
                candidates = {q.query_id: first[q.query_id]}
                total, below = 0.0, {}
                for i, stage in enumerate(stages):
                    if i > 0:  # DiPair's top K go on to the ranker
                        top = sorted(candidates[q.query_id].items(), key=lambda kv: -kv[1])
                        candidates = {q.query_id: dict(top[: args.dipair_keep])}
                    result = stage([q], candidates)
                    total += sum(result.seconds.values())
                    if i == 0:
                        pairs["first"] += len(candidates[q.query_id])
                        below = result.run[q.query_id]
                    candidates = result.run
                if len(stages) > 1:  # the ones DiPair cut come below, in its order
                    merged[q.query_id] = merged_order(result.run[q.query_id], below)
                else:
                    merged[q.query_id] = result.run[q.query_id]
                seconds.append(total)
            runs[label] = merged
            rows[label] = {
                "quality": _round(quality(merged, data)),
                "pairs_per_s": round(pairs["first"] / sum(seconds), 1),
                "per_query_ms": round(statistics.median(seconds) * 1000, 1),
            }
        full = runs["ElasticRanker full"]
        for label, row in rows.items():
            if "pairs_per_s" in row:
                row["speedup_vs_full_ranker"] = round(
                    row["pairs_per_s"] / rows["ElasticRanker full"]["pairs_per_s"], 2
                )
            row["consistency_drop_vs_full_ranker"] = consistency_risk(runs[label], full)
        if "qas" not in data:
            base = evaluate_per_query(first, data["qrels"], ("nDCG@10",))
            for label, run in runs.items():
                mine = evaluate_per_query(run, data["qrels"], ("nDCG@10",))
                low, high = paired_bootstrap(
                    {q: v["nDCG@10"] for q, v in base.items()},
                    {q: v["nDCG@10"] for q, v in mine.items()},
                )
                rows[label]["nDCG@10 vs first stage 95% CI"] = [round(low, 2), round(high, 2)]
        out[name] = {"queries": len(queries), "depth": w["depth"], "rows": rows}
    return out


def merged_order(top: dict, below: dict) -> dict:
    """The ranker's scores for its K candidates, then DiPair's others below them in order."""
    floor = min(top.values()) if top else 0.0
    rest = sorted(((d, s) for d, s in below.items() if d not in top), key=lambda kv: -kv[1])
    merged = dict(top)
    for i, (doc, _) in enumerate(rest):
        merged[doc] = floor - 1.0 - i
    return merged


def targets(report: dict) -> dict:
    """The issue's targets for the shipped models, each with its measured value."""
    dl = report["rerank"]["msmarco-dl19"]["rows"]
    first = dl["dense full (first stage)"]["quality"]["nDCG@10"]
    full = dl["ElasticRanker full"]["quality"]["nDCG@10"]
    dip = dl["DiPair"]["quality"]["nDCG@10"]
    gain = full - first
    out = {
        "ranker full >= dense first stage + 2 nDCG@10 points (DL19)": {
            "value": f"{(full - first) * 100:+.2f} points ({full:.4f} vs {first:.4f})",
            "met": gain >= 0.02,
        },
        "DiPair keeps >= 90% of the ranker's gain (DL19)": {
            "value": f"{(dip - first) / gain * 100:.1f}%"
            if gain >= 0.005
            else f"the ranker gains {gain * 100:+.2f} points, nothing to keep; DiPair is "
            f"{(dip - first) * 100:+.2f} points against the first stage",
            "met": gain > 0 and (dip - first) >= 0.9 * gain,
        },
        "DiPair at >= 50x the ranker's pairs/s": {
            "value": f"{dl['DiPair']['speedup_vs_full_ranker']:.1f}x",
            "met": dl["DiPair"]["speedup_vs_full_ranker"] >= 50,
        },
    }
    policy_rows = [(label, row, "DL19") for label, row in dl.items()]
    top20 = report["rerank"].get("msmarco-dl19 top-20", {}).get("rows", {})
    policy_rows += [(label, row, "DL19 top-20") for label, row in top20.items()]
    for label, row, where in policy_rows:
        if not label.endswith("policy") or label.startswith("DiPair"):
            continue
        cal = label.split()[1]
        delta = _delta(cal)
        out[f"{label}: >= 1.5x the full ranker's pairs/s, drop within delta={delta} ({where})"] = {
            "value": f"{row['speedup_vs_full_ranker']:.2f}x, drop "
            f"{row['consistency_drop_vs_full_ranker']:.4f} (nDCG@10 "
            f"{row['quality']['nDCG@10'] - full:+.4f})",
            "met": row["speedup_vs_full_ranker"] >= 1.5
            and row["consistency_drop_vs_full_ranker"] <= delta,
        }
    levels = report["dense"]["levels"]
    issue3 = {"full": (0.643, 0.904), "L6-W50": (0.596, 0.889)}  # results/denser-focus.md
    for level, (dl_ref, nq_ref) in issue3.items():
        got = levels.get(level)
        if got is None:
            continue
        dl_got, nq_got = got["msmarco-dl19"]["nDCG@10"], got["nq-open+dl19"]["Top1"]
        out[f"dense {level} at least as good as issue 3 ({dl_ref} / {nq_ref})"] = {
            "value": f"{dl_got:.4f} / {nq_got:.4f}",
            "met": dl_got >= dl_ref - 0.0005 and nq_got >= nq_ref - 0.0005,
        }
    return out


def _delta(cal: str) -> float:
    path = get_shipped(RANKER).calibrations()[cal]
    return float(json.loads(path.read_text())["delta"])


def card_rows(report: dict) -> dict:
    """The evaluation rows each shipped model's card quotes."""
    dense = report["dense"]
    rows = []
    for level, entry in dense["levels"].items():
        speed = dense["speed"][level]
        rows.append({
            "level": level,
            "FLOPs": entry["flops"],
            "DL19 nDCG@10": entry["msmarco-dl19"]["nDCG@10"],
            "DL21 nDCG@10": entry["msmarco-dl21"]["nDCG@10"],
            "NQ+DL19 top-1": entry["nq-open+dl19"]["Top1"],
            "NQ+DL19 top-20": entry["nq-open+dl19"]["Top20"],
            "latency vs full": speed["latency_vs_full"],
        })  # fmt: skip
    dl = report["rerank"]["msmarco-dl19"]
    nq = report["rerank"]["nq-open+dl19"]

    def rerank_rows(labels: list[str]) -> list[dict]:
        return [
            {
                "system": label,
                f"DL19 nDCG@10 (dense top-{dl['depth']})": dl["rows"][label]["quality"]["nDCG@10"],
                f"NQ top-1 ({nq['queries']} q, top-{nq['depth']})": nq["rows"]
                .get(label, {})
                .get("quality", {})
                .get("Top1", "not run (no calibration at this depth)"),
                "pairs/s vs full ranker": dl["rows"][label].get("speedup_vs_full_ranker", ""),
            }
            for label in labels
        ]

    ranker_labels = ["dense full (first stage)"] + [
        k for k in dl["rows"] if k.startswith("ElasticRanker")
    ]
    dipair_labels = ["dense full (first stage)", "DiPair", "ElasticRanker full"] + [
        k for k in dl["rows"] if k.startswith("DiPair%K")
    ]
    note = "Measured by benchmarks/shipped.py on queries the model never saw (see the card)."
    return {
        DENSE: {"note": note, "rows": rows},
        RANKER: {"note": note, "rows": rerank_rows(ranker_labels)},
        DIPAIR: {"note": note, "rows": rerank_rows(dipair_labels)},
    }


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Shipped models: benchmark",
        "",
        "`python benchmarks/shipped.py` (one run, "
        f"{report['seconds'] / 60:.0f} min). Machine: {m['cpu_model']} ({m['cores']} cores), "
        f"{m['threads']} torch threads, torch {m['torch']}; CPU flags: "
        f"{', '.join(m['flags']) or 'none of note'}.",
        "",
        "What each model saw (from its card):",
        "",
    ]
    for name, card in report["cards"].items():
        lines.append(f"- **{name}** ({card['kind']}): {card['trained_on']}")
    lines += ["", "## Targets", ""]
    lines += _table(["target", "measured", "met"],
                    [[k, v["value"], "yes" if v["met"] else "**no**"]
                     for k, v in report["targets"].items()])  # fmt: skip
    dense = report["dense"]
    lines += ["", "## elastic-minilm: every query level", ""]
    lines += [
        "Quality over all queries of each set (DL19 43, DL21 53, NQ 2,000 with the 20,152 DL19 "
        "passages as distractors); latency = median single query (encode + flat search over "
        "DL19), throughput = batch-32 queries/s; both as ratios to full in the same run.",
        "",
    ]
    header = ["level", "FLOPs", "DL19 nDCG@10", "DL19 RR@10", "DL21 nDCG@10", "NQ top-1",
              "NQ top-5", "NQ top-20", "ms/query", "latency x", "q/s", "throughput x"]  # fmt: skip
    rows = []
    for level, e in dense["levels"].items():
        s = dense["speed"][level]
        rows.append([level, e["flops"], e["msmarco-dl19"]["nDCG@10"],
                     e["msmarco-dl19"]["RR(rel=2)@10"], e["msmarco-dl21"]["nDCG@10"],
                     e["nq-open+dl19"]["Top1"], e["nq-open+dl19"]["Top5"],
                     e["nq-open+dl19"]["Top20"], s["single_query_ms"], s["latency_vs_full"],
                     s["queries_per_s"], s["throughput_vs_full"]])  # fmt: skip
    b = dense["base"]
    rows.append(["base MiniLM (untrained)", 1.0, b["msmarco-dl19"]["nDCG@10"],
                 b["msmarco-dl19"]["RR(rel=2)@10"], b["msmarco-dl21"]["nDCG@10"],
                 b["nq-open+dl19"]["Top1"], b["nq-open+dl19"]["Top5"],
                 b["nq-open+dl19"]["Top20"], "", "", "", ""])  # fmt: skip
    lines += _table(header, rows)
    cis = [
        f"{level} {e['msmarco-dl19']['nDCG@10 vs full 95% CI']}"
        for level, e in dense["levels"].items()
        if "nDCG@10 vs full 95% CI" in e["msmarco-dl19"]
    ]
    lines += ["", "DL19 nDCG@10 against full, 95% paired-bootstrap intervals: " + "; ".join(cis)]
    for name in ("msmarco-dl19", "msmarco-dl19 top-20", "nq-open+dl19"):
        if name not in report["rerank"]:
            continue
        block = report["rerank"][name]
        lines += ["", f"## Reranking on {name}: {block['queries']} queries, dense full top-"
                      f"{block['depth']}", ""]  # fmt: skip
        measures = list(next(iter(block["rows"].values()))["quality"])
        header = ["system", *measures, "pairs/s", "vs full ranker", "ms/query",
                  "drop vs full ranker's top 10"]  # fmt: skip
        if name.startswith("msmarco-dl19"):
            header.append("nDCG@10 vs first stage, 95% CI")
        rows = []
        for label, row in block["rows"].items():
            cells = [label, *(row["quality"][k] for k in measures), row.get("pairs_per_s", ""),
                     row.get("speedup_vs_full_ranker", ""), row.get("per_query_ms", ""),
                     row["consistency_drop_vs_full_ranker"]]  # fmt: skip
            if name.startswith("msmarco-dl19"):
                cells.append(row.get("nDCG@10 vs first stage 95% CI", ""))
            rows.append(cells)
        lines += _table(header, rows)
    cals = report["rerank"]["calibrations"]
    lines += ["", "Shipped calibrations used: " + "; ".join(
        f"{k} (top-{v.get('depth', '?')} lists): {v['policy'].split(',')[0]} at {v['level']}"
        for k, v in cals.items())]  # fmt: skip
    lines += [
        f"`DiPair%K >> ...`: DiPair rescored the top {report['setup']['depth']} (DL19), its "
        f"top {report['setup']['dipair_keep']} went to the ranker, the rest stay below in "
        "DiPair's order; pairs/s counts the first stage's candidates.",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
