"""ElasticDenser benchmark: every compute level x every projection, against static baselines.

    python benchmarks/denser.py                       # writes results/denser.md and .json
    python benchmarks/denser.py --only-speed          # re-measure speed, keep the quality

Needs the models the documented training commands write (see results/denser.md):

    elasticir train denser -c configs/denser-minilm.json           # models/minilm-elastic
    elasticir train denser -c configs/denser-minilm-focus.json     # ... with L6-W50 every step
    elasticir train denser -c configs/denser-static-L6W50.json     # static baselines
    elasticir train denser -c configs/denser-static-L2W50.json
    elasticir train denser -c configs/denser-minilm-focus-4k.json  # twice the steps, with
    elasticir train denser -c configs/denser-static-L6W50-4k.json  # static baselines of as
    elasticir train denser -c configs/denser-static-L2W50-4k.json  # many steps (--static)

and the projections shipped in the package (``elasticir train projection`` reproduces them).

For each dataset (msmarco-dl19; nq-open with the DL19 passages as distractors) and each
level x dimension of the elastic model: FLOPs ratio, single-query encode latency and queries/s
at batch 32 (ratios to full measured in interleaved rounds of the same run), nDCG@10 / RR@10 /
R@100 (DL19) and top-1/5/20 accuracy and RR@10 (NQ). Beside them: the untrained base model,
plain truncation of the pretrained model at every level (importance-reordered, no training),
and a static model trained alone at one level with the same data and steps. Passage vectors
are the base model's at full compute (the index space every query level is trained into),
encoded once into embedding stores under indexes/bench/ (resumable); a projected index holds
exactly ``projection.apply`` of those vectors, which is what ``index --dim`` stores. One
extra row shows the cheap-indexing mode: DL19 passages encoded at a passage-side level.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import (  # noqa: E402
    DL_MEASURES,
    NQ_MEASURES,
    WORK,
    encode,
    log,
    machine,
    paired_bootstrap,
    report_path,
)
from elasticir.compute.levels import Level  # noqa: E402
from elasticir.data import get_dataset, load_passages, read_qrels  # noqa: E402
from elasticir.data.topics import read_qas, read_topics  # noqa: E402
from elasticir.eval.measures import evaluate, evaluate_per_query  # noqa: E402
from elasticir.eval.qa import answer_accuracy, passage_texts  # noqa: E402
from elasticir.index.store import EmbeddingStore, encode_corpus  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.models.elastic import make_elastic  # noqa: E402

DIMS = (384, 256, 128, 64)
STATIC = {"L6-W50": "models/minilm-static-L6W50", "L2-W50": "models/minilm-static-L2W50"}
CHEAP_PASSAGE_LEVEL = "L6-W50"
PER_QUERY = "dl19 nDCG@10 per query"  # kept for the paired bootstrap of the targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/minilm-elastic")
    parser.add_argument("--out", type=Path, default=Path("results/denser"))
    parser.add_argument("--speed-queries", type=int, default=64)
    parser.add_argument("--speed-rounds", type=int, default=5)
    parser.add_argument("--only-speed", action="store_true")
    parser.add_argument(
        "--render-only", action="store_true", help="Rewrite the .md from the .json (no runs)"
    )
    parser.add_argument("--no-cheap-index", action="store_true", help="Skip the passage-level row")
    parser.add_argument(
        "--static",
        action="append",
        metavar="LEVEL=MODEL",
        help="A static baseline trained at LEVEL alone (repeatable; default: "
        + ", ".join(f"{lv}={path}" for lv, path in STATIC.items())
        + "); train it with the elastic model's steps so the comparison is fair",
    )
    parser.add_argument(
        "--only-baselines",
        action="store_true",
        help="Compute (and keep) the baselines' scores only, e.g. while the model trains",
    )
    args = parser.parse_args()
    if args.render_only:
        report = json.loads(report_path(args.out, ".json").read_text())
        report_path(args.out, ".md").write_text(render(report))
        return
    dl, nq = get_dataset("msmarco-dl19"), get_dataset("nq-open")
    if args.only_baselines:
        quality(None, dl, nq, args)
        return
    elastic = ElasticDenser(args.model)
    speed_queries = _speed_queries(dl, nq, args.speed_queries)
    if args.only_speed:
        report = json.loads(report_path(args.out, ".json").read_text())
    else:
        report = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        report["out"] = str(args.out)
        report["command"] = " ".join(["python", "benchmarks/denser.py", *sys.argv[1:]])
        report["model"] = _model_card(elastic)
        report.update(quality(elastic, dl, nq, args))
        report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    log("speed: levels x dims, interleaved rounds")
    report["speed"] = speed(elastic, speed_queries, args.speed_rounds)
    report["speed_measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["targets"] = targets(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


# -- quality -----------------------------------------------------------------------------------
class Corpus:
    """Passage vectors of the base model (full compute) and their projections, in memory."""

    def __init__(self, ids: list[str], vectors: np.ndarray) -> None:
        self.ids, self.vectors = ids, vectors
        self._indexes: dict[int, object] = {}

    def index(self, encoder: ElasticDenser, dim: int):
        import faiss

        if dim not in self._indexes:
            projection = encoder.projection(dim)
            vectors = self.vectors
            if projection is not None:
                vectors = projection.apply(vectors, side="passage")
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
            self._indexes[dim] = index
        return self._indexes[dim]

    def run(self, encoder: ElasticDenser, query_ids: list[str], vectors: np.ndarray, dim: int):
        projection = encoder.projection(dim)
        queries = vectors if projection is None else projection.apply(vectors, side="query")
        scores, rows = self.index(encoder, dim).search(queries, 100)
        return {
            qid: {self.ids[r]: float(s) for s, r in zip(ss, rr) if r >= 0}
            for qid, ss, rr in zip(query_ids, scores, rows)
        }


def quality(elastic: ElasticDenser | None, dl, nq, args) -> dict:
    """Every quality number; with ``elastic=None`` only the baselines (kept for a rerun)."""
    base = ElasticDenser()
    if elastic is not None and elastic.fingerprint != base.fingerprint:
        raise SystemExit(f"{args.model} is not trained into the base model's passage space")
    log("passage vectors of the base model (cached, resumable)")
    stores = {name: encode(base, ds.corpus, name) for name, ds in (("dl19", dl), ("nq", nq))}
    dl_ids, dl_vectors = EmbeddingStore(stores["dl19"]).load()
    nq_ids, nq_vectors = EmbeddingStore(stores["nq"]).load()
    corpora = {
        "dl19": Corpus(dl_ids, dl_vectors),
        "nq+dl19": Corpus(nq_ids + dl_ids, np.concatenate([nq_vectors, dl_vectors])),
    }
    dl_queries, qrels = read_topics(dl.queries), read_qrels(dl.qrels)
    nq_queries, nq_qrels, qas = read_topics(nq.queries), read_qrels(nq.qrels), read_qas(nq.qas)
    texts = {}
    for path in (nq.corpus, dl.corpus):
        texts.update(passage_texts(load_passages(path).values()))

    def scores(encoder: ElasticDenser, level, dims=DIMS, space: ElasticDenser = base) -> dict:
        """Both datasets' metrics for one query encoder at one level, per dimension.

        Kept in indexes/bench/denser-scores/ by the query weights' fingerprint, the level and
        the projections, so a rerun (say, once another model is trained) reuses them."""
        projections = "-".join(
            str(d) if space.projection(d) is None else space.projection(d).fingerprint for d in dims
        )
        key = f"{encoder.own_fingerprint}-{level}-{projections}"
        memo = WORK / "denser-scores" / f"{key}.json"
        if memo.is_file():
            cached = json.loads(memo.read_text())
            if all(PER_QUERY in row for row in cached.values()):  # older memos lack them
                return cached
        out = {}
        dq = encoder.encode_queries([q.text for q in dl_queries], level=level)
        nv = encoder.encode_queries([q.text for q in nq_queries], level=level)
        for dim in dims:
            run = corpora["dl19"].run(space, [q.query_id for q in dl_queries], dq, dim)
            row = {"dl19": evaluate(run, qrels, DL_MEASURES)}
            row[PER_QUERY] = {
                qid: values["nDCG@10"]
                for qid, values in evaluate_per_query(run, qrels, ["nDCG@10"]).items()
            }
            run = corpora["nq+dl19"].run(space, [q.query_id for q in nq_queries], nv, dim)
            accuracy = answer_accuracy(run, qas, texts, ks=(1, 5, 20), topics=nq_queries)
            row["nq+dl19"] = {**accuracy, **evaluate(run, nq_qrels, NQ_MEASURES)}
            out[str(dim)] = row
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(out))
        return out

    report: dict = {"levels": {}, "baselines": {}}
    log("base model (untrained), full compute, every dimension")
    report["baselines"]["base model, full"] = {"level": "full", "scores": scores(base, "full")}
    for level in elastic.levels if elastic is not None else ():
        log(f"elastic model at {level}")
        report["levels"][str(level)] = {
            "flops_ratio": round(elastic.flops_ratio(level), 4),
            "scores": scores(elastic, level),
        }
    truncated = _plain_truncation(elastic)
    for level in truncated.levels[1:]:
        log(f"plain truncation at {level}")
        report["baselines"][f"plain truncation, {level}"] = {
            "level": str(level),
            "scores": scores(truncated, level, dims=(384, 128)),
        }
    for level, path in _statics(args.static).items():
        if not Path(path, "elasticir.json").is_file():
            log(f"static baseline {path} missing: train it with configs/ (see the docstring)")
            continue
        log(f"static model trained at {level} only")
        static = ElasticDenser(path)
        report["baselines"][f"static trained, {level}"] = {
            "level": level,
            "model": path,
            "steps": _model_card(static)["steps"],
            "scores": scores(static, level, dims=(384, 128)),
        }
    if not args.no_cheap_index and elastic is not None:
        report["cheap_index"] = cheap_index(elastic, dl, dl_queries, qrels)
    return report


def _statics(given: list[str] | None) -> dict[str, str]:
    """``LEVEL=MODEL`` options as a level -> model directory map (the defaults without any)."""
    if not given:
        return dict(STATIC)
    statics = {}
    for item in given:
        level, sep, path = item.partition("=")
        if not sep or not level or not path:
            raise SystemExit(f"--static {item!r}: expected LEVEL=MODEL, e.g. L6-W50=models/static")
        try:
            statics[str(Level(level))] = path
        except ValueError as err:
            raise SystemExit(f"--static {item!r}: {err}") from None
    return statics


def cheap_index(elastic: ElasticDenser, dl, queries, qrels) -> dict:
    """DL19 passages encoded at a passage-side level by the elastic model (cheap indexing)."""
    log(f"cheap indexing: DL19 passages at {CHEAP_PASSAGE_LEVEL} (cached, resumable)")
    store = WORK / f"dl19-passages-{CHEAP_PASSAGE_LEVEL}.embeddings"
    started = time.perf_counter()
    report = encode_corpus(dl.corpus, store, elastic, level=CHEAP_PASSAGE_LEVEL)
    ids, vectors = EmbeddingStore(store).load()
    corpus = Corpus(ids, vectors)
    out = {"passage_level": CHEAP_PASSAGE_LEVEL, "encode_seconds_this_run": report.seconds}
    out["store_meta_level"] = EmbeddingStore(store).meta["level"]
    for level in ("full", CHEAP_PASSAGE_LEVEL):
        vectors_q = elastic.encode_queries([q.text for q in queries], level=level)
        run = corpus.run(elastic, [q.query_id for q in queries], vectors_q, 384)
        out[f"query {level}"] = evaluate(run, qrels, DL_MEASURES)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _plain_truncation(elastic: ElasticDenser | None) -> ElasticDenser:
    """The pretrained model reordered by importance on the same kind of queries, untrained,
    offering the elastic model's menu (the default menu when there is none yet)."""
    from elasticir.data.datasets import data_root
    from elasticir.train.data import training_text

    path = WORK / "minilm-plain-truncation"
    if not (path / "elasticir.json").is_file():
        queries = training_text(data_root()).queries
        sample = random.Random(13).sample(queries, 512)
        levels = None if elastic is None else [str(lv) for lv in elastic.levels]
        make_elastic(None, path, sample, levels=levels, max_length=32)
    return ElasticDenser(path)


