"""The quickstart: one index, every query level of the shipped ElasticDenser, and the shipped
rerankers (DiPair, ElasticRanker at full and under its calibrated policy) on a query sample.

Everything is measured in the same run, so the latency and throughput columns are ratios to
full compute on this machine: single-query latency per level (the levels interleaved query by
query, so a noisy neighbour hits them alike), pairs/s per reranker. Quality is on every query
for the levels, on a seeded sample for the reranking rows (the table says how many). A PNG of
quality against per-query latency is written next to the runs. Runs on the shared data folder
when it is there, otherwise on the tiny sample shipped in the package (and says how to get
real data).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from elasticir import api
from elasticir.data.datasets import Dataset, data_root, get_dataset, sample_dataset
from elasticir.data.errors import MissingResourceError
from elasticir.data.files import atomic_file
from elasticir.data.topics import read_topics
from elasticir.data.trec import write_run

NO_DATA_HINT = (
    "No data folder found, so the quickstart runs on the 40-passage sample shipped with the "
    "package. For real benchmarks (MS MARCO DL19, NQ), put the data folder at ../shared/data "
    "or set ELASTICIR_DATA=/path/to/data (it holds msmarco-dl19/, nq-open/, topics/)."
)

QUICKSTART_DATASETS = ("nq-open", "msmarco-dl19", "sample")
DENSE_MODEL = "elastic-minilm"
RANKER_MODEL = "ranker-minilm"
DIPAIR_MODEL = "dipair-minilm"
POLICY = "rank"  # the shipped calibration the policy row uses


@dataclass
class QuickstartRow:
    """One system: its quality, and its cost measured in this run."""

    system: str
    compute: str
    queries: int  # how many queries the quality is over
    quality: dict[str, float]
    latency_ms: float | None = None  # median single-query latency (dense levels)
    latency_ratio: float | None = None  # latency_ms / full level's
    pairs_per_s: float | None = None  # reranking throughput
    speedup: float | None = None  # pairs/s over the full ranker's
    flops: float | None = None  # level FLOPs vs full
    per_query_ms: float | None = None  # first stage + reranking, for the plot


@dataclass
class QuickstartResult:
    dataset: str
    rows: list[QuickstartRow]
    runs: dict[str, Path]
    used_sample: bool
    rerank_queries: int = 0
    depth: int = 0
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)


def choose_dataset(name: str = "nq-open", data_dir: Path | None = None) -> tuple[Dataset, bool]:
    """The named dataset, or the shipped sample (``True``) when no data folder exists.

    Raises ``ValueError`` for a dataset the quickstart does not run and
    :class:`MissingResourceError` for a ``data_dir`` that does not exist or lacks the
    dataset: only a data folder that is nowhere to be found falls back to the sample.
    """
    if name not in QUICKSTART_DATASETS:
        raise ValueError(
            f"the quickstart runs on {', '.join(QUICKSTART_DATASETS)}; got {name!r} (use "
            "`elasticir index`, `search` and `eval` for other datasets)"
        )
    if name == "sample":
        return sample_dataset(), False
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise MissingResourceError(f"--data-dir {data_dir}: no such directory")
        return get_dataset(name, root=data_dir), False
    try:
        root = data_root()
    except MissingResourceError:
        if os.environ.get("ELASTICIR_DATA"):
            raise  # named, but not there: say so rather than run on the sample
        return sample_dataset(), True
    return get_dataset(name, root=root), False


def _measures(dataset: Dataset) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(ir_measures names, answer-accuracy ks) shown for ``dataset``."""
    if dataset.qas is not None:
        return ("nDCG@10", "RR@10"), (1, 5, 20)
    return ("nDCG@10", "RR(rel=2)@10"), ()


@dataclass(frozen=True)
class _Judgements:
    """What a run is scored against, read once: qrels, and for QA sets the questions, their
    answers and every passage's text."""

    measures: tuple[str, ...]
    ks: tuple[int, ...]
    qrels: dict
    topics: tuple = ()
    qas: tuple = ()
    texts: dict = field(default_factory=dict)

    @classmethod
    def of(cls, dataset: Dataset) -> _Judgements:
        from elasticir.data.corpus import load_passages
        from elasticir.data.topics import read_qas
        from elasticir.data.trec import read_qrels
        from elasticir.eval.qa import passage_texts

        measures, ks = _measures(dataset)
        if dataset.qas is None:
            return cls(measures, ks, read_qrels(dataset.qrels))
        return cls(
            measures,
            ks,
            read_qrels(dataset.qrels),
            tuple(read_topics(dataset.queries)),
            tuple(read_qas(dataset.qas)),
            passage_texts(load_passages(dataset.corpus).values()),
        )

    def quality(self, run: api.Run) -> dict[str, float]:
        """The shown measures over the queries ``run`` answers (a sample over itself)."""
        from elasticir.eval.measures import evaluate
        from elasticir.eval.qa import answer_accuracy

        qrels = {q: d for q, d in self.qrels.items() if q in run}
        found = dict(evaluate(run, qrels, self.measures))
        if self.ks:
            topics = [q for q in self.topics if q.query_id in run]
            asked = {q.text.strip() for q in topics}
            qas = [p for p in self.qas if p.question.strip() in asked]
            found.update(answer_accuracy(run, qas, self.texts, ks=self.ks, topics=topics))
        keep = list(self.measures) + [f"Top{k}" for k in self.ks]
        return {m: found[m] for m in keep if m in found}


