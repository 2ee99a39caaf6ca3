"""DiPair's teacher targets, and the training pairs written out for an external teacher.

The KL term of DiPair's loss distils a teacher over each group. The teacher is, first match
wins: the ``teacher`` passed to :func:`~elasticir.train.dipair.loop.train_dipair` (a callable
``(query, passages) -> scores``, or any object with ``score(query, passages)``, e.g. the
cross-encoder), a ``teacher_scores`` file, or the source file's own teacher scores. Teacher
scores are standardised per group (mean 0, standard deviation 1 over the group's kept passages)
and divided by ``teacher_temperature``: sources with different score scales then teach equally
sharp distributions.

A fingerprinted teacher's scores are cached::

    cache/dipair/teacher/<key>.npy           a fingerprinted teacher's scores (while scoring,
                                             <key>.partial.npy: a killed run resumes from it)

:func:`export_teacher_inputs` writes the training pairs for a teacher run elsewhere; its run
comes back as ``teacher_scores``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.data.errors import InputFormatError
from elasticir.data.files import atomic_file
from elasticir.progress import progress_bar
from elasticir.train.data import is_number, json_lines
from elasticir.train.dipair.config import DiPairTrainConfig
from elasticir.train.dipair.groups import TrainingGroup, kept_members, select_groups
from elasticir.train.keys import digest

__all__ = ["Teacher", "export_teacher_inputs", "teacher_targets"]

Teacher = Callable[[str, list[str]], Sequence[float]]


def teacher_targets(
    config: DiPairTrainConfig,
    groups: list[TrainingGroup],
    kept: list[list[int]],
    queries: list[str],
    passages: list[str],
    teacher: Teacher | Any | None,
    progress: bool,
) -> tuple[list[np.ndarray | None], dict[str, int]]:
    """Per group, teacher logits over its kept passages (standardised, / temperature)."""
    raw: list[np.ndarray | None] = [None] * len(groups)
    origin = ["none"] * len(groups)
    for i, (group, members) in enumerate(zip(groups, kept)):
        if group.scores is not None:
            raw[i] = np.asarray([group.scores[m] for m in members], dtype=np.float64)
            origin[i] = "source"
    if config.teacher_scores is not None:
        table = _read_teacher_file(config.teacher_scores, queries, passages)
        covered = 0
        for i, (group, members) in enumerate(zip(groups, kept)):
            values = [table.get((group.query, group.passages[m])) for m in members]
            if all(v is not None for v in values):
                raw[i] = np.asarray(values, dtype=np.float64)
                origin[i] = "file"
                covered += 1
        if covered == 0:
            raise ValueError(
                f"{config.teacher_scores}: scores none of the training groups (every passage of "
                "a group must be scored); write it for the pairs export_teacher_inputs lists"
            )
    if teacher is not None:
        scored = _call_teacher(config, teacher, groups, kept, progress)
        for i, values in enumerate(scored):
            raw[i] = values
            origin[i] = "teacher"
    logits: list[np.ndarray | None] = []
    for values in raw:
        if values is None:
            logits.append(None)
            continue
        spread = values.std()
        z = (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
        logits.append((z / config.teacher_temperature).astype(np.float32))
    counts = {name: origin.count(name) for name in ("teacher", "file", "source", "none")}
    return logits, counts


def _call_teacher(
    config: DiPairTrainConfig,
    teacher: Teacher | Any,
    groups: list[TrainingGroup],
    kept: list[list[int]],
    progress: bool,
) -> list[np.ndarray]:
    """The teacher's scores of every group's kept passages; cached on disk when the teacher
    has a ``fingerprint`` (a deterministic model), else computed on each run. The labelled
    groups and the unlabelled (anchor) ones are cached apart, so adding anchors to a run reuses
    the labelled groups' scores."""
    out: list[np.ndarray | None] = [None] * len(groups)
    for labelled in (True, False):
        part = [i for i, g in enumerate(groups) if g.labelled == labelled]
        if part:
            scores = _teacher_part(
                config, teacher, [groups[i] for i in part], [kept[i] for i in part], progress
            )
            for i, values in zip(part, scores):
                out[i] = values
    return out  # type: ignore[return-value]