# -- speed -------------------------------------------------------------------------------------
def _speed_queries(dl, nq, n: int) -> list[str]:
    texts = [q.text for q in read_topics(dl.queries)] + [q.text for q in read_topics(nq.queries)]
    return random.Random(7).sample(texts, n)


def speed(encoder: ElasticDenser, texts: list[str], rounds: int) -> dict:
    """Per (level, dim): median single-query latency and batch-32 queries/s, with ratios to
    (full, 384) taken within each round (levels interleaved, so noise hits all alike)."""
    import torch

    combos = [(str(lv), d) for lv in encoder.levels for d in DIMS]
    for level, dim in combos:  # warm-up
        encoder.encode_queries(texts[:8], level=level, dim=dim)
    single = {c: [] for c in combos}
    batched = {c: [] for c in combos}
    for _ in range(rounds):
        for combo in random.Random(len(single[combos[0]])).sample(combos, len(combos)):
            level, dim = combo
            times = []
            for text in texts:
                start = time.perf_counter()
                encoder.encode_queries([text], level=level, dim=dim)
                times.append(time.perf_counter() - start)
            single[combo].append(statistics.median(times) * 1000)
            start = time.perf_counter()
            for i in range(0, len(texts), 32):
                encoder.encode_queries(texts[i : i + 32], level=level, dim=dim, batch_size=32)
            batched[combo].append(len(texts) / (time.perf_counter() - start))
    full = ("full", 384)
    table = {}
    for combo in combos:
        latency_ratio = [f / c for f, c in zip(single[full], single[combo])]
        qps_ratio = [c / f for f, c in zip(batched[full], batched[combo])]
        table[f"{combo[0]}@{combo[1]}"] = {
            "latency_ms": round(statistics.median(single[combo]), 3),
            "speedup_single": round(statistics.median(latency_ratio), 3),
            "qps_batch32": round(statistics.median(batched[combo]), 1),
            "speedup_batch32": round(statistics.median(qps_ratio), 3),
        }
    return {
        "queries": len(texts),
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "table": table,
    }