def run_quickstart(
    dataset: Dataset,
    *,
    index_root: Path = Path("indexes"),
    runs_root: Path = Path("runs"),
    k: int = 100,
    rerank_queries: int = 50,
    depth: int = 20,
    latency_queries: int = 40,
    progress: bool = True,
    used_sample: bool = False,
    say: Callable[[str], None] = print,
) -> QuickstartResult:
    """Index ``dataset`` once with the shipped ElasticDenser's passage space, search it at
    every level, rerank a sample with the shipped rerankers; return the rows (see the module
    docstring). The quickstart's own index is rebuilt on every run (``overwrite``)."""
    from elasticir.compute.flops import flops_ratio
    from elasticir.models.denser import ElasticDenser
    from elasticir.pipeline import DenseRetrieval

    if dataset.corpus is None or dataset.queries is None:
        raise ValueError(f"dataset {dataset.name!r} has no corpus or queries to run on")
    say(f"loading the shipped models ({DENSE_MODEL}, {RANKER_MODEL}, {DIPAIR_MODEL})")
    encoder = ElasticDenser(DENSE_MODEL)
    index_dir = index_root / f"{dataset.name}-{DENSE_MODEL}"
    say(f"indexing {dataset.corpus.name} of {dataset.name} into {index_dir}")
    api.build_index(
        api.IndexConfig(corpus=dataset.corpus, output=index_dir, progress=progress, overwrite=True),
        encoder,
    )
    queries = read_topics(dataset.queries)
    judge = _Judgements.of(dataset)
    dense = DenseRetrieval(index_dir, encoder, k=k)
    levels = [str(level) for level in encoder.levels]
    flops = {str(lv): flops_ratio(encoder.model.config, lv) for lv in encoder.levels}
    runs: dict[str, Path] = {}
    rows: list[QuickstartRow] = []
    say(f"searching {len(queries)} queries at {len(levels)} levels: {', '.join(levels)}")
    for level in levels:
        run = dense(queries, compute=level).run
        path = runs_root / f"{dataset.name}-dense-{level}.trec"
        write_run(path, run, tag=f"{DENSE_MODEL}-{level}", k=k)
        runs[f"dense {level}"] = path
        rows.append(
            QuickstartRow(
                f"dense {level}",
                level,
                len(queries),
                judge.quality(run),
                flops=flops.get(level),
            )
        )
    latency = _latencies(dense, queries, levels, latency_queries)
    full_ms = latency["full"]
    for row in rows:
        row.latency_ms = latency[row.compute]
        row.latency_ratio = row.latency_ms / full_ms
        row.per_query_ms = row.latency_ms
    sample = _sample(queries, rerank_queries)
    rerank_rows, notes = _rerank(dataset, judge, dense, sample, depth, runs_root, runs, say)
    for row in rerank_rows:
        row.per_query_ms = full_ms + depth / row.pairs_per_s * 1000 if row.pairs_per_s else None
    result = QuickstartResult(
        dataset.name, rows + rerank_rows, runs, used_sample, len(sample), depth, notes=notes
    )
    result.plot = _plot(result, runs_root / f"{dataset.name}-quickstart.png")
    summary = runs_root / f"{dataset.name}-quickstart.json"
    with atomic_file(summary) as tmp:
        tmp.write_text(json.dumps(_as_json(result), indent=2) + "\n", encoding="utf-8")
    runs["summary"] = summary
    return result


def _latencies(dense, queries, levels: list[str], count: int) -> dict[str, float]:
    """Median single-query latency (ms) per level over ``count`` queries, the levels taken in
    turn for each query (after one warm-up call per level)."""
    chosen = _sample(queries, count)
    for level in levels:
        dense(chosen[:1], compute=level)
    times: dict[str, list[float]] = {level: [] for level in levels}
    for query in chosen:
        for level in levels:
            start = time.perf_counter()
            dense([query], compute=level)
            times[level].append((time.perf_counter() - start) * 1000)
    return {level: statistics.median(values) for level, values in times.items()}


def _sample(queries: list, count: int) -> list:
    if count >= len(queries):
        return list(queries)
    rows = sorted(random.Random(17).sample(range(len(queries)), count))
    return [queries[i] for i in rows]


