"""The Python API: the same operations as the CLI, on frozen configs and plain values.

    >>> from elasticir import api
    >>> api.build_index(api.IndexConfig(corpus="corpus.jsonl", output="indexes/demo"))
    >>> run = api.search(api.SearchConfig(index="indexes/demo", topics="queries.tsv"))
    >>> api.evaluate_run(run, qrels="qrels.txt")

Every function takes a config (or a few values) and returns values; nothing here prints,
so the CLI and user code share one path.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from elasticir.data.corpus import CorpusDigest, digest_corpus, load_passages
from elasticir.data.errors import CountedWarning, InputFormatError, MissingResourceError
from elasticir.data.files import check_writable
from elasticir.data.manifest import META_FILE, read_json_object
from elasticir.data.records import QAPair, Query, Run
from elasticir.data.topics import read_qas, read_queries_any
from elasticir.data.trec import check_run_output, read_qrels, read_run, write_run
from elasticir.index.faiss_index import INDEX_TYPES, IndexSpec
from elasticir.index.output import check_index_output, what_is_at
from elasticir.progress import progress_bar
from elasticir.rerank.factory import RERANKERS, RerankStageSpec, parse_rerank_stage

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser
    from elasticir.train.denser import DenserTrainConfig
    from elasticir.train.projection import ProjectionTrainConfig

__all__ = [
    "BM25",
    "PRECISIONS",
    "RERANKERS",
    "IndexConfig",
    "IndexResult",
    "RerankConfig",
    "RerankResult",
    "RerankStageSpec",
    "Run",
    "SearchConfig",
    "build_index",
    "check_token",
    "evaluate_run",
    "fuse_runs",
    "index_kind",
    "load_encoder",
    "load_queries",
    "parse_rerank_stage",
    "rerank",
    "search",
    "train_denser",
    "train_projection",
    "write_run",
]

BM25 = "bm25"


@dataclass(frozen=True)
class IndexConfig:
    """What ``elasticir index`` builds: a dense FAISS index (via an embedding store) or BM25."""

    corpus: Path
    output: Path
    index_type: str = "flat"  # flat | hnsw | ivfpq | bm25
    spec: IndexSpec = field(default_factory=IndexSpec)
    model: str | None = None
    level: str = "full"  # below full: the cheap-indexing mode, recorded in the index meta
    dim: int | None = None  # a learned projection's dimension; None: the encoder's own
    store: Path | None = None  # default: <output>.embeddings beside the index
    shard: tuple[int, int] = (0, 1)
    shard_size: int = 4096
    batch_size: int = 16
    precision: str = "fp32"
    device: str | None = None
    threads: int = 2
    progress: bool = True
    overwrite: bool = False  # replace an index of the same kind at ``output`` (atomically)

    def __post_init__(self) -> None:
        if self.index_type not in (*INDEX_TYPES, BM25):
            raise ValueError(
                f"index type must be one of {', '.join((*INDEX_TYPES, BM25))}, "
                f"got {self.index_type!r}"
            )
        index, count = self.shard
        if not 0 <= index < count:
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
        for name in ("shard_size", "batch_size", "threads"):
            _require_positive(name, getattr(self, name))
        if self.dim is not None:
            _require_positive("dim", self.dim)
        _require_precision(self.precision)
        from elasticir.compute.levels import Level

        Level(self.level)  # raises ValueError on a malformed level

    def store_dir(self) -> Path:
        return self.store or Path(self.output).with_name(Path(self.output).name + ".embeddings")


@dataclass(frozen=True)
class IndexResult:
    index: Path | None  # None while other --shard parts are still missing
    store: Path | None
    num_passages: int
    encoded: int
    seconds: float
    notes: tuple[str, ...] = ()  # what the user should hear of: shards encoded again, and why


@dataclass(frozen=True)
class SearchConfig:
    index: Path
    topics: Path
    output: Path | None = None  # TREC run to write
    k: int = 1000
    level: str = "full"
    model: str | None = None  # default: the model named in the index meta
    batch_size: int = 64
    tag: str = "elasticir"
    threads: int = 2
    progress: bool = False  # a progress bar on stderr while queries are encoded / searched

    def __post_init__(self) -> None:
        for name in ("k", "batch_size", "threads"):
            _require_positive(name, getattr(self, name))
        check_token("run tag", self.tag)
        from elasticir.compute.levels import Level

        Level(self.level)


def _require_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_token(what: str, value: str) -> None:
    """A TREC run field (tag, ids) holds no whitespace: refuse one before any work."""
    if not isinstance(value, str) or not value or re.search(r"\s", value):
        raise ValueError(f"{what} must be non-empty and free of whitespace, got {value!r}")


PRECISIONS = ("fp32", "bf16")


def _require_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def build_index(config: IndexConfig, encoder: ElasticDenser | None = None) -> IndexResult:
    """Encode the corpus (resumable) and build the index; BM25 goes through Lucene.

    Everything that can be checked is checked before the model loads or anything is
    encoded: the output (see :func:`~elasticir.index.output.check_index_output`: an existing
    path must be an index of the same kind, replaced only with ``overwrite``), the whole
    corpus (a bad line anywhere, or no passage at all), and whether the index type can be
    built over it.
    """
    import time

    if not Path(config.corpus).exists():
        raise MissingResourceError(f"{config.corpus}: not found (the corpus)")
    kind = BM25 if config.index_type == BM25 else "dense"
    check_index_output(config.output, kind, overwrite=config.overwrite)
    if config.index_type == BM25:
        from elasticir.retrieve.bm25 import build_bm25_index, read_bm25_meta

        start = time.perf_counter()
        path = build_bm25_index(
            config.corpus,
            config.output,
            threads=config.threads,
            progress=config.progress,
            overwrite=config.overwrite,
        )
        count = int(read_bm25_meta(path).get("num_docs", 0))
        return IndexResult(path, None, count, count, time.perf_counter() - start)

    from elasticir.index.faiss_index import build_index as build_faiss
    from elasticir.index.store import EmbeddingStore, encode_corpus

    spec = IndexSpec(**{**config.spec.__dict__, "kind": config.index_type})
    store_dir = config.store_dir()
    EmbeddingStore.check_usable(store_dir)
    check_writable(store_dir, "embedding store", directory=True)
    digest = _digest(config.corpus, config.shard_size, config.progress)
    spec.check_feasible(digest.num_passages, config.dim or _hidden_size(config.model))
    encoder = encoder or load_encoder(config.model, config.device, config.precision)
    spec.check_feasible(digest.num_passages, config.dim or encoder.dim)
    report = encode_corpus(
        config.corpus,
        store_dir,
        encoder,
        level=config.level,
        dim=config.dim,
        shard_size=config.shard_size,
        shard=config.shard,
        batch_size=config.batch_size,
        progress=config.progress,
        digest=digest,
    )
    index = None
    if report.complete:
        # The output was checked above; an index that appeared since is a sibling --shard
        # process's build of the same store, which this one may replace.
        index = build_faiss(
            store_dir,
            config.output,
            spec,
            progress=config.progress,
            overwrite=True,
            content=digest.sha256,
        )
    return IndexResult(
        index, store_dir, report.num_passages, report.encoded, report.seconds, report.notes
    )


def _digest(corpus: Path, shard_size: int, progress: bool) -> CorpusDigest:
    """Read and check the whole corpus once (see :func:`~elasticir.data.corpus.digest_corpus`)."""
    with progress_bar(progress, None, f"checking {Path(corpus).name}") as advance:
        digest = digest_corpus(corpus, shard_size, advance)
    if digest.num_passages == 0:
        raise ValueError(f"{corpus}: the corpus holds no passages; nothing to index")
    return digest


def _hidden_size(model: str | None) -> int | None:
    """The encoder's output dimension from its config.json, without loading it (None when
    that cannot be told cheaply)."""
    import json

    from elasticir.models.loading import resolve_model_path

    path = Path(resolve_model_path(model)) / "config.json"
    try:
        size = json.loads(path.read_text(encoding="utf-8")).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) else None


@dataclass(frozen=True)
class RerankConfig:
    """What ``elasticir rerank`` does: rerank a run's candidates with a cascade of stages."""

    run: Path
    topics: Path
    corpus: Path
    stages: tuple[RerankStageSpec, ...] = (RerankStageSpec("elastic"),)
    level: str = "full"
    policy: str | None = None
    depth: int = 1000
    on_missing: str = "error"
    batch_size: int = 32
    token_cache: Path | None = None  # DiPair passage tokens (built from corpus when absent)
    progress: bool = True
    precision: str = "fp32"  # elastic and bi-encoder stages: fp32, or bf16 autocast

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("rerank needs at least one stage")
        _require_positive("depth", self.depth)
        _require_positive("batch_size", self.batch_size)
        if self.on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        _require_precision(self.precision)
        from elasticir.compute.levels import Level

        Level(self.level)