# -- targets and report ------------------------------------------------------------------------
def targets(report: dict) -> dict:
    levels, speed_table = report["levels"], report["speed"]["table"]
    full = levels["full"]["scores"]["384"]
    out = {}
    half = {lv: v for lv, v in levels.items() if v["flops_ratio"] <= 0.5}
    best = max(half, key=lambda lv: half[lv]["scores"]["384"]["dl19"]["nDCG@10"])
    row = half[best]["scores"]["384"]
    out["<=50% FLOPs level within 1.0 nDCG@10 point of full (DL19)"] = _check(
        f"{best}: {100 * (row['dl19']['nDCG@10'] - full['dl19']['nDCG@10']):+.2f} points"
        + _interval(full, row),
        full["dl19"]["nDCG@10"] - row["dl19"]["nDCG@10"] <= 0.010,
    )
    best_nq = max(half, key=lambda lv: half[lv]["scores"]["384"]["nq+dl19"]["Top1"])
    row = half[best_nq]["scores"]["384"]
    out["<=50% FLOPs level within 1.5 top-1 points of full (NQ + distractors)"] = _check(
        f"{best_nq}: {100 * (row['nq+dl19']['Top1'] - full['nq+dl19']['Top1']):+.2f} points",
        full["nq+dl19"]["Top1"] - row["nq+dl19"]["Top1"] <= 0.015,
    )
    smallest = list(levels)[-1]
    ratio = speed_table[f"{smallest}@384"]["speedup_single"]
    out["smallest level >= 3x full single-query throughput"] = _check(
        f"{smallest}: {ratio:.2f}x", ratio >= 3.0
    )
    projected = levels["full"]["scores"]["128"]
    drop = full["dl19"]["nDCG@10"] - projected["dl19"]["nDCG@10"]
    out["128-d within 1.0 nDCG@10 point of 384-d (DL19, full level)"] = _check(
        f"{-100 * drop:+.2f} points" + _interval(full, projected), drop <= 0.010
    )
    worse = []
    for name, baseline in report["baselines"].items():
        if not name.startswith("plain truncation"):
            continue
        ours = levels[baseline["level"]]["scores"]["384"]
        theirs = baseline["scores"]["384"]
        for dataset, measure in (("dl19", "nDCG@10"), ("nq+dl19", "Top1")):
            if ours[dataset][measure] < theirs[dataset][measure]:
                worse.append(f"{baseline['level']} {dataset} {measure}")
    out["every elastic level >= plain truncation of the same shape"] = _check(
        "all levels" if not worse else "worse at " + ", ".join(worse), not worse
    )
    return out


