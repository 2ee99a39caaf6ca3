"""The Python API: the same operations as the CLI, on frozen configs and plain values.

    >>> from elasticir import api
    >>> api.build_index(api.IndexConfig(corpus="corpus.jsonl", output="indexes/demo"))
    >>> run = api.search(api.SearchConfig(index="indexes/demo", topics="queries.tsv"))
    >>> api.evaluate_run(run, qrels="qrels.txt")

Every function takes a config (or a few values) and returns values; nothing here prints,
so the CLI and user code share one path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from elasticir.data.corpus import load_passages
from elasticir.data.records import QAPair, Query, Run
from elasticir.data.topics import read_qas, read_queries_any
from elasticir.data.trec import read_qrels, read_run, write_run
from elasticir.index.faiss_index import IndexSpec

if TYPE_CHECKING:
    from elasticir.encoders.denser import ElasticDenser
    from elasticir.train.denser import DenserTrainConfig
    from elasticir.train.projection import ProjectionTrainConfig

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

    def store_dir(self) -> Path:
        return self.store or Path(self.output).with_name(Path(self.output).name + ".embeddings")


@dataclass(frozen=True)
class IndexResult:
    index: Path | None  # None while other --shard parts are still missing
    store: Path | None
    num_passages: int
    encoded: int
    seconds: float


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


def build_index(config: IndexConfig, encoder: ElasticDenser | None = None) -> IndexResult:
    """Encode the corpus (resumable) and build the index; BM25 goes through Lucene."""
    import time

    if config.index_type == BM25:
        from elasticir.retrieve.bm25 import build_bm25_index, read_bm25_meta

        start = time.perf_counter()
        path = build_bm25_index(
            config.corpus, config.output, threads=config.threads, progress=config.progress
        )
        count = int(read_bm25_meta(path).get("num_docs", 0))
        return IndexResult(path, None, count, count, time.perf_counter() - start)

    from elasticir.index.faiss_index import build_index as build_faiss
    from elasticir.index.store import encode_corpus

    spec = IndexSpec(**{**config.spec.__dict__, "kind": config.index_type})
    encoder = encoder or load_encoder(config.model, config.device, config.precision)
    report = encode_corpus(
        config.corpus,
        config.store_dir(),
        encoder,
        level=config.level,
        dim=config.dim,
        shard_size=config.shard_size,
        shard=config.shard,
        batch_size=config.batch_size,
        progress=config.progress,
    )
    index = None
    if report.complete:
        index = build_faiss(config.store_dir(), config.output, spec, progress=config.progress)
    return IndexResult(
        index, config.store_dir(), report.num_passages, report.encoded, report.seconds
    )


RERANKERS = ("elastic", "dipair", "biencoder")


@dataclass(frozen=True)
class RerankStageSpec:
    """One reranking stage of a cascade: ``KIND[:MODEL][%K]`` on the command line."""

    kind: str  # elastic | dipair | biencoder
    model: str | None = None  # default: the kind's default model
    k: int | None = None  # keep the top k for the next stage; None: keep all

    def __str__(self) -> str:
        text = self.kind + (f":{self.model}" if self.model else "")
        return text + (f"%{self.k}" if self.k else "")


def parse_rerank_stage(spec: str) -> RerankStageSpec:
    """``"dipair:models/dipair%100"`` -> ``RerankStageSpec("dipair", "models/dipair", 100)``."""
    text, k = spec.strip(), None
    if "%" in text:
        text, _, cut = text.rpartition("%")
        if not cut.isdigit() or int(cut) < 1:
            raise ValueError(f"rerank stage {spec!r}: expected %K with K a positive integer")
        k = int(cut)
    kind, _, model = text.partition(":")
    if kind not in RERANKERS:
        raise ValueError(
            f"rerank stage {spec!r}: unknown kind {kind!r}; expected one of {', '.join(RERANKERS)}"
        )
    return RerankStageSpec(kind, model or None, k)


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


@dataclass(frozen=True)
class RerankResult:
    run: Run
    reports: dict  # stage name -> what happened (pairs scored, skips; the ranker's speedup)


def rerank(config: RerankConfig) -> RerankResult:
    """Rerank ``config.run`` with each stage in turn (see :mod:`elasticir.rerank.pipeline`)."""
    from elasticir.rerank.factory import make_scorer
    from elasticir.rerank.pipeline import PassageLookup, Rerank, RunFile, top_k

    if not config.stages:
        raise ValueError("rerank needs at least one stage")
    from elasticir.encoders.denser import PRECISIONS

    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")
    queries = load_queries(config.topics)
    candidates = {qid: top_k(docs, config.depth) for qid, docs in read_run(config.run).items()}
    first = RunFile(candidates, on_missing=config.on_missing)
    first.source = str(config.run)
    passages = PassageLookup(config.corpus)
    pipeline = first
    costed = []  # stages whose scorer counts its FLOPs (the elastic ranker)
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
        if "full_flops" in (getattr(scorer, "stats", None) or {}):
            costed.append((repr(stage), scorer))
    run = pipeline.run(queries)
    reports = {name: dict(c) for name, c in pipeline.reports().items() if c}
    for name, scorer in costed:
        stats = scorer.stats
        if stats["pairs"]:  # what early exit or a cutoff saved, from the FLOPs spent
            reports.setdefault(name, {})["FLOPs speedup vs the full ranker"] = (
                f"{stats['speedup']:.2f}x (mean exit layer {stats['mean_exit_layer']:.2f})"
            )
    return RerankResult(run, reports)


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
    from elasticir.encoders.denser import ElasticDenser

    return ElasticDenser(model, device=device, precision=precision)


def index_kind(index_dir: Path) -> str:
    """``"bm25"`` or ``"dense"``, from the index directory's meta.json."""
    from elasticir.data.errors import MissingResourceError

    meta_path = Path(index_dir) / "meta.json"
    if not meta_path.is_file():
        raise MissingResourceError(
            f"{index_dir}: not an index directory (no meta.json); build one with `elasticir index`"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return BM25 if str(meta.get("kind", "")).startswith("bm25") else "dense"


def search(config: SearchConfig, encoder: ElasticDenser | None = None) -> Run:
    """Search every topic; writes a TREC run when ``config.output`` is set."""
    queries = load_queries(config.topics)
    if index_kind(config.index) == BM25:
        from elasticir.retrieve.bm25 import bm25_search

        run = bm25_search(config.index, queries, k=config.k, threads=config.threads)
    else:
        from elasticir.retrieve.dense import DenseSearcher

        if encoder is None and config.model is not None:
            encoder = load_encoder(config.model)
        searcher = DenseSearcher(config.index, encoder)
        run = searcher.search(queries, k=config.k, level=config.level, batch_size=config.batch_size)
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
    """
    from elasticir.eval.measures import DEFAULT_MEASURES, evaluate
    from elasticir.eval.qa import answer_accuracy, passage_texts

    if qrels is None and qas is None:
        raise ValueError("evaluate needs qrels, a qas file, or both")
    if isinstance(run, (str, Path)):
        run = read_run(run)
    results: dict[str, float] = {}
    if qrels is not None:
        results.update(evaluate(run, read_qrels(qrels), measures or DEFAULT_MEASURES))
    if qas is not None:
        if corpus is None:
            raise ValueError("answer accuracy needs the corpus the run retrieved from")
        pairs: list[QAPair] = read_qas(qas)
        wanted = {doc for scores in run.values() for doc in scores}
        texts = passage_texts(load_passages(corpus, wanted).values())
        missing = wanted - texts.keys()
        if missing:
            raise ValueError(
                f"{len(missing)} doc id(s) in the run are not in {corpus} "
                f"(e.g. {sorted(missing)[:3]}): evaluate against the corpus the run searched"
            )
        topic_list = load_queries(topics) if topics is not None else None
        results.update(answer_accuracy(run, pairs, texts, ks=ks, topics=topic_list))
    return results


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
    if method == "rrf":
        return reciprocal_rank_fusion(loaded, k=rrf_k, depth=k)
    if method == "interpolate":
        if len(loaded) != 2:
            raise ValueError(f"interpolation fuses exactly two runs, got {len(loaded)}")
        return interpolate(loaded[0], loaded[1], alpha=alpha, normalization=normalization, depth=k)
    raise ValueError(f"fusion method must be 'rrf' or 'interpolate', got {method!r}")