@dataclass(frozen=True)
class RerankResult:
    run: Run
    reports: dict  # stage name -> what happened (pairs scored, skips; the ranker's speedup)


def rerank(config: RerankConfig) -> RerankResult:
    """Rerank ``config.run`` with each stage in turn (see :mod:`elasticir.pipeline`)."""
    from elasticir.pipeline import PassageLookup, Rerank, RunFile, top_k
    from elasticir.rerank.factory import make_scorer
    from elasticir.rerank.ranker import cost_summary

    for path, what in ((config.run, "run"), (config.topics, "topics"), (config.corpus, "corpus")):
        if not Path(path).exists():
            raise MissingResourceError(f"{path}: not found (the {what})")
    queries = load_queries(config.topics)
    candidates = {qid: top_k(docs, config.depth) for qid, docs in read_run(config.run).items()}
    if not candidates:
        raise ValueError(f"{config.run}: the run holds no rankings; nothing to rerank")
    first = RunFile(candidates, on_missing=config.on_missing)
    first.source = str(config.run)
    passages = PassageLookup(config.corpus)
    pipeline = first
    for spec in config.stages:
        scorer = make_scorer(
            spec,
            level=config.level,
            policy=config.policy,
            batch=config.batch_size,
            corpus=config.corpus,
            token_cache=config.token_cache,
            progress=config.progress,
            precision=config.precision,
        )
        stage = Rerank(
            scorer,
            passages,
            on_missing=config.on_missing,
            progress=config.progress,
            name=str(spec),
        )
        pipeline = pipeline >> (stage % spec.k if spec.k else stage)
    result = pipeline(queries)
    reports: dict[str, dict] = {}
    for name, counts in result.reports.items():
        counts = dict(counts)
        costs = {
            key: counts.pop(key) for key in ("flops", "full_flops", "exit_layers") if key in counts
        }
        if costs and counts.get("pairs scored"):  # what early exit or a cutoff saved
            summary = cost_summary({**counts, **costs})
            counts["FLOPs speedup vs the full ranker"] = (
                f"{summary['speedup']:.2f}x (mean exit layer {summary['mean_exit_layer']:.2f})"
            )
        if counts:
            reports[name] = counts
    return RerankResult(result.run, reports)