def _interval(full: dict, other: dict) -> str:
    """`` (95% CI a to b)`` of ``other - full`` on DL19 nDCG@10, when both have per-query
    scores."""
    if PER_QUERY not in full or PER_QUERY not in other:
        return ""
    low, high = paired_bootstrap(full[PER_QUERY], other[PER_QUERY])
    return f" (95% CI {low:+.2f} to {high:+.2f})"


def _gap_note(what: str, before: dict, after: dict) -> str:
    """`` WHAT on DL19: x points (95% CI a to b).``: ``after - before`` at 384-d, when both
    have per-query scores."""
    a, b = before["scores"]["384"], after["scores"]["384"]
    interval = _interval(a, b)
    if not interval:
        return ""
    gap = 100 * (b["dl19"]["nDCG@10"] - a["dl19"]["nDCG@10"])
    return f" {what} on DL19: {gap:+.2f} points{interval}."


def _check(detail: str, ok: bool) -> dict:
    return {"met": bool(ok), "detail": detail}


def _model_card(elastic: ElasticDenser) -> dict:
    manifest = json.loads(Path(elastic.model_path, "elasticir.json").read_text())
    training = manifest.get("training", {})
    return {
        "path": elastic.model_path,
        "levels": [str(lv) for lv in elastic.levels],
        "method": training.get("method"),
        "steps": training.get("steps"),
        "seconds": training.get("seconds"),
        "seconds_per_step": training.get("seconds_per_step"),
        "torch_threads": training.get("torch_threads"),
        "config": training.get("config"),
        "data": training.get("data"),
        "gpu": manifest.get("gpu"),
        "projections": {
            str(d): p.describe() | {"source": Path(p.source).name}
            for d, p in elastic.projections.items()
        },
        "projection_training": _projection_training(elastic),
    }


