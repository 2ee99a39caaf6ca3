"""ElasticRanker trained on DL19's own judgements, reported by k-fold cross-validation.

    for f in 0 1 2 3 4; do elasticir train ranker -c configs/ranker-minilm-dl19cv-base.json \\
        --fold $f --output models/ranker-minilm-dl19cv-base-f$f; done   # ~11 min each
    python benchmarks/rerank_cv.py --fold-model models/ranker-minilm-dl19cv-base-f0 ... \\
        --fold-model models/ranker-minilm-dl19cv-base-f4 --reference models/ranker-minilm-anchor

Each ``--fold-model`` was trained with ``elasticir train ranker --judged msmarco-dl19 --fold F``
(:mod:`elasticir.train.judged`): on the judgements of every fold but ``F``. Here each fold's
queries are reranked by that fold's model only, the folds' runs are merged, and the merged run
is evaluated. The script refuses a model whose training queries include a query it would
rerank, and models of different splits. With fewer models than folds, only their folds'
queries are evaluated (the report says how many), and every row is restricted to them.

In one run: the two DL19 first stages of ``benchmarks/rerank.py`` (the shipped BM25 top-100,
the base bi-encoder's dense top-100), the bi-encoder's own scores over each, the
``--reference`` ranker at full compute (one that never saw a DL19 judgement; its other levels
are in ``results/rerank.md``) and the cross-validated rankers at each ``--levels`` level;
nDCG@10 and RR@10, per fold and merged, with paired-bootstrap intervals of the
cross-validated full ranker against every other row. ``--baseline-fold-model`` adds a second
set of fold models of the same split as one more row (``benchmarks/rerank_cv_wise.sh`` puts the
trained rankers beside their WiSE-FT interpolations, ``elasticir train interpolate``); ``--nq N``
adds the dense top-100 of the first N nq-open questions over nq-open + DL19, reranked by the
fold models round robin (no model saw an NQ question). Speed is not measured: a cross-validated
model has the reference's architecture and cost (``benchmarks/rerank.py`` measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import (  # noqa: E402
    DL_MEASURES,
    concat_stores,
    cut_run,
    dense_search,
    encode,
    load_corpora,
    log,
    machine,
    paired_bootstrap,
    report_path,
)
from elasticir.compute.levels import FULL, Level  # noqa: E402
from elasticir.data import get_dataset, read_qrels, read_run  # noqa: E402
from elasticir.data.topics import read_qas, read_topics  # noqa: E402
from elasticir.eval.measures import evaluate, evaluate_per_query  # noqa: E402
from elasticir.eval.qa import answer_accuracy, passage_texts  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.rerank.pipeline import BiEncoderScorer, Rerank, RunFile  # noqa: E402
from elasticir.rerank.ranker import ElasticRanker, RankerScorer, read_manifest  # noqa: E402
from elasticir.retrieve.fusion import interpolate  # noqa: E402
from elasticir.train.judged import assign_folds, judged_record  # noqa: E402

NDCG = "nDCG@10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fold-model",
        action="append",
        required=True,
        help="A ranker trained with --judged msmarco-dl19 --fold F; one per fold",
    )
    parser.add_argument(
        "--baseline-fold-model",
        action="append",
        default=[],
        help="Another cross-validated ranker per fold (same split), reranked the same way and "
        "shown as the row 'baseline CV ranker full' (e.g. the trained rankers that --fold-model "
        "interpolates)",
    )
    parser.add_argument("--reference", default=None, help="A ranker that never saw DL19 judgements")
    parser.add_argument("--levels", default="full", help="Comma-separated levels (full)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument(
        "--fuse-alpha",
        type=float,
        action="append",
        default=[],
        help="Add a row: the cross-validated full ranker's scores min-max interpolated with "
        "the first stage's, alpha * ranker + (1 - alpha) * first stage (repeatable)",
    )
    parser.add_argument(
        "--nq",
        type=int,
        default=0,
        help="Also rerank the dense top-100 of the first N nq-open questions over nq-open + the "
        "DL19 passages (no model saw any NQ question; question i goes to the i-th fold model, "
        "round robin, to share the cost); DPR top-1/5/20 answer accuracy (0: no NQ)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/rerank-cv"))
    args = parser.parse_args()
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    if args.fuse_alpha and FULL not in levels:
        raise SystemExit("--fuse-alpha fuses the full ranker's run: add full to --levels")
    if args.nq < 0:
        raise SystemExit(f"--nq must be 0 (no NQ) or a number of questions, got {args.nq}")
    if any(not 0.0 <= a <= 1.0 for a in args.fuse_alpha):
        raise SystemExit(f"--fuse-alpha must be in [0, 1], got {args.fuse_alpha}")

    dl = get_dataset("msmarco-dl19")
    queries = read_topics(dl.queries)
    qrels = read_qrels(dl.qrels)
    judged_ids = [q.query_id for q in queries if qrels.get(q.query_id)]
    folds = _check_folds(args.fold_model, judged_ids)
    evaluated = sorted(q for held in folds.values() for q in held)
    baseline = {}
    if args.baseline_fold_model:
        baseline = _check_folds(args.baseline_fold_model, judged_ids)
    if baseline and sorted(q for held in baseline.values() for q in held) != evaluated:
        raise SystemExit("--baseline-fold-model must hold out the same queries as --fold-model")
    qrels = {q: qrels[q] for q in evaluated}
    queries = [q for q in queries if q.query_id in set(evaluated)]
    report: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    report["setup"] = {
        "fold_models": {path: sorted(held) for path, held in folds.items()},
        "interpolations": {
            path: record for path in folds if (record := _interpolation(path)) is not None
        },
        "baseline_fold_models": {path: sorted(held) for path, held in baseline.items()},
        "reference": args.reference,
        "queries": len(evaluated),
        "levels": levels,
        "depth": args.depth,
        "fuse_alpha": args.fuse_alpha,
        "nq_questions": args.nq,
        "out": str(args.out),
    }

    log("first stages")
    base = ElasticDenser()
    vectors = EmbeddingStore(encode(base, dl.corpus, "dl19")).load()
    passages = load_corpora([dl.corpus])
    ids = set(evaluated)
    firsts = {
        "BM25 top-100 (shipped run)": cut_run(read_run(dl.runs["bm25"]), args.depth, ids),
        "dense top-100": dense_search(base, vectors, queries, args.depth),
    }
    reference = ElasticRanker(args.reference) if args.reference else None
    models = {path: ElasticRanker(path) for path in [*folds, *baseline]}
    tables = {}
    for name, first in firsts.items():
        log(f"reranking: {name}")
        runs = {"first stage": first}
        runs["bi-encoder scores"] = _rerank(first, queries, passages, BiEncoderScorer(base))
        if reference is not None:  # its other levels are in results/rerank.md
            runs["reference ranker full"] = _rerank(
                first, queries, passages, RankerScorer(reference)
            )
        if baseline:
            shares = _held_shares(baseline, queries)
            runs[f"baseline CV ranker {FULL}"] = _by_fold(first, shares, passages, models)
        for level in levels:
            shares = _held_shares(folds, queries)
            runs[f"cross-validated ranker {level}"] = _by_fold(
                first, shares, passages, models, level
            )
        for alpha in args.fuse_alpha:
            ranker_run = runs[f"cross-validated ranker {FULL}"]
            runs[f"CV ranker full + first stage, alpha={alpha:g}"] = interpolate(
                ranker_run, first, alpha=alpha, normalization="minmax", depth=args.depth
            )
        tables[name] = _table(runs, qrels, folds, level=FULL if FULL in levels else levels[0])
    report["quality"] = tables
    if args.nq:
        report["nq"] = _nq(args, base, vectors, folds, baseline, models)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


def _check_folds(paths: list[str], judged_ids: list[str]) -> dict[str, set[str]]:
    """``{model path: the queries it reranks}``, after checking that every model comes from
    the same split of DL19's judged queries, holds out a different fold, and never trained on
    a query it reranks."""
    out: dict[str, set[str]] = {}
    split = None
    for path in paths:
        record = judged_record(read_manifest(path))
        if record is None or record["dataset"] != "msmarco-dl19":
            raise SystemExit(f"{path}: not trained with --judged msmarco-dl19")
        train, held = set(record["train_query_ids"]), set(record["held_out_query_ids"])
        key = (record["folds"], record["fold_seed"])
        if split is not None and key != split:
            raise SystemExit(f"{path}: split {key} differs from the other models' {split}")
        split = key
        expected = assign_folds(judged_ids, record["folds"], record["fold_seed"])
        if held != {q for q, f in expected.items() if f == record["fold"]}:
            raise SystemExit(f"{path}: its held-out queries are not fold {record['fold']}")
        if train & held:
            raise SystemExit(f"{path}: trained on {len(train & held)} of its held-out queries")
        if {q for other in out.values() for q in other} & held:
            raise SystemExit(f"{path}: fold {record['fold']} is given twice")
        out[path] = held
    return out


def _held_shares(folds: dict, queries: list) -> dict:
    """``{model path: the queries of its held-out fold}``."""
    return {path: [q for q in queries if q.query_id in held] for path, held in folds.items()}


def _by_fold(first: dict, shares: dict, passages, models: dict, level: Level | str = FULL) -> dict:
    """One run: each model of ``shares`` (``{path: queries}``) reranks its own queries."""
    merged: dict = {}
    for path, own in shares.items():
        merged.update(_rerank(first, own, passages, RankerScorer(models[path], level=level)))
    return merged


def _nq(args, base: ElasticDenser, dl_vectors, folds: dict, baseline: dict, models: dict) -> dict:
    """Top-1/5/20 answer accuracy on the dense top-``depth`` of the first ``args.nq`` nq-open
    questions over nq-open + DL19 (``dl_vectors``: the DL19 passages' already loaded), reranked
    by the fold models round robin."""
    nq, dl = get_dataset("nq-open"), get_dataset("msmarco-dl19")
    questions = read_topics(nq.queries)[: args.nq]
    log(f"NQ: {len(questions)} questions, dense top-{args.depth} over nq-open + DL19")
    vectors = concat_stores(EmbeddingStore(encode(base, nq.corpus, "nq")).load(), dl_vectors)
    passages = load_corpora([nq.corpus, dl.corpus])
    first = dense_search(base, vectors, questions, args.depth)
    runs = {"first stage": first}
    runs["bi-encoder scores"] = _rerank(first, questions, passages, BiEncoderScorer(base))
    for label, paths in (
        (f"baseline CV ranker {FULL}", list(baseline)),
        (f"cross-validated ranker {FULL}", list(folds)),
    ):
        if paths:  # question i to the i-th model, round robin: no model saw any of them
            shares = {path: questions[i :: len(paths)] for i, path in enumerate(paths)}
            runs[label] = _by_fold(first, shares, passages, models)
    asked = {q.text.strip() for q in questions}
    qas = [pair for pair in read_qas(nq.qas) if pair.question.strip() in asked]
    texts = passage_texts(passages.values())
    return {
        label: answer_accuracy(run, qas, texts, ks=(1, 5, 20), topics=questions)
        for label, run in runs.items()
    }


def _interpolation(path: str) -> dict | None:
    """The WiSE-FT record of a ranker made by ``elasticir train interpolate``, if it is one."""
    return read_manifest(path).get("training", {}).get("interpolation")


def _rerank(first: dict, queries, passages, scorer) -> dict:
    wanted = {q.query_id for q in queries}
    run = {q: d for q, d in first.items() if q in wanted}
    return (RunFile(run) >> Rerank(scorer, passages)).run(queries)


def _table(runs: dict, qrels: dict, folds: dict, level: str) -> dict:
    """Every run's measures over all evaluated queries and per fold, and paired intervals of
    the cross-validated ranker at ``level`` against the other rows."""
    per_query = {label: evaluate_per_query(run, qrels, DL_MEASURES) for label, run in runs.items()}
    table: dict = {}
    for label, run in runs.items():
        row = {name: round(v, 4) for name, v in evaluate(run, qrels, DL_MEASURES).items()}
        row["folds"] = {
            Path(path).name: round(
                sum(per_query[label][q][NDCG] for q in held) / max(1, len(held)), 4
            )
            for path, held in folds.items()
        }
        table[label] = row
    ours = f"cross-validated ranker {level}"
    mine = {q: v[NDCG] for q, v in per_query[ours].items()}
    for label in runs:
        if label == ours:
            continue
        theirs = {q: v[NDCG] for q, v in per_query[label].items()}
        low, high = paired_bootstrap(theirs, mine)
        gain = 100 * (sum(mine.values()) - sum(theirs.values())) / len(mine)
        table[label]["cv_gain_points"] = {
            "gain": round(gain, 2),
            "ci95": [round(low, 2), round(high, 2)],
        }
    return table


def render(report: dict) -> str:
    setup = report["setup"]
    lines = [
        "# ElasticRanker trained on DL19 judgements, by cross-validation over its queries",
        "",
        f"Machine: {report['machine']}. Run {report['started']} to {report['finished']}. "
        "Regenerate: `python benchmarks/rerank_cv.py "
        + " ".join(f"--fold-model {p}" for p in setup["fold_models"])
        + "".join(f" --baseline-fold-model {p}" for p in setup.get("baseline_fold_models", {}))
        + (f" --reference {setup['reference']}" if setup["reference"] else "")
        + (f" --levels {','.join(setup['levels'])}" if setup["levels"] != ["full"] else "")
        + "".join(f" --fuse-alpha {a:g}" for a in setup.get("fuse_alpha", []))
        + (f" --nq {setup['nq_questions']}" if setup.get("nq_questions") else "")
        + f" --out {setup['out']}`.",
        "",
        f"{setup['queries']} DL19 queries, each reranked only by the model of its own fold, "
        "which never saw its judgements:",
        "",
    ]
    interpolations = setup.get("interpolations", {})
    for path, held in setup["fold_models"].items():
        line = f"- `{path}`: {len(held)} queries ({', '.join(held)})"
        if path in interpolations:
            record = interpolations[path]
            line += (
                f"; WiSE-FT weights, alpha={record['alpha']:g} of `{record['trained']}` "
                "and its run's start net"
            )
        lines.append(line)
    if setup.get("baseline_fold_models"):
        lines += ["", "Row *baseline CV ranker full*, the same folds:"]
        lines += [f"- `{path}`" for path in setup["baseline_fold_models"]]
    lines.append("")
    for name, table in report["quality"].items():
        names = list(next(iter(table.values())))
        measures = [m for m in names if m not in ("folds", "cv_gain_points")]
        fold_names = list(next(iter(table.values()))["folds"])
        lines += [f"## DL19, {name}", ""]
        header = ["reranker", *measures, "CV ranker gain, nDCG@10 points (95% CI)"]
        header += [f"nDCG@10 {f}" for f in fold_names]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for label, row in table.items():
            gain = row.get("cv_gain_points")
            gain_text = (
                f"{gain['gain']:+.2f} ({gain['ci95'][0]:+.2f} to {gain['ci95'][1]:+.2f})"
                if gain
                else ""
            )
            cells = [label, *(f"{row[m]:.4f}" for m in measures), gain_text]
            cells += [f"{row['folds'][f]:.4f}" for f in fold_names]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("nq"):
        table = report["nq"]
        measures = list(next(iter(table.values())))
        lines += [
            f"## NQ (nq-open + DL19 passages), dense top-{setup['depth']}, first "
            f"{setup['nq_questions']} questions",
            "",
            "No model saw an NQ question; question i is reranked by the i-th fold model, round "
            "robin. DPR answer accuracy:",
            "",
            "| reranker | " + " | ".join(measures) + " |",
            "|" + "---|" * (len(measures) + 1),
        ]
        for label, row in table.items():
            lines.append(f"| {label} | " + " | ".join(f"{row[m]:.4f}" for m in measures) + " |")
        lines.append("")
    lines.append(
        "*CV ranker gain*: the cross-validated ranker's mean nDCG@10 minus the row's, in "
        "points, with a 95% paired-bootstrap interval over the queries."
    )
    if setup.get("fuse_alpha"):
        lines += [
            "",
            "*CV ranker full + first stage*: per query, the ranker's and the first stage's "
            "scores over the top "
            f"{setup['depth']} are min-max normalised and mixed, alpha * ranker + (1 - alpha) * "
            "first stage (`elasticir.retrieve.fusion.interpolate`); alpha is fixed, not fitted "
            "on DL19.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