def train_denser(config: DenserTrainConfig, progress: bool = True) -> Path:
    """Train an elastic query encoder into the base model's passage space; returns its directory.

    See :mod:`elasticir.train.denser`: resumable (rerun the same config after a kill), and a
    no-op when the output already holds the finished model.
    """
    from elasticir.train.denser import train_denser as train

    return train(config, progress=progress)


def train_projection(config: ProjectionTrainConfig, progress: bool = True) -> Path:
    """Fit learned projections of a passage space; returns the projections file.

    See :mod:`elasticir.train.projection`: PCA start, then listwise distillation of the full
    dimension's scores. An index built with ``IndexConfig(dim=...)`` stores projected vectors.
    """
    from elasticir.train.projection import train_projection as train

    return train(config, progress=progress)


def load_encoder(
    model: str | None = None, device: str | None = None, precision: str = "fp32"
) -> ElasticDenser:
    from elasticir.models.denser import ElasticDenser

    return ElasticDenser(model, device=device, precision=precision)


def index_kind(index_dir: Path) -> str:
    """``"bm25"`` or ``"dense"``, from the index directory's meta.json."""
    found = what_is_at(index_dir)
    if found == "absent":
        raise MissingResourceError(
            f"{index_dir}: not an index directory (nothing is there); build one with "
            "`elasticir index`"
        )
    if found not in (BM25, "dense"):
        meta = Path(index_dir) / META_FILE
        if meta.is_file():  # there, but unreadable or not ours: say which, naming the file
            read_json_object(meta, what="an elasticir index manifest")
            raise InputFormatError(
                meta,
                None,
                'an elasticir index manifest ("format": "elasticir-faiss" or '
                '"kind": "bm25-lucene")',
                "a JSON object without either",
            )
        raise MissingResourceError(
            f"{index_dir}: not an index directory (no elasticir meta.json); build one with "
            "`elasticir index`"
        )
    return found