def _projection_training(elastic: ElasticDenser) -> dict:
    """How the projections were fitted (the file's own record): method and held-out fits."""
    from safetensors import safe_open

    sources = {p.source for p in elastic.projections.values()}
    if len(sources) != 1:
        return {}
    with safe_open(next(iter(sources)), framework="numpy") as fh:
        training = json.loads((fh.metadata() or {}).get("training", "{}"))
    return {"method": training.get("method"), "fits": training.get("fits", {})}


def render(report: dict) -> str:
    speed_table = report["speed"]["table"]
    card = report["model"]
    lines = [
        "# ElasticDenser benchmark",
        "",
        f"Machine: {report['machine']}. Quality measured {report.get('finished', '?')}, "
        f"speed {report.get('speed_measured', '?')} ({report['speed']['rounds']} interleaved "
        f"rounds, {report['speed']['queries']} queries, {report['speed']['torch_threads']} "
        "torch threads). Regenerate: `"
        + report.get(
            "command",
            f"python benchmarks/denser.py --model {card['path']} "
            f"--out {report.get('out', 'results/denser')}",
        )
        + "`.",
        "",
        *([report["note"], ""] if report.get("note") else []),
        f"Model: `{card['path']}`, {card['method']} training, {card['steps']} steps, "
        f"{card['seconds']} s on {card['torch_threads']} thread(s) "
        f"({card['seconds_per_step']} s/step). Passages: the base model at full compute.",
        "",
        "## Targets",
        "",
        "| target | result | met |",
        "|---|---|---|",
    ]
    for name, check in report["targets"].items():
        lines.append(f"| {name} | {check['detail']} | {'yes' if check['met'] else '**no**'} |")
    for dataset, title, measures in (
        ("dl19", "msmarco-dl19 (43 queries, 20,152 pooled passages)", DL_MEASURES),
        (
            "nq+dl19",
            "nq-open with the DL19 passages as distractors",
            ("Top1", "Top5", "Top20", "RR@10"),
        ),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "Speed columns: single-query encode latency (ms, and speedup vs full@384) and "
            "queries/s at batch 32 (and speedup), medians over rounds.",
            "",
            "| level | dim | FLOPs | latency ms | speedup 1q | q/s b32 | speedup b32 | "
            + " | ".join(_name(m) for m in measures)
            + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(measures),
        ]
        for level, entry in report["levels"].items():
            for dim in DIMS:
                s = speed_table[f"{level}@{dim}"]
                row = entry["scores"][str(dim)][dataset]
                lines.append(
                    f"| {level} | {dim} | {entry['flops_ratio']:.3f} | {s['latency_ms']:.2f} | "
                    f"{s['speedup_single']:.2f}x | {s['qps_batch32']:.0f} | "
                    f"{s['speedup_batch32']:.2f}x | "
                    + " | ".join(f"{row[m]:.4f}" for m in measures)
                    + " |"
                )
        lines += [
            "",
            "Baselines (same passage vectors; their speed is the elastic level of the same shape):",
            "",
            "| baseline | dim | " + " | ".join(_name(m) for m in measures) + " |",
            "|---|---|" + "---|" * len(measures),
        ]
        for name, baseline in report["baselines"].items():
            for dim, scores in baseline["scores"].items():
                row = scores[dataset]
                lines.append(
                    f"| {name} | {dim} | " + " | ".join(f"{row[m]:.4f}" for m in measures) + " |"
                )
    cheap = report.get("cheap_index")
    if cheap:
        lines += [
            "",
            "## Cheap indexing (passage-side level)",
            "",
            f"DL19 passages encoded by the elastic model at {cheap['passage_level']} "
            f"(store meta level: `{cheap['store_meta_level']}`), searched with its query "
            "levels:",
            "",
            "| queries at | " + " | ".join(_name(m) for m in DL_MEASURES) + " |",
            "|---|" + "---|" * len(DL_MEASURES),
        ]
        for key in (k for k in cheap if k.startswith("query ")):
            lines.append(
                f"| {key[6:]} | " + " | ".join(f"{cheap[key][m]:.4f}" for m in DL_MEASURES) + " |"
            )
    notes = _run_notes(report) + NOTES
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _name(measure: str) -> str:
    return {"RR(rel=2)@10": "RR@10", "R(rel=2)@100": "R@100"}.get(measure, measure)


