"""Named datasets: benchmark names resolved to files in a local data folder.

The data folder (``data_root()``) is laid out as the project's shared data: one folder per
benchmark (``msmarco-dl19/``, ``nq-open/``, ...) plus ``topics/``. Users who have the full
DPR test sets put them in ``dpr-nq-test/`` and ``dpr-trivia-test/`` there. Online sources
through ``ir_datasets`` are a separate, opt-in path (``pip install 'elasticir[hub]'``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticir.data.errors import MissingResourceError
from elasticir.data.records import Passage, QAPair, Query

__all__ = [
    "Dataset",
    "data_root",
    "get_dataset",
    "iter_remote_corpus",
    "list_datasets",
    "read_remote_qas",
    "read_remote_queries",
    "remote_source",
    "sample_dataset",
]

_PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_DIR = _PACKAGE_DIR / "sample"
_HUB_EXTRA = "pip install 'elasticir[hub]'"


@dataclass(frozen=True)
class Dataset:
    """Where a benchmark's files are, and how it is usually evaluated.

    Paths are ``None`` for parts the dataset does not have (the DPR dev sets have no corpus).
    ``measures`` are ir_measures names for qrels-based evaluation; qas-only datasets have
    none and are scored by DPR top-k answer accuracy instead.
    """

    name: str
    corpus: Path | None
    queries: Path | None
    qrels: Path | None
    qas: Path | None
    runs: dict[str, Path] = field(default_factory=dict, hash=False)
    measures: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class _Layout:
    """Files of a dataset, relative to ``root/folder``; ``optional`` ones may be absent."""

    folder: str
    corpus: str | None = None
    queries: str | None = None
    qrels: str | None = None
    qas: str | None = None
    runs: dict[str, str] = field(default_factory=dict)
    measures: tuple[str, ...] = ()
    description: str = ""
    optional: tuple[str, ...] = ()
    shipped: bool = True  # part of the shared data folder; else the user supplies it


_DL_MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "AP(rel=2)")

_LAYOUTS: dict[str, _Layout] = {
    "msmarco-dl19": _Layout(
        folder="msmarco-dl19",
        corpus="corpus.jsonl",
        queries="queries.tsv",
        qrels="qrels.txt",
        runs={"bm25": "runs/bm25-top100.trec"},
        measures=_DL_MEASURES,
        description="TREC DL 2019 passage: 43 judged queries, graded qrels, 20,152 passages "
        "(all judged plus top-100s of six retrievers).",
    ),
    "msmarco-dl21": _Layout(
        folder="msmarco-dl21",
        corpus="corpus.jsonl",
        queries="queries.tsv",
        qrels="qrels.txt",
        runs={"bm25": "runs/bm25-top100.trec", "spladepp": "runs/spladepp-top100.trec"},
        measures=("nDCG@10", "RR(rel=2)@10"),
        description="TREC DL 2021 passage (MS MARCO v2): 53 judged queries, a reranking pool "
        "of 10,553 passages (top-100s of three retrievers; 4,812 judged passages have text).",
    ),
    "nq-open": _Layout(
        folder="nq-open",
        corpus="corpus.jsonl",
        queries="queries.tsv",
        qrels="qrels.txt",
        qas="qas.tsv",
        measures=("RR@10", "R@20", "R@100"),
        description="Natural Questions open, 2,000 DPR test questions with answers and their "
        "2,600 gold Wikipedia passages.",
    ),
    "msmarco-dev-subset": _Layout(
        folder="topics",
        queries="topics.msmarco-passage.dev-subset.txt",
        qrels="qrels.msmarco-passage.dev-subset.txt",
        measures=("RR@10", "R@1000"),
        description="MS MARCO passage dev (small): 6,980 queries and qrels, no corpus.",
    ),
    "dpr-nq-dev": _Layout(
        folder="topics",
        qas="topics.dpr.nq.dev.txt",
        description="DPR Natural Questions dev: 8,757 questions with answers, no corpus.",
    ),
    "dpr-trivia-dev": _Layout(
        folder="topics",
        qas="topics.dpr.trivia.dev.txt",
        description="DPR TriviaQA dev: 8,837 questions with answers, no corpus.",
    ),
    "dpr-nq-test": _Layout(
        folder="dpr-nq-test",
        qas="qas.tsv",
        corpus="corpus.jsonl",
        optional=("corpus",),
        shipped=False,
        description="DPR Natural Questions test (3,610 questions; DPR's nq-test.qa.csv).",
    ),
    "dpr-trivia-test": _Layout(
        folder="dpr-trivia-test",
        qas="qas.tsv",
        corpus="corpus.jsonl",
        optional=("corpus",),
        shipped=False,
        description="DPR TriviaQA test (11,313 questions; DPR's trivia-test.qa.csv).",
    ),
}

# ir_datasets ids for the online path. Their corpora are the full collections (8.8M MS MARCO
# passages, 21M DPR Wikipedia passages), not the local subsets.
_REMOTE: dict[str, str] = {
    "msmarco-dl19": "msmarco-passage/trec-dl-2019/judged",
    "msmarco-dev-subset": "msmarco-passage/dev/small",
    "nq-open": "dpr-w100/natural-questions/test",
    "dpr-nq-test": "dpr-w100/natural-questions/test",
    "dpr-nq-dev": "dpr-w100/natural-questions/dev",
    "dpr-trivia-test": "dpr-w100/trivia-qa/test",
    "dpr-trivia-dev": "dpr-w100/trivia-qa/dev",
}


def data_root() -> Path:
    """The local data folder: ``$ELASTICIR_DATA``, else ``../shared/data`` beside the project.

    Looks at ``$ELASTICIR_DATA`` (which must exist when set), then ``./../shared/data`` from
    the working directory, then ``../shared/data`` next to the repository this package lives
    in. Raises :class:`MissingResourceError` when none exists.
    """
    env = os.environ.get("ELASTICIR_DATA")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise MissingResourceError(
                f"ELASTICIR_DATA={env} is not a directory; point it at the data folder "
                "(the one holding msmarco-dl19/, nq-open/, topics/ ...)"
            )
        return root
    candidates = [
        Path.cwd() / ".." / "shared" / "data",
        _PACKAGE_DIR.parent.parent / ".." / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    looked = ", ".join(str(c.resolve()) for c in candidates)
    raise MissingResourceError(
        f"no data folder found (looked in {looked}); set ELASTICIR_DATA=/path/to/data "
        "or pass --data-dir"
    )


def list_datasets() -> list[str]:
    """Names :func:`get_dataset` knows, sorted."""
    return sorted([*_LAYOUTS, "sample"])


def get_dataset(name: str, root: str | os.PathLike[str] | None = None) -> Dataset:
    """Resolve a dataset name to its local files under ``root`` (default :func:`data_root`).

    Raises ``ValueError`` for an unknown name and :class:`MissingResourceError` when the
    dataset's folder or one of its required files is missing.
    """
    if name == "sample":
        return sample_dataset()
    layout = _LAYOUTS.get(name)
    if layout is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    base = (Path(root) if root is not None else data_root()) / layout.folder
    if not layout.shipped and not (base / (layout.qas or "")).is_file():
        raise MissingResourceError(
            f"dataset {name!r} is not in the data folder: put its questions at "
            f"{base / (layout.qas or '')} (DPR format, question<TAB>['answer', ...]; "
            f"optionally the passages as {base / (layout.corpus or '')} in Pyserini JSONL), "
            f"or read it online with read_remote_queries({name!r}) / "
            f"iter_remote_corpus({name!r}) ({_HUB_EXTRA})"
        )
    if not base.is_dir():
        raise MissingResourceError(
            f"dataset {name!r} not found: {base} does not exist; set ELASTICIR_DATA or pass "
            f"--data-dir to the folder that holds {layout.folder}/"
        )

    def resolve(part: str, relative: str | None) -> Path | None:
        if relative is None:
            return None
        path = base / relative
        if path.is_file():
            return path
        if part in layout.optional:
            return None
        raise MissingResourceError(f"dataset {name!r} is incomplete: {path} is missing")

    runs = {key: resolve("runs", rel) for key, rel in layout.runs.items()}
    return Dataset(
        name=name,
        corpus=resolve("corpus", layout.corpus),
        queries=resolve("queries", layout.queries),
        qrels=resolve("qrels", layout.qrels),
        qas=resolve("qas", layout.qas),
        runs={key: path for key, path in runs.items() if path is not None},
        measures=layout.measures,
        description=layout.description,
    )


def sample_dataset() -> Dataset:
    """A tiny dataset shipped in the package (40 passages, 10 queries) for demos and tests."""
    return Dataset(
        name="sample",
        corpus=SAMPLE_DIR / "corpus.jsonl",
        queries=SAMPLE_DIR / "queries.tsv",
        qrels=SAMPLE_DIR / "qrels.txt",
        qas=SAMPLE_DIR / "qas.tsv",
        runs={},
        measures=("nDCG@10", "RR@10", "R@10"),
        description="40 short passages on 10 topics (several look alike) and 10 questions.",
    )


# --- online sources (ir_datasets, optional) ----------------------------------------------


def remote_source(name: str) -> str:
    """The ``ir_datasets`` id that serves dataset ``name`` online."""
    try:
        return _REMOTE[name]
    except KeyError:
        known = ", ".join(sorted(_REMOTE))
        raise ValueError(f"no online source for {name!r}; known: {known}") from None


def _load_remote(name: str) -> Any:
    source = remote_source(name)
    try:
        import ir_datasets  # heavy and optional: imported only on this path
    except ImportError as err:
        raise ImportError(
            f"reading {name!r} online ({source}) needs ir_datasets: {_HUB_EXTRA}"
        ) from err
    return ir_datasets.load(source)


def iter_remote_corpus(name: str) -> Iterator[Passage]:
    """Stream the online corpus of ``name`` (downloads on first use; may be very large)."""
    dataset = _load_remote(name)  # fail now, not on the first next()
    if not dataset.has_docs():
        raise ValueError(f"{remote_source(name)} has no documents")

    def passages() -> Iterator[Passage]:
        for doc in dataset.docs_iter():
            yield Passage(str(doc.doc_id), doc.text, getattr(doc, "title", "") or "")

    return passages()


def read_remote_queries(name: str) -> list[Query]:
    """The online queries of ``name``."""
    dataset = _load_remote(name)
    return [Query(str(q.query_id), q.text) for q in dataset.queries_iter()]


def read_remote_qas(name: str) -> list[QAPair]:
    """The online questions of a DPR dataset with their answers."""
    dataset = _load_remote(name)
    pairs = []
    for q in dataset.queries_iter():
        answers = getattr(q, "answers", None)
        if answers is None:
            raise ValueError(f"{remote_source(name)} queries carry no answers")
        pairs.append(QAPair(str(q.query_id), q.text, tuple(answers)))
    return pairs
