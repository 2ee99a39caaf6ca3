"""Fitting the learned projections of a passage space (``elasticir train projection``).

For each target dimension ``d`` one matrix ``W`` ``(d, D)`` is fitted so that ranking with
``normalize(W q) . normalize(W p)`` keeps the full model's ranking with ``q . p``:

* start from PCA (the top ``d`` eigenvectors of the second-moment matrix of the teacher's
  query and passage vectors), the best linear map for reconstruction;
* then minimise ``KL(teacher || projected)`` of the softmax over ``score / tau``, per query,
  over its own mined top-k pool passages and every other batch query's (in-batch negatives):
  the same listwise objective the elastic query encoder is trained with
  (:func:`elasticir.train.losses.listwise.listwise_kl`).

With ``asymmetric`` queries get a matrix of their own, ``W_q``, fitted jointly with the
passages' ``W`` from the same PCA start, and the score is ``normalize(W_q q) . normalize(W p)``.
It fits the training queries' full ranking better but did not pay on the evaluation sets
(docs/experiments/elastic-denser.md), so the default, and the shipped projections, stay
symmetric: one matrix for both sides.

With ``student_negatives`` each query also meets the passages that the projection being fitted
ranks highest over the whole pool (its own mistakes, re-mined as it learns), which teacher-mined
and in-batch passages rarely include. It kept no more of the full model's top 10 on held-out
training queries (docs/experiments/elastic-denser.md), so it is off by default.

The data are the teacher vectors ``elasticir train denser`` uses (the unlabelled training
queries and the passage pool, see :func:`elasticir.train.denser.prepare_distillation`), read
from the same cache. ``corpora`` adds the passages of corpora (dataset names or corpus files)
to the pool, encoded by the teacher into the cache (resumable), and each query's candidates
are mined again over the union: a projection fitted where the queries meet the passages they
will be searched against. Only passage texts are read, never qrels or the corpora's
queries. One query in twenty is held out: the file records, for PCA and for the fitted
matrix, how many of the full model's top 10 (among the held-out query's candidates) the
projection keeps.

Seeded: the same config gives the same matrices on the same machine and thread count.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.models.projection import write_projections
from elasticir.progress import progress_bar
from elasticir.train.config import TrainConfigFile, check_int
from elasticir.train.core import torch_threads
from elasticir.train.corpora import corpus_file, default_cache, file_sha256, teacher_corpus_store
from elasticir.train.keys import digest
from elasticir.train.losses.listwise import listwise_kl
from elasticir.train.mining import mine_candidates

__all__ = [
    "FittedProjection",
    "FittingData",
    "ProjectionTrainConfig",
    "corpus_file",
    "default_cache",
    "file_sha256",
    "fit_projection",
    "fitting_data",
    "heldout_rows",
    "project_vectors",
    "teacher_corpus_store",
    "top10_kept",
    "train_projection",
]


@dataclass(frozen=True)
class ProjectionTrainConfig(TrainConfigFile):
    """What decides a projections file. ``output`` is the file written; ``base_model`` the
    passage space (None: all-MiniLM-L6-v2); ``cache`` where teacher vectors are kept (shared
    with ``elasticir train denser`` when it points at the same folder)."""

    output: Path
    base_model: str | None = None
    dims: tuple[int, ...] = (256, 128, 64)
    data_root: Path | None = None
    cache: Path | None = None
    seed: int = 13
    steps: int = 1500
    batch_size: int = 256
    lr: float = 2e-3
    temperature: float = 0.05
    candidates: int = 32
    passage_pool_size: int | None = 20000
    max_queries: int | None = None
    corpora: tuple[str, ...] = ()
    asymmetric: bool = False
    student_negatives: int = 0
    remine_every: int = 100
    threads: int | None = None

    def __post_init__(self) -> None:
        self._settle_paths("data_root", "cache")
        object.__setattr__(self, "corpora", tuple(str(c) for c in self.corpora))
        dims = tuple(sorted({int(d) for d in self.dims}, reverse=True))
        if not dims or min(dims) < 1:
            raise ValueError(f"dims must be positive integers, got {self.dims!r}")
        object.__setattr__(self, "dims", dims)
        for name in ("steps", "batch_size", "candidates", "remine_every"):
            check_int(name, getattr(self, name))
        check_int("student_negatives", self.student_negatives, 0)
        if not self.lr > 0 or not self.temperature > 0:
            raise ValueError("lr and temperature must be positive")


@dataclass(frozen=True)
class FittingData:
    """What a projection is fitted on: teacher ``queries`` ``(n, D)``, ``passages`` ``(m, D)``
    (the pool, plus the corpora's), each query's mined pool rows ``candidates`` ``(n, k)``,
    and the distillation data they came from."""

    distillation: Any
    queries: torch.Tensor
    passages: torch.Tensor
    candidates: np.ndarray
    corpora: dict[str, Any] | None


def fitting_data(config: ProjectionTrainConfig, progress: bool = True) -> FittingData:
    """The teacher vectors ``config`` fits on, read from (or computed into) its cache."""
    from elasticir.train.denser import DenserTrainConfig, prepare_distillation

    data = DenserTrainConfig(
        output=config.output.parent,
        base_model=config.base_model,
        data_root=config.data_root,
        seed=config.seed,
        candidates=config.candidates,
        passage_pool_size=config.passage_pool_size,
        max_queries=config.max_queries,
        threads=config.threads,
        device="cpu",
        cache=config.cache if config.cache is not None else default_cache(),
    )
    _corpus_paths(config)  # a wrong name fails now, not after the pool is encoded
    distillation = prepare_distillation(data, progress)
    corpora = _corpus_pool(config, data, distillation, progress)
    passages, candidates = distillation.passages.cpu(), distillation.candidates
    if corpora is not None:
        passages, candidates = corpora["passages"], corpora["candidates"]
    return FittingData(
        distillation, distillation.teacher_queries.cpu(), passages, candidates, corpora
    )


def train_projection(config: ProjectionTrainConfig, progress: bool = True) -> Path:
    """Fit one matrix per ``config.dims`` and write the projections file; returns its path."""
    with torch_threads(config.threads):
        fit_data = fitting_data(config, progress)
        distillation, corpora = fit_data.distillation, fit_data.corpora
        queries, passages = fit_data.queries, fit_data.passages
        for dim in config.dims:
            if dim > passages.shape[1]:
                raise ValueError(f"cannot project {passages.shape[1]}-d vectors up to {dim} dims")
        started = time.perf_counter()
        matrices, query_matrices, report = {}, {}, {}
        for dim in config.dims:
            fitted, info = fit_projection(
                queries,
                passages,
                fit_data.candidates,
                dim,
                steps=config.steps,
                batch_size=config.batch_size,
                lr=config.lr,
                temperature=config.temperature,
                seed=config.seed,
                normalize=distillation.settings.normalize,
                asymmetric=config.asymmetric,
                student_negatives=config.student_negatives,
                remine_every=config.remine_every,
                progress=progress,
            )
            matrices[dim] = fitted.passage
            if fitted.query is not None:
                query_matrices[dim] = fitted.query
            report[str(dim)] = info
    training = {
        "method": "PCA init + listwise KL to the full-dimension scores"
        + (", query and passage matrices" if config.asymmetric else ", one matrix")
        + (
            f", {config.student_negatives} student-mined negatives per query"
            if config.student_negatives
            else ""
        ),
        "config": config.to_dict(),
        "data": {
            **distillation.data,
            **({} if corpora is None else {"corpora": corpora["counts"]}),
        },
        "fits": report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return write_projections(
        config.output,
        matrices,
        space_fingerprint=distillation.teacher_fingerprint,
        normalize=distillation.settings.normalize,
        training=training,
        query_matrices=query_matrices,
    )


def _corpus_paths(config: ProjectionTrainConfig) -> list[tuple[str, Path]]:
    """Each of ``config.corpora`` with its corpus file."""
    return [(name, corpus_file(name, config.data_root)) for name in config.corpora]


def _corpus_pool(config, data, distillation, progress: bool) -> dict[str, Any] | None:
    """The pool with ``config.corpora``'s passages added and every query's candidates mined
    again over it; None when there are no corpora."""
    if not config.corpora:
        return None
    from elasticir.index.store import EmbeddingStore
    from elasticir.models.denser import ElasticDenser

    teacher = ElasticDenser(config.base_model, batch_size=32)
    if teacher.fingerprint != distillation.teacher_fingerprint:
        raise ValueError("the corpora's encoder is not the teacher of the pool")
    cache = data.cache_dir()
    parts, counts, keys = [distillation.passages.cpu().numpy()], {}, []
    for name, path in _corpus_paths(config):
        key, store = teacher_corpus_store(teacher, path, cache, progress)
        _, vectors = EmbeddingStore(store).load()
        parts.append(np.asarray(vectors, dtype=np.float32))
        counts[name] = len(vectors)
        keys.append(key)
    passages = np.concatenate(parts)
    queries = distillation.teacher_queries.cpu().numpy()
    mined = digest({"pool": distillation.keys, "corpora": keys, "k": data.candidates})
    candidates = mine_candidates(
        queries, passages, data.candidates, cache / "candidates" / f"{mined}.npy", config.threads
    )
    return {"passages": torch.from_numpy(passages), "candidates": candidates, "counts": counts}


def fit_projection(
    queries: torch.Tensor,
    passages: torch.Tensor,
    candidates: np.ndarray,
    dim: int,
    *,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 2e-3,
    temperature: float = 0.05,
    seed: int = 13,
    normalize: bool = True,
    asymmetric: bool = False,
    student_negatives: int = 0,
    remine_every: int = 100,
    holdout: int = 20,
    progress: bool = False,
) -> tuple[FittedProjection, dict[str, Any]]:
    """Fit ``W`` ``(dim, D)`` (and with ``asymmetric`` a query-side ``W_q``) for teacher
    vectors ``queries`` ``(n, D)``, ``passages`` ``(m, D)`` and each query's candidate pool rows
    ``candidates`` ``(n, k)``.

    With ``student_negatives`` each training query's candidates also take the passages that
    the projection being fitted ranks highest over all of ``passages`` (re-mined every
    ``remine_every`` steps): the passages a projected index would wrongly put near the top,
    which the teacher-mined candidates and the in-batch ones rarely contain.

    Every ``holdout``-th query (in a seeded order) is kept out of the fit and used to report
    top-10 agreement with the full scores, for the PCA start and for the result: within the
    query's mined candidates, and over all of ``passages`` (what a projected index searches).
    """
    generator = torch.Generator().manual_seed(seed)
    held = heldout_rows(len(queries), dim, seed, holdout)
    train = np.setdiff1d(np.arange(len(queries)), held)
    if len(train) == 0:
        raise ValueError("too few queries to fit a projection (all would be held out)")
    cand = torch.from_numpy(np.asarray(candidates, dtype=np.int64))

    moments = torch.cat([queries, passages]).double()
    eigvals, eigvecs = torch.linalg.eigh(moments.T @ moments)
    start = eigvecs[:, torch.argsort(eigvals, descending=True)[:dim]].T.float().contiguous()
    weight = torch.nn.Parameter(start.clone())
    query_weight = torch.nn.Parameter(start.clone()) if asymmetric else weight
    optimizer = torch.optim.Adam([weight, query_weight] if asymmetric else [weight], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / max(steps, 1))
    pca = (start, start)  # (query side, passage side), the order every pair below keeps

    project = functools.partial(project_vectors, normalize=normalize)

    def loss_of(
        rows: np.ndarray, w: tuple[torch.Tensor, torch.Tensor], extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        index = torch.from_numpy(rows)
        mined = cand[index] if extra is None else torch.cat([cand[index], extra[index]], dim=1)
        pool = passages[torch.unique(mined)]
        q = queries[index]
        return listwise_kl(project(q, w[0]) @ project(pool, w[1]).T, q @ pool.T, temperature)

    before = _agreement(queries, passages, cand, held, pca, project)
    corpus_before = _corpus_agreement(queries, passages, held, pca, project)
    losses, extra = [], None
    with progress_bar(progress, steps, f"projection to {dim} dims") as advance:
        for step in range(steps):
            if student_negatives and step % remine_every == 0:
                extra = _student_mined(
                    queries, passages, train, (query_weight, weight), project, student_negatives
                )
            picks = torch.randint(len(train), (min(batch_size, len(train)),), generator=generator)
            loss = loss_of(train[picks.numpy()], (query_weight, weight), extra)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            advance(1, status=f"kl {loss.item():.4f}")
    fitted = (query_weight.detach(), weight.detach())
    with torch.no_grad():
        after = _agreement(queries, passages, cand, held, fitted, project)
        corpus_after = _corpus_agreement(queries, passages, held, fitted, project)
        held_kl, pca_kl = (
            float(np.mean([loss_of(held[i : i + 256], w).item() for i in range(0, len(held), 256)]))
            for w in (fitted, pca)
        )
    info = {
        "steps": steps,
        "asymmetric": asymmetric,
        "student_negatives": student_negatives,
        **({"remine_every": remine_every} if student_negatives else {}),
        "train_queries": int(len(train)),
        "heldout_queries": int(len(held)),
        "heldout_top10_kept_pca": round(before, 4),
        "heldout_top10_kept": round(after, 4),
        "heldout_corpus_top10_kept_pca": round(corpus_before, 4),
        "heldout_corpus_top10_kept": round(corpus_after, 4),
        "heldout_kl_pca": round(pca_kl, 4),
        "heldout_kl": round(held_kl, 4),
        "final_train_kl": round(float(np.mean(losses[-50:])), 4) if losses else None,
    }
    return FittedProjection(
        passage=fitted[1].numpy().copy(),
        query=fitted[0].numpy().copy() if asymmetric else None,
    ), info


@dataclass(frozen=True)
class FittedProjection:
    """What :func:`fit_projection` fits: the passage matrix and, when asymmetric, the query's."""

    passage: np.ndarray  # (dim, D)
    query: np.ndarray | None  # (dim, D) or None: the passage matrix projects queries too


def project_vectors(x: torch.Tensor, w: torch.Tensor, normalize: bool) -> torch.Tensor:
    """``x @ w.T``, L2-normalised when ``normalize``: what a projection does to vectors."""
    y = x @ w.T
    return F.normalize(y, dim=-1) if normalize else y


def heldout_rows(n: int, dim: int, seed: int = 13, holdout: int = 20) -> np.ndarray:
    """The sorted rows :func:`fit_projection` keeps out of a ``dim``-d fit of ``n`` queries:
    every ``holdout``-th of a seeded order."""
    order = np.random.default_rng([seed, 211, dim]).permutation(n)
    return np.sort(order[::holdout])


def top10_kept(
    queries: torch.Tensor,
    passages: torch.Tensor,
    small_queries: torch.Tensor,
    small_passages: torch.Tensor,
) -> np.ndarray:
    """Per query, the share of its top 10 by ``queries @ passages.T`` that its top 10 by
    ``small_queries @ small_passages.T`` (the same passages, other vectors) keeps."""
    top = min(10, len(passages))
    kept: list[float] = []
    with torch.no_grad():
        for i in range(0, len(queries), 1024):
            full = (queries[i : i + 1024] @ passages.T).topk(top, dim=-1).indices
            small = (small_queries[i : i + 1024] @ small_passages.T).topk(top, dim=-1).indices
            kept += _shares(full, small)
    return np.array(kept)


def _shares(full: torch.Tensor, small: torch.Tensor) -> list[float]:
    """Per row of two ``(b, k)`` index tensors, the share of ``full``'s indices in ``small``."""
    return [len(set(a) & set(b)) / full.shape[1] for a, b in zip(full.tolist(), small.tolist())]


def _agreement(queries, passages, cand, rows, weights, project) -> float:
    """Mean share of the full scores' top 10 (within each query's candidates) kept."""
    kept = []
    with torch.no_grad():
        for i in range(0, len(rows), 512):
            index = torch.from_numpy(rows[i : i + 512])
            pool = cand[index]  # (b, k)
            q, p = queries[index], passages[pool]  # (b, D), (b, k, D)
            full = torch.einsum("bd,bkd->bk", q, p)
            small = torch.einsum("bd,bkd->bk", project(q, weights[0]), project(p, weights[1]))
            top = min(10, pool.shape[1])
            kept += _shares(full.topk(top).indices, small.topk(top).indices)
    return float(np.mean(kept)) if kept else float("nan")


def _student_mined(queries, passages, rows, weights, project, k: int) -> torch.Tensor:
    """``(len(queries), k)``: for each of ``rows``, the passages the projection ranks highest
    over all of ``passages`` (other rows stay 0; they are never trained on)."""
    k = min(k, len(passages))
    mined = torch.zeros(len(queries), k, dtype=torch.int64)
    with torch.no_grad():
        projected = project(passages, weights[1])
        for i in range(0, len(rows), 1024):
            index = torch.from_numpy(rows[i : i + 1024])
            scores = project(queries[index], weights[0]) @ projected.T
            mined[index] = scores.topk(k, dim=-1).indices
    return mined


def _corpus_agreement(queries, passages, rows, weights, project) -> float:
    """Mean share of the full scores' top 10 over all of ``passages`` that the projection's
    own top 10 over all of them keeps: what a projected index returns."""
    if len(rows) == 0:
        return float("nan")
    with torch.no_grad():
        q = queries[torch.from_numpy(rows)]
        small = (project(q, weights[0]), project(passages, weights[1]))
        return float(np.mean(top10_kept(q, passages, *small)))