def _drop(entry: dict, dim: str) -> float:
    """nDCG@10 points on DL19 lost by projecting ``entry``'s 384-d vectors to ``dim``."""
    scores = entry["scores"]
    return 100 * (scores["384"]["dl19"]["nDCG@10"] - scores[dim]["dl19"]["nDCG@10"])


def _data_note(card: dict) -> str:
    """What the model was trained on, read off its own manifest."""
    data = card.get("data") or {}
    corpus = data.get("corpus_passages") or {}
    pseudo = data.get("pseudo_queries") or 0
    real = (data.get("queries_used") or 0) - pseudo
    text = (
        f"**Training data**: {real:,} unlabelled queries of ../shared/data/topics (MS MARCO dev "
        "subset, DPR NQ dev, DPR TriviaQA dev)"
        + (
            f" plus {pseudo:,} pseudo-queries (4-12-word spans cut from pool passages)"
            if pseudo
            else ""
        )
        + f"; a pool of {data.get('passage_pool', 0):,} passages: training passages of "
        "../shared/data/train"
    )
    if corpus.get("texts"):
        text += (
            f", with the {corpus['texts']:,} passage texts of the "
            f"{' and '.join(corpus['datasets'])} corpora (the passages searched here, "
            "label-free: transductive)"
        )
    text += ". No DL19 query, no NQ test question, no relevance label. Teacher: the base model"
    gpu = card.get("gpu")
    if gpu:
        text += (
            f". Trained on {gpu['trained_on']}: teacher and start were {gpu['teacher_and_start']}; "
            f"{gpu['returned']}"
        )
    return text + "."


