"""Reranking benchmark: ElasticRanker (levels, calibrated early exit) and DiPair, measured.

    python benchmarks/rerank.py --ranker models/ranker --dipair models/dipair [--dipair ...]
    python benchmarks/rerank.py ... --levels full --no-policies   # DiPair against the full
                                                                  # ranker only (~30 min, not 55)

Needs a trained ElasticRanker (``elasticir train ranker``) and DiPair head (``elasticir train
dipair``); the dense stores of ``benchmarks/foundation.py`` (indexes/bench/, built on first
use). In one run on this machine:

* first stages: the shipped DL19 BM25 run (top 100), the base bi-encoder's dense top 100 on
  DL19, and its dense top 100 on nq-open with the DL19 passages as distractors;
* rerankers of each first stage: the bi-encoder's own scores (the reference point), the
  ElasticRanker at every level of its menu, the ElasticRanker under each calibrated exit
  policy, and each DiPair model given (from a token cache built for the corpus);
* calibration (Learn-then-Test, ``--delta``/``--epsilon``, consistency loss, no labels) on
  queries that are never reported: MS MARCO dev-subset queries over the DL19 pool for DL19,
  DPR NQ dev questions over the NQ + distractor corpus for NQ; the reported drop is measured on
  the evaluation queries (nDCG@10 with qrels for DL19, against the full ranker);
* pairs/s of every reranker on the same pairs, in interleaved rounds (ratios to the full
  cross-encoder);
* the issue's targets, checked from those numbers (the Targets table of the report).
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
    DL_MEASURES,
    WORK,
    concat_stores,
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
    trained_query_ids,
)
from elasticir.compute.levels import FULL, Level  # noqa: E402
from elasticir.data import get_dataset, read_qrels, read_run  # noqa: E402
from elasticir.data.topics import read_qas, read_topics  # noqa: E402
from elasticir.eval.measures import evaluate  # noqa: E402
from elasticir.eval.qa import answer_accuracy, passage_texts  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.rerank.dipair import DiPair, DiPairScorer  # noqa: E402
from elasticir.rerank.pipeline import BiEncoderScorer, Rerank, RunFile  # noqa: E402
from elasticir.rerank.policies import (  # noqa: E402
    FixedLevel,
    calibrate_families,
    calibration_queries,
    simulate,
)
from elasticir.rerank.ranker import ElasticRanker, RankerScorer  # noqa: E402

# The exit-only families: one calibration per corpus (on dense runs) serves every first stage
# of that corpus. The rank and cutoff families read the first stage's order, so they need a
# calibration per first stage: benchmarks/rank_exit.py measures them.
FAMILIES = ("entropy", "margin", "saturation", "classifier")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranker", required=True, help="Trained ElasticRanker directory")
    parser.add_argument(
        "--dipair",
        action="append",
        default=[],
        help="Trained DiPair directory; repeat for several (rows left out without)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/rerank"))
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--delta", type=float, default=0.02)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--calibration-queries", type=int, default=300)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument(
        "--speed-queries", type=int, default=10, help="DL19 BM25 queries timed per round"
    )
    parser.add_argument(
        "--speed-min-seconds",
        type=float,
        default=3.0,
        help="Each scorer's timing in a round repeats its passes until this long has gone",
    )
    parser.add_argument(
        "--levels",
        default=None,
        help="Comma-separated ElasticRanker levels to report (default: its whole menu; full is "
        "always included, the reference of every ratio)",
    )
    parser.add_argument(
        "--no-policies",
        action="store_true",
        help="Skip calibration and the early-exit policy rows (their target is then reported "
        "as not measured)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="Evaluate on the first N queries (smoke test)"
    )
    parser.add_argument(
        "--nq-queries",
        type=int,
        default=None,
        help="Evaluate NQ on its first N questions only (every reranker scores N x depth pairs; "
        "on a 2-core CPU all 2,000 take hours); the report records N",
    )
    args = parser.parse_args()
    dl, nq = get_dataset("msmarco-dl19"), get_dataset("nq-open")
    base = ElasticDenser()
    ranker = ElasticRanker(args.ranker)
    levels = list(ranker.levels)
    if args.levels is not None:
        names = [name.strip() for name in args.levels.split(",") if name.strip()]
        asked = [ranker.check_level(name) for name in names]
        levels = list(dict.fromkeys([ranker.check_level(FULL), *asked]))
    dipair = {f"DiPair ({Path(path).name})": DiPair.load(path) for path in args.dipair}
    report: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    report["models"] = {"ranker": args.ranker, "dipair": args.dipair}

    log("first stages")
    stores = {name: encode(base, ds.corpus, name) for name, ds in (("dl19", dl), ("nq", nq))}
    dl_queries = read_topics(dl.queries)[: args.limit]
    nq_queries = read_topics(nq.queries)[: args.limit]
    if args.nq_queries is not None:
        nq_queries = nq_queries[: args.nq_queries]
    report["setup"] = {
        "queries": {"dl19": len(dl_queries), "nq+dl19": len(nq_queries)},
        "calibration_queries": None if args.no_policies else args.calibration_queries,
        "levels": [str(lv) for lv in levels],
        "calibration_excluded": len(trained_query_ids(ranker)),
        "delta": args.delta,
        "epsilon": args.epsilon,
        "depth": args.depth,
        "speed": {
            "rounds": args.speed_rounds,
            "queries": args.speed_queries,
            "min_seconds": args.speed_min_seconds,
        },
    }
    corpora = {"dl19": [dl.corpus], "nq+dl19": [nq.corpus, dl.corpus]}
    passages = {name: load_corpora(paths) for name, paths in corpora.items()}
    vectors = {
        "dl19": EmbeddingStore(stores["dl19"]).load(),
        "nq+dl19": concat_stores(
            EmbeddingStore(stores["nq"]).load(), EmbeddingStore(stores["dl19"]).load()
        ),
    }
    firsts = {
        "dl19 BM25 top-100 (shipped run)": (
            "dl19",
            cut_run(read_run(dl.runs["bm25"]), args.depth, {q.query_id for q in dl_queries}),
        ),
        "dl19 dense top-100": ("dl19", dense_search(base, vectors["dl19"], dl_queries, args.depth)),
        "nq+dl19 dense top-100": (
            "nq+dl19",
            dense_search(base, vectors["nq+dl19"], nq_queries, args.depth),
        ),
    }

    calibrations: dict = {"dl19": {}, "nq+dl19": {}}
    if not args.no_policies:
        log("calibration on queries that are never reported")
        calibrations = {
            "dl19": _calibrate(
                ranker, base, vectors["dl19"], passages["dl19"], "msmarco-dev-subset", args
            ),
            "nq+dl19": _calibrate(
                ranker, base, vectors["nq+dl19"], passages["nq+dl19"], "dpr-nq-dev", args
            ),
        }
    report["calibration"] = {
        name: {family: c.to_dict() for family, c in cal.items()}
        for name, cal in calibrations.items()
    }

    evaluated = {q.query_id for q in dl_queries}
    qrels = {q: j for q, j in read_qrels(dl.qrels).items() if q in evaluated}
    asked = {q.text.strip() for q in nq_queries}
    qas = [pair for pair in read_qas(nq.qas) if pair.question.strip() in asked]
    tables = {}
    for name, (corpus, first) in firsts.items():
        log(f"reranking: {name}")
        queries = dl_queries if corpus == "dl19" else nq_queries
        rows = {"first stage": first}
        others = _other_scorers(base, dipair, corpus)
        for label, scorer in others.items():
            rows[label] = (RunFile(first) >> Rerank(scorer, passages[corpus], name=label)).run(
                queries
            )
        speedups: dict[str, float] = {}
        rows.update(
            _ranker_runs(
                ranker, levels, first, queries, passages[corpus], calibrations[corpus], speedups
            )
        )
        metric = (
            (lambda run: evaluate(run, qrels, DL_MEASURES))
            if corpus == "dl19"
            else (
                lambda run, q=queries, c=corpus: answer_accuracy(
                    run, qas, passage_texts(passages[c].values()), ks=(1, 5, 20), topics=q
                )
            )
        )
        table = {label: metric(run) for label, run in rows.items()}
        full = rows["ElasticRanker full"]
        for label, run in rows.items():
            if label.startswith("ElasticRanker policy"):
                table[label]["drop_vs_full_nDCG@10"] = (
                    _drop(run, full, qrels) if corpus == "dl19" else None
                )
                table[label]["speedup"] = speedups[label]
            if label.startswith("ElasticRanker"):
                table[label]["risk_vs_full"] = consistency_risk(run, full)
        tables[name] = table
    report["quality"] = tables

    log("speed: pairs/s, interleaved rounds")
    report["speed"] = _speed(
        ranker, levels, base, dipair, calibrations["dl19"], firsts, passages, args
    )
    report["targets"] = targets(report)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


def _calibrate(ranker, base, store, passages, topics_name, args) -> dict:
    """One calibration per policy family, on ``topics_name`` queries over the same corpus."""
    from elasticir.data.topics import read_queries_any

    dataset = get_dataset(topics_name)
    topics = read_queries_any(dataset.queries or dataset.qas)
    trained = trained_query_ids(ranker)
    if topics_name == "msmarco-dev-subset" and trained:  # the anchor groups' queries
        log(f"calibration: {len(trained)} queries the ranker was trained on are left out")
        topics = [q for q in topics if q.query_id not in trained]
    sample = random.Random(13).sample(topics, min(args.calibration_queries, len(topics)))
    run = dense_search(base, store, sample, args.depth)
    texts = {d: passages[d].encoder_text() for docs in run.values() for d in docs}
    data = calibration_queries(run, {q.query_id: q.text for q in sample}, texts, depth=args.depth)
    families = [f for f in FAMILIES if f != "classifier" or ranker.has_classifier]
    if len(families) < len(FAMILIES):
        log("calibration: the ranker has no exit classifier; that family is left out")
    return calibrate_families(ranker, data, families, args.delta, args.epsilon, progress=True)


def _ranker_runs(ranker, levels, first, queries, passages, calibrations, speedups) -> dict:
    """The ElasticRanker's run at each of ``levels`` and under every calibrated policy, from one
    :meth:`~ElasticRanker.layer_records` pass per width: a level's scores are its deepest
    exit's, a policy's are :func:`simulate`'d on the recorded exits (the same decisions as its
    real early exit: tests/test_ranker.py checks that running the policy gives the simulated
    risk and speedup). ``speedups`` gets each policy's FLOPs speedup over the full ranker."""
    pairs = [
        (qid, doc)
        for qid, docs in first.items()
        for doc, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    texts = {doc: passages[doc].encoder_text() for _, doc in pairs}
    asked = {q.query_id: q.text for q in queries}
    q_texts = [asked[qid] for qid, _ in pairs]
    p_texts = [texts[doc] for _, doc in pairs]
    widths = sorted({ranker.check_level(lv).width for lv in levels}, reverse=True)
    records = {}
    for width in widths:
        log(f"  layer records at width {width}% ({len(pairs)} pairs)")
        level = Level(depth=ranker.config.num_hidden_layers, width=width)
        records[width] = ranker.layer_records(q_texts, p_texts, level, progress=True)

    def as_run(scores: np.ndarray) -> dict:
        run: dict = {}
        for (qid, doc), score in zip(pairs, scores):
            run.setdefault(qid, {})[doc] = float(score)
        return run

    rows = {}
    for level in levels:
        width = ranker.check_level(level).width
        rows[f"ElasticRanker {level}"] = as_run(simulate(FixedLevel(level), records[width])[1])
    full = records[100]
    for family, calibration in calibrations.items():
        label = f"ElasticRanker policy {family} ({calibration.policy.spec})"
        exits, scores = simulate(calibration.policy, full)
        speedups[label] = round(
            float(full.full_cost.sum()) / float((exits * full.layer_cost).sum()), 3
        )
        rows[label] = as_run(scores)
    return rows


def _other_scorers(base, dipair, corpus) -> dict:
    """The rerankers that are not the ElasticRanker: the bi-encoder's scores and each DiPair
    model (``{label: DiPair}``)."""
    scorers = {"bi-encoder scores (reference)": BiEncoderScorer(base)}
    for label, model in dipair.items():
        cache = WORK / f"{corpus}.dipair-{model.fingerprint}"
        for path in [get_dataset("msmarco-dl19").corpus] if corpus == "dl19" else []:
            model.build_cache(path, cache)
        scorers[label] = DiPairScorer(model, cache if corpus == "dl19" else None)
    return scorers


def _scorers(ranker, levels, base, dipair, calibrations, corpus) -> dict:
    """Every reranker as a scorer (for the speed rounds, which run each for real)."""
    scorers = _other_scorers(base, dipair, corpus)
    for level in levels:
        scorers[f"ElasticRanker {level}"] = RankerScorer(ranker, level)
    for family, calibration in calibrations.items():
        scorers[f"ElasticRanker policy {family} ({calibration.policy.spec})"] = RankerScorer(
            ranker, calibration.level, calibration.policy
        )
    return scorers


def _drop(run: dict, full: dict, qrels: dict) -> float:
    a = evaluate(full, qrels, ("nDCG@10",))["nDCG@10"]
    b = evaluate(run, qrels, ("nDCG@10",))["nDCG@10"]
    return round(a - b, 4)


def _speed(ranker, levels, base, dipair, calibrations, firsts, passages, args) -> dict:
    """pairs/s of each reranker on the same ``--speed-queries`` queries x depth candidates
    (DL19 BM25), every scorer run for real (early exit included). In each round every scorer
    (in a shuffled order) scores the queries' candidates, passes repeated until at least
    ``--speed-min-seconds`` have gone, so fast scorers are timed over as long a stretch as
    the slow ones; its ratio to the full ranker is taken within the round."""
    _, first = firsts["dl19 BM25 top-100 (shipped run)"]
    queries = {q.query_id: q.text for q in read_topics(get_dataset("msmarco-dl19").queries)}
    chosen = [q for q in first if q in queries][: args.speed_queries]
    work = [(queries[q], [passages["dl19"][d] for d in first[q]]) for q in chosen]
    scorers = _scorers(ranker, levels, base, dipair, calibrations, "dl19")
    rates = interleaved_rates(scorers, work, args.speed_rounds, args.speed_min_seconds)
    return median_rates(rates, lambda label: "ElasticRanker full", "speedup_vs_full")


def _speed_setup(speed: dict | None) -> str:
    if not speed:
        return "Interleaved rounds; medians over rounds."
    return (
        f"{speed['rounds']} interleaved rounds over the same {speed['queries']} queries x their "
        f"candidates; in each round a scorer repeats its passes for at least "
        f"{speed['min_seconds']:g} s; medians over rounds, ratios taken within a round."
    )


def targets(report: dict) -> list[dict]:
    """The issue's targets, each checked from the measured tables: ``{target, result, met}``."""
    quality, speed = report["quality"], report["speed"]
    delta = report["setup"]["delta"]
    dl = [name for name in quality if name.startswith("dl19")]
    out = []
    gains = {
        name: quality[name]["ElasticRanker full"]["nDCG@10"]
        - quality[name]["first stage"]["nDCG@10"]
        for name in dl
    }
    out.append(
        {
            "target": "ElasticRanker full improves nDCG@10 over both DL19 first stages",
            "result": "; ".join(f"{name}: {g * 100:+.2f} points" for name, g in gains.items()),
            "met": all(gain > 0 for gain in gains.values()),
        }
    )
    policies = [label for label in speed if label.startswith("ElasticRanker policy")]
    results, met = [], False
    for label in policies:
        family = label.split()[2]  # each corpus has its own calibrated threshold
        prefix = f"ElasticRanker policy {family} ("
        rows = {
            name: next(row for key, row in table.items() if key.startswith(prefix))
            for name, table in quality.items()
        }
        risks = [row["risk_vs_full"] for row in rows.values()]
        drops = [rows[name]["drop_vs_full_nDCG@10"] for name in dl]
        within = all(r <= delta for r in risks) and all(d <= delta for d in drops)
        ratio = speed[label]["speedup_vs_full"]
        met = met or (ratio >= 1.5 and within)
        results.append(
            f"{family} {ratio:.2f}x, risk {max(risks):.3f} (nDCG@10 drop {max(drops):.3f}) "
            f"{'within' if within else 'over'} delta"
        )
    out.append(
        {
            "target": f"a calibrated policy >= 1.5x full pairs/s, measured drop within delta "
            f"({delta}) on queries not used for calibration",
            "result": "; ".join(results) or "not measured in this run (--no-policies)",
            "met": met if policies else None,
        }
    )
    for label in [label for label in speed if label.startswith("DiPair")]:
        ratio = speed[label]["speedup_vs_full"]
        out.append(
            {
                "target": f"{label} >= 50x the full cross-encoder's pairs/s",
                "result": f"{ratio:.2f}x",
                "met": ratio >= 50,
            }
        )
        kept, cells = [], []
        for name in dl:
            first = quality[name]["first stage"]["nDCG@10"]
            gain = (quality[name][label]["nDCG@10"] - first) * 100
            share = f" ({gain / (gains[name] * 100):.1%} of it)" if gains[name] > 0 else ""
            cells.append(
                f"{name}: {gain:+.2f} points vs the cross-encoder's {gains[name] * 100:+.2f}{share}"
            )
            kept.append(gain >= 0.9 * gains[name] * 100)
        out.append(
            {
                "target": f"{label} keeps >= 90% of the cross-encoder's nDCG@10 gain",
                "result": "; ".join(cells),
                "met": all(kept),
            }
        )
    return out


def render(report: dict) -> str:
    lines = ["# Reranking benchmark", "", f"Machine: {report['machine']}.", ""]
    models = report.get("models") or {}
    if models:
        dipair = ", ".join(f"`{d}`" for d in models.get("dipair") or ()) or "none"
        lines += [f"Models: ElasticRanker `{models.get('ranker')}`; DiPair {dipair}.", ""]
    setup = report.get("setup", {})
    if setup:
        lines += [
            f"Evaluated queries: {setup['queries']}; "
            + (
                "no calibration or early-exit policies in this run (--no-policies)."
                if setup.get("calibration_queries") is None
                else f"calibration: {setup['calibration_queries']} queries per corpus, "
                f"delta={setup['delta']}, epsilon={setup['epsilon']} "
                "(consistency loss: 1 - nDCG@10 against the full ranker's top 10)"
            )
            + (
                f"; the {setup['calibration_excluded']} MS MARCO dev queries the ranker was "
                "trained on (its anchor groups) are never calibration queries."
                if setup.get("calibration_excluded") and setup.get("calibration_queries")
                else ""
                if setup.get("calibration_queries") is None
                else "."
            ),
            "",
        ]
    if report.get("targets"):
        lines += ["## Targets", "", "| target | result | met |", "|---|---|---|"]
        for row in report["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[row["met"]]
            lines.append(f"| {row['target']} | {row['result']} | {met} |")
        lines.append("")
    extra = ("drop", "speedup", "risk")
    for name, table in report["quality"].items():
        measures = [m for m in next(iter(table.values())) if not m.startswith(extra)]
        lines += [
            f"## {name}",
            "",
            "| reranker | "
            + " | ".join(measures)
            + " | risk vs full | nDCG@10 drop vs full | FLOPs speedup |",
        ]
        lines.append("|---|" + "---|" * (len(measures) + 3))
        for label, row in table.items():
            cells = " | ".join(f"{row[m]:.4f}" for m in measures)
            risk, drop = row.get("risk_vs_full"), row.get("drop_vs_full_nDCG@10")
            speedup = row.get("speedup")
            lines.append(
                f"| {label} | {cells} | {'' if risk is None else risk} | "
                f"{'' if drop is None else drop} | "
                f"{'' if speedup is None else f'{speedup:.2f}x'} |"
            )
        lines.append("")
    for corpus, families in report.get("calibration", {}).items():
        if not families:  # a --no-policies run
            continue
        lines += [
            f"## Calibration on {corpus} (queries never reported)",
            "",
            "| family | chosen policy | calibration risk | FLOPs speedup | queries |",
            "|---|---|---|---|---|",
        ]
        for family, c in families.items():
            lines.append(
                f"| {family} | {c['policy']} | {c['risk']:.4f} | {c['speedup']:.2f}x | "
                f"{c['n_queries']} |"
            )
        lines.append("")
    lines += [
        "## Speed (DL19 BM25 candidates)",
        "",
        _speed_setup(report["setup"].get("speed")),
        "",
        "| reranker | pairs/s | vs full |",
        "|---|---|---|",
    ]
    for label, row in report["speed"].items():
        lines.append(f"| {label} | {row['pairs_per_s']} | {row['speedup_vs_full']}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