def _rerank(dataset, judge, dense, sample, depth, runs_root, runs, say):
    """The reranking rows on ``sample``: dense full, DiPair, ElasticRanker full and under the
    shipped calibrated policy, each over the dense full top ``depth``."""
    from elasticir.data.corpus import load_passages, write_corpus
    from elasticir.models.shipped import get_shipped
    from elasticir.rerank.dipair import DiPair, DiPairScorer
    from elasticir.rerank.factory import resolve_policy
    from elasticir.rerank.ranker import ElasticRanker, RankerScorer

    first = dense % depth
    candidates = first(sample, compute="full").run
    rows = [QuickstartRow("dense full (sample)", "full", len(sample), judge.quality(candidates))]
    ranker = ElasticRanker(RANKER_MODEL)
    shipped = get_shipped(RANKER_MODEL).calibrations()
    # the calibration made on lists of this depth when one ships (rank-top20), else rank
    name = f"{POLICY}-top{depth}" if f"{POLICY}-top{depth}" in shipped else POLICY
    level, policy = resolve_policy("full", f"calibrated:{shipped[name]}")
    wanted = {d for docs in candidates.values() for d in docs}
    dipair = DiPair.load(DIPAIR_MODEL)
    notes = [
        f"reranking rows: {len(sample)} queries (seeded sample), the dense full top {depth} each",
        f"ranker policy: the shipped '{name}' calibration ({policy.split(',')[0]}, at {level})",
    ]
    made_at = json.loads(shipped[name].read_text(encoding="utf-8")).get("depth")
    if made_at is not None and made_at != depth:
        notes.append(
            f"it was calibrated on top-{made_at} lists: its guarantee and its saving are for "
            f"that depth, not for the top {depth} reranked here (--depth {made_at} to match)"
        )
    with tempfile.TemporaryDirectory(prefix="elasticir-quickstart-") as folder:
        # DiPair reads passage tokens from a cache: built here for the candidates only.
        passages = load_passages(dataset.corpus, wanted)
        subset = write_corpus(
            [passages[d] for d in sorted(passages)], Path(folder) / "candidates.jsonl"
        )
        say(f"DiPair token cache for {len(passages)} candidate passages")
        dipair.build_cache(subset, Path(folder) / "tokens", progress=False)
        systems = [
            ("DiPair", "dipair", first >> DiPairScorer(dipair, Path(folder) / "tokens")),
            ("ElasticRanker full", "full", first >> RankerScorer(ranker)),
            (
                f"ElasticRanker {POLICY} policy",
                policy,
                first >> RankerScorer(ranker, level, policy),
            ),
        ]
        full_rate = None
        for name, compute, pipeline in systems:
            say(f"reranking with {name}")
            pipeline(sample[:1])  # warm-up
            result = pipeline(sample)
            stage = [s for s in result.seconds if s not in ("dense",)][-1]
            pairs = len(sample) * depth
            rate = pairs / result.seconds[stage]
            if name == "ElasticRanker full":
                full_rate = rate
            path = runs_root / f"{dataset.name}-{name.lower().replace(' ', '-')}.trec"
            write_run(path, result.run, tag=name.replace(" ", "-"), k=depth)
            runs[name] = path
            rows.append(
                QuickstartRow(
                    name, compute, len(sample), judge.quality(result.run), pairs_per_s=rate
                )
            )
    for row in rows:
        if row.pairs_per_s is not None and full_rate:
            row.speedup = row.pairs_per_s / full_rate
    return rows, notes


def _plot(result: QuickstartResult, path: Path) -> Path | None:
    """Quality (first measure) against per-query latency: the levels as a line, the
    reranking cascades as points (latency = dense full + reranking the top ``depth``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = next(iter(result.rows[0].quality))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    levels = [r for r in result.rows if r.system.startswith("dense ") and "(" not in r.system]
    ax.plot(
        [r.per_query_ms for r in levels],
        [r.quality[measure] for r in levels],
        "o-",
        label=f"ElasticDenser levels (all {levels[0].queries} queries)",
    )
    for r in levels:
        ax.annotate(r.compute, (r.per_query_ms, r.quality[measure]), fontsize=7)
    cascades = [r for r in result.rows if r.pairs_per_s is not None]
    for r in cascades:
        ax.scatter([r.per_query_ms], [r.quality[measure]], marker="s")
        ax.annotate(r.system, (r.per_query_ms, r.quality[measure]), fontsize=7)
    base = [r for r in result.rows if r.system == "dense full (sample)"]
    if base:
        ax.axhline(base[0].quality[measure], ls=":", c="grey", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("per-query latency, ms (log; measured in this run)")
    ax.set_ylabel(measure)
    ax.set_title(
        f"{result.dataset}: squares rerank {result.rerank_queries} sampled queries "
        f"(dotted: dense on them)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _as_json(result: QuickstartResult) -> dict:
    return {
        "dataset": result.dataset,
        "rerank_queries": result.rerank_queries,
        "depth": result.depth,
        "notes": result.notes,
        "rows": [vars(row) for row in result.rows],
        "runs": {k: str(v) for k, v in result.runs.items()},
    }