def search(config: SearchConfig, encoder: ElasticDenser | None = None) -> Run:
    """Search every topic; writes a TREC run when ``config.output`` is set.

    The index, the topics (every query must have text) and the output are checked before
    any model loads.
    """
    kind = index_kind(config.index)
    queries = load_queries(config.topics)
    if config.output is not None:
        check_run_output(config.output)
    if kind == BM25:
        from elasticir.retrieve.bm25 import bm25_search

        run = bm25_search(
            config.index,
            queries,
            k=config.k,
            threads=config.threads,
            progress=config.progress,
        )
    else:
        from elasticir.retrieve.dense import DenseSearcher

        if encoder is None and config.model is not None:
            encoder = load_encoder(config.model)
        searcher = DenseSearcher(config.index, encoder)
        run = searcher.search(
            queries,
            k=config.k,
            level=config.level,
            batch_size=config.batch_size,
            progress=config.progress,
        )
    if config.output is not None:
        write_run(config.output, run, tag=config.tag, k=config.k)
    return run


def load_queries(path: Path) -> list[Query]:
    """Topics from a ``qid<TAB>text`` file or a DPR qas file (ids are line numbers)."""
    return read_queries_any(path)


def evaluate_run(
    run: Run | Path,
    *,
    qrels: Path | None = None,
    measures: tuple[str, ...] | None = None,
    qas: Path | None = None,
    corpus: Path | None = None,
    topics: Path | None = None,
    ks: tuple[int, ...] = (1, 5, 20, 100),
) -> dict[str, float]:
    """ir_measures on qrels, and/or DPR top-k answer accuracy on a qas file.

    Answer accuracy needs the ``corpus`` (for passage text); ``topics`` maps run query ids
    to questions when they are not the qas line numbers.

    A run that matches none of the judged queries (or questions) raises ``ValueError``: its
    scores would be all zeros. A partial match is legitimate (a run over part of the topics)
    but changes what the numbers mean, so it emits one :class:`CountedWarning` per side,
    counting the judged queries without a ranking (they score 0) and the ranked queries
    without judgements (not scored).
    """
    from elasticir.eval.measures import DEFAULT_MEASURES, evaluate
    from elasticir.eval.qa import answer_accuracy, passage_texts, run_ids_for

    if qrels is None and qas is None:
        raise ValueError("evaluate needs qrels, a qas file, or both")
    for path, what in ((qrels, "qrels"), (qas, "qas file"), (corpus, "corpus"), (topics, "topics")):
        if path is not None and not Path(path).exists():
            raise MissingResourceError(f"{path}: not found (the {what})")
    name = str(run) if isinstance(run, (str, Path)) else "the run"
    if isinstance(run, (str, Path)):
        run = read_run(run)
    if not any(run.values()):
        raise ValueError(f"{name} holds no rankings; nothing to evaluate")
    results: dict[str, float] = {}
    ranked = {qid for qid, docs in run.items() if docs}
    if qrels is not None:
        judged = read_qrels(qrels)
        _check_coverage(
            name, ranked, set(judged), len(ranked & set(judged)), len(judged),
            f"the judged queries of {qrels}", "count as 0",
        )  # fmt: skip
        results.update(evaluate(run, judged, measures or DEFAULT_MEASURES))
    if qas is not None:
        if corpus is None:
            raise ValueError("answer accuracy needs the corpus the run retrieved from")
        pairs: list[QAPair] = read_qas(qas)
        topic_list = load_queries(topics) if topics is not None else None
        pair_ids = run_ids_for(pairs, run, topic_list)
        how = "" if topics is not None else " (by line number; --topics matches ids by text)"
        _check_coverage(
            name, ranked, set(pair_ids), sum(1 for r in pair_ids if r in ranked), len(pairs),
            f"the questions of {qas}{how}", "count as misses",
        )  # fmt: skip
        wanted = {doc for scores in run.values() for doc in scores}
        texts = passage_texts(load_passages(corpus, wanted).values())
        missing = wanted - texts.keys()
        if missing:
            raise ValueError(
                f"{len(missing)} doc id(s) in the run are not in {corpus} "
                f"(e.g. {sorted(missing)[:3]}): evaluate against the corpus the run searched"
            )
        results.update(answer_accuracy(run, pairs, texts, ks=ks, topics=topic_list))
    return results