def _teacher_part(
    config: DiPairTrainConfig,
    teacher: Teacher | Any,
    groups: list[TrainingGroup],
    kept: list[list[int]],
    progress: bool,
) -> list[np.ndarray]:
    """One part's teacher scores (see :func:`_call_teacher`). A fingerprinted teacher's scores
    so far are saved every ``_PARTIAL_SECONDS`` (``<key>.partial.npy``), so a killed run
    resumes scoring where it stopped."""
    from elasticir.data.records import Passage

    fingerprint = getattr(teacher, "fingerprint", None)
    sizes = [len(m) for m in kept]
    path = partial = None
    if isinstance(fingerprint, str) and fingerprint:
        hashed = hashlib.sha256()
        for group, members in zip(groups, kept):
            hashed.update(group.query.encode() + b"\0")
            for m in members:
                hashed.update(group.passages[m].encode() + b"\1")
        key = digest({"teacher": fingerprint, "pairs": hashed.hexdigest()})
        path = config.cache_dir() / "dipair" / "teacher" / f"{key}.npy"
        if path.is_file():
            flat = np.load(path)
            if flat.shape == (sum(sizes),):
                return np.split(flat.astype(np.float64), np.cumsum(sizes)[:-1])
        partial = path.with_name(f"{key}.partial.npy")
    out = _partial_scores(partial, sizes)
    saved = time.monotonic()
    with progress_bar(progress, sum(sizes), "teacher scores") as advance:
        advance(sum(sizes[: len(out)]))
        for group, members in zip(groups[len(out) :], kept[len(out) :]):
            texts = [group.passages[m] for m in members]
            if hasattr(teacher, "score"):
                values = teacher.score(
                    group.query, [Passage(f"t{j}", t) for j, t in enumerate(texts)]
                )
            else:
                values = teacher(group.query, texts)
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if values.shape != (len(texts),) or not np.all(np.isfinite(values)):
                raise ValueError(
                    f"the teacher returned {values.shape} scores (finite expected) for "
                    f"{len(texts)} passages"
                )
            out.append(values)
            advance(len(texts))
            if partial is not None and time.monotonic() - saved > _PARTIAL_SECONDS:
                with atomic_file(partial) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, np.concatenate(out))
                saved = time.monotonic()
    if path is not None and partial is not None:
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.concatenate(out))
        partial.unlink(missing_ok=True)
    return out


_PARTIAL_SECONDS = 60.0


def _partial_scores(partial: Path | None, sizes: list[int]) -> list[np.ndarray]:
    """The whole groups' scores a killed run saved in ``partial`` (none when it is absent or
    does not end on a group boundary)."""
    if partial is None or not partial.is_file():
        return []
    flat = np.load(partial).astype(np.float64)
    ends = np.cumsum(sizes)
    done = int(np.searchsorted(ends, len(flat), side="right"))  # whole groups within flat
    if done == 0 or ends[done - 1] != len(flat):
        return []
    return np.split(flat, ends[: done - 1])


def _read_teacher_file(
    path: Path, queries: list[str], passages: list[str]
) -> dict[tuple[str, str], float]:
    """``(query text, passage text) -> score`` from JSON lines or a TREC run over the ids
    :func:`export_teacher_inputs` gives (``q<i>`` queries, ``t<i>`` passages)."""
    table: dict[tuple[str, str], float] = {}
    if path.name.endswith(".jsonl"):
        for lineno, record in json_lines(path):
            query, passage, score = record.get("query"), record.get("passage"), record.get("score")
            if not isinstance(query, str) or not isinstance(passage, str) or not is_number(score):
                raise InputFormatError(path, lineno, '{"query": ..., "passage": ..., "score": n}')
            table[(" ".join(query.split()), passage.strip())] = float(score)  # type: ignore[arg-type]
        return table
    from elasticir.data.trec import read_run

    run = read_run(path)
    for qid, docs in run.items():
        q = _parse_id(qid, "q", len(queries), path)
        for doc, score in docs.items():
            table[(queries[q], passages[_parse_id(doc, "t", len(passages), path)])] = float(score)
    return table


def _parse_id(value: str, prefix: str, size: int, path: Path) -> int:
    number = value[1:] if value.startswith(prefix) else ""
    if not number.isdigit() or int(number) >= size:
        raise InputFormatError(
            path, None, f"ids {prefix}0..{prefix}{size - 1} from export_teacher_inputs", value
        )
    return int(number)


def export_teacher_inputs(
    config: DiPairTrainConfig,
    directory: str | Path,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the training pairs for an external teacher: ``queries.tsv`` (``q<i>``),
    ``corpus.jsonl`` (``t<i>``) and ``candidates.trec``. Rerank the candidates with the
    teacher (e.g. ``elasticir rerank``) and pass the run as ``teacher_scores``."""
    from elasticir.data.datasets import data_root as find_data_root
    from elasticir.data.trec import write_run

    root = Path(config.data_root if config.data_root is not None else find_data_root()).resolve()
    groups, _ = select_groups(config, root, progress)
    queries = list(dict.fromkeys(g.query for g in groups))
    query_row = {text: i for i, text in enumerate(queries)}
    passage_row: dict[str, int] = {}
    run: dict[str, dict[str, float]] = {}
    for number, group in enumerate(groups):
        docs = run.setdefault(f"q{query_row[group.query]}", {})
        for member in kept_members(config, group, number):
            row = passage_row.setdefault(group.passages[member], len(passage_row))
            docs.setdefault(f"t{row}", -float(len(docs)))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "queries": directory / "queries.tsv",
        "corpus": directory / "corpus.jsonl",
        "candidates": directory / "candidates.trec",
    }
    with atomic_file(paths["queries"]) as tmp:
        tmp.write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(queries)), encoding="utf-8")
    with atomic_file(paths["corpus"]) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for i, text in enumerate(passage_row):
            fh.write(json.dumps({"id": f"t{i}", "contents": text}, ensure_ascii=False) + "\n")
    write_run(paths["candidates"], run, tag="dipair-train")
    return paths