def _run_notes(report: dict) -> list[str]:
    """The notes read off this run's own numbers: budget, what elasticity costs against the
    static models, projections, cheap indexing."""
    card, levels, baselines = report["model"], report["levels"], report["baselines"]
    config = card.get("config") or {}
    notes = []

    def score(entry: dict, dataset: str, measure: str, dim: str = "384") -> float:
        return entry["scores"][dim][dataset][measure]

    focus = config.get("focus") or []
    queries = (card.get("data") or {}).get("queries_used")
    budget = (
        f"**Training budget.** {card['steps']:,} steps x {config.get('batch_size')} queries"
        + (f" ({queries:,} training queries)" if queries else "")
        + f", {card['seconds']:,.0f} s "
        + (
            f"on {card['gpu']['trained_on']} "
            if card.get("gpu")
            else f"on {card['torch_threads']} thread(s) "
        )
        + f"({card['seconds_per_step']} s/step); each step trains full, the smallest level, one "
        "random middle level" + (f" and {', '.join(focus)} (focus)" if focus else "") + "."
    )
    notes.append(budget)
    notes.append(_data_note(card))
    full = levels["full"]
    for name, baseline in baselines.items():
        if not name.startswith("static trained") or baseline["level"] not in levels:
            continue
        ours, theirs = levels[baseline["level"]], baseline
        notes.append(
            f"**Elasticity at {baseline['level']}**: the elastic level scores "
            f"{score(ours, 'dl19', 'nDCG@10'):.4f} nDCG@10 on DL19 and "
            f"{score(ours, 'nq+dl19', 'Top1'):.4f} top-1 on NQ; a model trained at that level "
            f"alone ({baseline.get('model')}"
            + (f", {baseline['steps']:,} steps" if baseline.get("steps") else "")
            + f") {score(theirs, 'dl19', 'nDCG@10'):.4f} and "
            f"{score(theirs, 'nq+dl19', 'Top1'):.4f}; the full level "
            f"{score(full, 'dl19', 'nDCG@10'):.4f} and {score(full, 'nq+dl19', 'Top1'):.4f}."
            + _gap_note("Elastic minus static", theirs, ours)
            + _gap_note("Static minus the full level", full, theirs)
        )
    order = list(levels)
    for bigger, smaller in zip(order, order[1:]):
        b, sm = score(levels[bigger], "dl19", "nDCG@10"), score(levels[smaller], "dl19", "nDCG@10")
        if b < sm:
            notes.append(
                f"{bigger} scores below the smaller {smaller} on DL19 ({b:.4f} < {sm:.4f}): the "
                "sandwich trains the smallest level every step, a middle level only when drawn."
            )
    fits = (card.get("projection_training") or {}).get("fits") or {}
    if fits:
        base = baselines.get("base model, full")
        drops = []
        for dim in ("256", "128", "64"):
            line = f"{dim}-d costs {_drop(full, dim):.2f}"
            if base is not None:
                line += f" (base model: {_drop(base, dim):.2f})"
            drops.append(line)
        kept = ", ".join(
            f"{d}-d {fit['heldout_top10_kept']:.2f}"
            for d, fit in sorted(fits.items(), key=lambda x: -int(x[0]))
        )
        notes.append(
            f"**Projections** ({card['projection_training'].get('method')}), fitted on the base "
            f"model's vectors of the training queries and passages; held-out top-10 agreement "
            f"with the 384-d ranking: {kept}. On DL19 nDCG@10 points, against 384-d at the "
            f"trained full level: {'; '.join(drops)}."
        )
    cheap = report.get("cheap_index")
    if cheap:
        at = cheap["passage_level"]
        notes.append(
            f"Cheap indexing is a mode, not a trained one yet: the passage-side {at} vectors "
            "come from the query-trained weights (never trained on passages); with full-level "
            f"queries they score {cheap['query full']['nDCG@10']:.4f} nDCG@10 on DL19 against "
            f"{score(full, 'dl19', 'nDCG@10'):.4f} on the full-compute index."
        )
    return notes


NOTES = [
    "Projection runs in torch, not numpy: numpy's BLAS threads spin after each call and "
    "slowed the next encoder batch by up to 35% in an earlier run of this benchmark.",
    "The passage side is the frozen base model at full compute; every query level of the "
    "elastic model searches that one index. Only the query encoder is elastic here.",
    "A projected index holds `projection.apply(..., side='passage')` of the 384-d passage "
    "vectors, exactly what `elasticir index --dim D` stores; queries go through the "
    "projection's query side (its own matrix when the projection is asymmetric).",
    "Plain truncation: the pretrained model with heads and neurons reordered by importance on "
    "512 training queries, no training. Static trained: one level trained alone "
    "(sandwich=False) with the same data, steps, batch and learning rate.",
    "Timings are from a shared 2-core machine: read the ratios measured in the same rounds, "
    "not absolute times.",
    "The 95% intervals of the DL19 targets are a paired bootstrap over the 43 queries "
    "(10,000 resamples of the per-query nDCG@10 differences, seeded): the room 43 queries "
    "leave around each gap. A target counts as met on the point estimate.",
]


if __name__ == "__main__":
    main()