def _check_coverage(
    name: str,
    ranked: set[str],
    matched_ids: set[str],
    found: int,
    total: int,
    against: str,
    missing_means: str,
) -> None:
    """Refuse a run that matches none of the ``total`` judged queries; warn, counted, of a
    partial match. ``found`` of them have a ranking; ``matched_ids`` are their run ids."""
    if found == 0:
        raise ValueError(
            f"no query of {name} (ids such as {', '.join(sorted(ranked)[:3])}) is among "
            f"{against}: every score would be 0; evaluate the run against the judgements of "
            "the topics it was made from"
        )
    if found < total:
        absent = sorted(matched_ids - ranked - {""})[:3]
        example = f" (e.g. {', '.join(absent)})" if absent else ""
        warnings.warn(
            f"{total - found} of {total} of {against} have no ranking in {name}; they "
            f"{missing_means}{example}",
            CountedWarning,
            stacklevel=3,
        )
    extra = sorted(ranked - matched_ids)
    if extra:
        warnings.warn(
            f"{len(extra)} of the {len(ranked)} ranked queries of {name} are not among "
            f"{against} and are not scored (e.g. {', '.join(extra[:3])})",
            CountedWarning,
            stacklevel=3,
        )


def fuse_runs(
    runs: list[Run | Path],
    method: str = "rrf",
    *,
    k: int = 1000,
    rrf_k: int = 60,
    alpha: float = 0.5,
    normalization: str = "minmax",
) -> Run:
    """Fuse runs: reciprocal rank fusion (any number) or score interpolation (two runs)."""
    from elasticir.retrieve.fusion import interpolate, reciprocal_rank_fusion

    loaded = [read_run(r) if isinstance(r, (str, Path)) else r for r in runs]
    for source, run in zip(runs, loaded):
        if not any(run.values()):
            name = source if isinstance(source, (str, Path)) else "a run"
            raise ValueError(f"{name} holds no rankings; nothing to fuse")
    if method == "rrf":
        return reciprocal_rank_fusion(loaded, k=rrf_k, depth=k)
    if method == "interpolate":
        if len(loaded) != 2:
            raise ValueError(f"interpolation fuses exactly two runs, got {len(loaded)}")
        return interpolate(loaded[0], loaded[1], alpha=alpha, normalization=normalization, depth=k)
    raise ValueError(f"fusion method must be 'rrf' or 'interpolate', got {method!r}")
