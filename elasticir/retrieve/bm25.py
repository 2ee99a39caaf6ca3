"""BM25 over a Lucene index built and searched by Pyserini / Anserini.

Indexing streams any corpus :func:`~elasticir.data.corpus.iter_corpus` reads (BEIR JSONL,
MS MARCO / DPR TSV, JsonCollection folders) into a temporary Pyserini JsonCollection
(``{"id", "contents"}``, contents = "title text" as Pyserini's DPR indexes join them), then runs
Anserini's ``IndexCollection`` (``JsonCollection`` + ``DefaultLuceneDocumentGenerator``, the
default English analyzer: Porter stemming, Lucene stopwords) in-process through pyjnius, with
the Anserini jar that ships inside Pyserini.

The index is built in a temporary directory beside ``index_dir`` and swapped in only when
complete, so a crash or Ctrl-C never leaves a half-built index where a good one was.

The JVM starts on first use (see :mod:`elasticir.retrieve.java`); importing this module
does not start it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import atomic_dir
from elasticir.data.records import Query, Run
from elasticir.retrieve.java import anserini_jar, start_jvm

__all__ = ["BM25Searcher", "META_FILE", "bm25_search", "build_bm25_index", "read_bm25_meta"]

META_FILE = "meta.json"
INDEX_KIND = "bm25-lucene"
_SEARCH_BATCH = 1000  # queries per Java call: bounds the result maps held on both sides
_FILE_DOCS = 100_000  # passages per JsonCollection file (see _write_json_collection)
_PROGRESS_SECONDS = 30.0


def _elasticir_version() -> str:
    try:
        return metadata.version("elasticir")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _write_json_collection(
    corpus_path: Path, out_dir: Path, threads: int, progress: bool
) -> tuple[int, int]:
    """Write the corpus as JsonCollection files; return (passages, empty passages).

    Anserini gives each file to one thread and counts a file's documents only when the file
    is done, so passages go round-robin into ``threads`` files at a time (all threads busy,
    no corpus count needed up front), and a new set of files starts every
    ``_FILE_DOCS * threads`` passages (progress can be reported on large corpora).
    """
    from elasticir.data.corpus import iter_corpus

    handles: list = []
    count = empty = 0
    started = time.monotonic()
    try:
        for passage in iter_corpus(corpus_path):
            if count % (_FILE_DOCS * threads) == 0:
                for handle in handles:
                    handle.close()
                part = count // (_FILE_DOCS * threads)
                handles = [
                    open(out_dir / f"docs{part:05d}-{slot:02d}.jsonl", "w", encoding="utf-8")
                    for slot in range(threads)
                ]
            contents = passage.encoder_text()
            if not contents.strip():
                empty += 1  # Anserini skips it; counted so the report can say so
            record = {"id": passage.doc_id, "contents": contents}
            handles[count % threads].write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
            if progress and count % 1_000_000 == 0:
                rate = count / max(time.monotonic() - started, 1e-9)
                print(f"bm25: converted {count:,} passages ({rate:,.0f}/s)", file=sys.stderr)
    finally:
        for handle in handles:
            handle.close()
    return count, empty


def _report_progress(counters: Any, total: int, stop: threading.Event) -> None:
    """Print Anserini's indexed-document count to stderr until ``stop`` is set.

    Runs in its own thread: pyjnius releases the GIL during ``IndexCollection.run()``.
    """
    import jnius

    try:
        while not stop.wait(_PROGRESS_SECONDS):
            done = int(counters.indexed.get())
            print(f"bm25: indexed {done:,} / {total:,} passages", file=sys.stderr)
    finally:
        jnius.detach()  # a thread that called into Java must detach before it ends


def _lucene_num_docs(index_dir: Path) -> int:
    import jnius

    file_cls = jnius.autoclass("java.io.File")
    fs_directory = jnius.autoclass("org.apache.lucene.store.FSDirectory")
    directory_reader = jnius.autoclass("org.apache.lucene.index.DirectoryReader")
    directory = fs_directory.open(file_cls(str(index_dir)).toPath())
    try:
        reader = directory_reader.open(directory)
        try:
            return int(reader.numDocs())
        finally:
            reader.close()
    finally:
        directory.close()


def _check_replaceable(index_dir: Path) -> None:
    """Refuse to replace anything at ``index_dir`` but an empty folder or a Lucene index.

    The new index replaces the whole directory, so a mistyped path must not wipe user data.
    """
    if not index_dir.exists():
        return
    if index_dir.is_dir() and not any(index_dir.iterdir()):
        return
    if index_dir.is_dir() and any(index_dir.glob("segments_*")):
        return
    raise FileExistsError(
        f"{index_dir} exists and is not a Lucene index; refusing to replace it with one "
        "(remove it or choose another index path)"
    )


def build_bm25_index(
    corpus_path: str | os.PathLike[str],
    index_dir: str | os.PathLike[str],
    threads: int = 2,
    progress: bool = True,
    *,
    store_positions: bool = True,
    store_docvectors: bool = True,
    store_raw: bool = False,
) -> Path:
    """Build a BM25 Lucene index of ``corpus_path`` at ``index_dir`` and return its path.

    Positions and document vectors are stored by default (as in Pyserini's prebuilt indexes:
    they enable phrase queries and RM3 / Rocchio feedback); ``store_raw`` also keeps the
    JSON source of each document, which doubles the index and slows search, and is not
    needed to rank. ``index_dir`` gets a ``meta.json`` describing the build. An existing
    index at ``index_dir`` is replaced only once the new one is complete; anything else
    there (a non-empty folder that is not a Lucene index, a file) raises ``FileExistsError``.

    Raises ``FileNotFoundError`` / :class:`InputFormatError` for a missing or malformed
    corpus, ``ValueError`` when the corpus holds no indexable passage, and ``ImportError``
    when the ``bm25`` extra is not installed.
    """
    corpus_path = Path(corpus_path)
    index_dir = Path(index_dir)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not corpus_path.exists():
        raise FileNotFoundError(f"corpus not found: {corpus_path}")
    _check_replaceable(index_dir)
    start_jvm()
    import jnius

    started = time.monotonic()
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".tmp-collection-", dir=index_dir.parent) as coll,
        atomic_dir(index_dir) as tmp_index,
    ):
        count, empty = _write_json_collection(corpus_path, Path(coll), threads, progress)
        if count == 0:
            raise ValueError(f"{corpus_path}: corpus holds no passages")
        converted = time.monotonic()

        args = jnius.autoclass("io.anserini.index.IndexCollection$Args")()
        args.input = coll
        args.index = str(tmp_index)
        args.threads = threads
        args.collectionClass = "JsonCollection"
        args.generatorClass = "DefaultLuceneDocumentGenerator"
        args.storePositions = store_positions
        args.storeDocvectors = store_docvectors
        args.storeRaw = store_raw
        # Anserini logs to stdout, which may carry a run or JSON; we report on stderr instead.
        args.quiet = True
        indexer = jnius.autoclass("io.anserini.index.IndexCollection")(args)
        counters = indexer.getCounters()
        stop = threading.Event()
        reporter = threading.Thread(
            target=_report_progress, args=(counters, count, stop), daemon=True
        )
        if progress:
            reporter.start()
        try:
            indexer.run()
        finally:
            stop.set()
            if progress:
                reporter.join()
        errors = int(counters.errors.get()) + int(counters.skipped.get())
        num_docs = _lucene_num_docs(tmp_index)
        if num_docs == 0:
            raise ValueError(f"{corpus_path}: no passage could be indexed ({empty} empty)")
        if errors:
            # Anserini logs per-document failures and carries on; we refuse a partial index.
            raise RuntimeError(
                f"Anserini failed on {errors} document(s) of {corpus_path} "
                f"(indexed {num_docs} of {count}); no index written"
            )
        # The writer is closed; its lock file is only clutter in an index that gets copied.
        (tmp_index / "write.lock").unlink(missing_ok=True)
        meta = {
            "kind": INDEX_KIND,
            "corpus": str(corpus_path.resolve()),
            "num_docs": num_docs,
            "num_passages": count,
            "num_empty": count - num_docs,
            "contents": "title + ' ' + text",
            "analyzer": "Anserini DefaultEnglishAnalyzer (Porter stemmer, Lucene stopwords)",
            "anserini_jar": anserini_jar().name,
            "store_positions": store_positions,
            "store_docvectors": store_docvectors,
            "store_raw": store_raw,
            "elasticir_version": _elasticir_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp_index / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if progress:
        total = time.monotonic() - started
        print(
            f"bm25: indexed {num_docs:,} passages into {index_dir} in {total:.1f}s "
            f"(conversion {converted - started:.1f}s)",
            file=sys.stderr,
        )
    return index_dir


def read_bm25_meta(index_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that ``index_dir`` is a Lucene index and return its ``meta.json`` (or ``{}``).

    Indexes built by Pyserini / Anserini directly (no ``meta.json``) are accepted.
    """
    index_dir = Path(index_dir)
    if not index_dir.exists():
        raise MissingResourceError(
            f"BM25 index not found: {index_dir}; build one with "
            "elasticir.retrieve.bm25.build_bm25_index(corpus, index_dir)"
        )
    meta: dict[str, Any] = {}
    meta_path = index_dir / META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputFormatError(meta_path, exc.lineno, "a JSON object", str(exc)) from None
        kind = meta.get("kind") if isinstance(meta, dict) else None
        if kind != INDEX_KIND:
            raise InputFormatError(
                index_dir, None, f"a BM25 Lucene index (meta.json kind {INDEX_KIND!r})", repr(kind)
            )
    if not index_dir.is_dir() or not any(index_dir.glob("segments_*")):
        raise InputFormatError(
            index_dir, None, "a Lucene index directory (with a segments_N file)", "none found"
        )
    return meta


class BM25Searcher:
    """BM25 search over a Lucene index with Anserini's ``SimpleSearcher``.

    This is the Java object Pyserini's ``LuceneSearcher`` wraps, called the same way
    (``set_bm25``, ``batch_search``), but reached through pyjnius directly: importing
    ``pyserini.search.lucene`` also imports ``pyserini.encode`` (torch, transformers,
    scikit-learn, openai), 7-10 s on first use that BM25 does not need.

    ``k1=0.9, b=0.4`` are Anserini's defaults (tuned on MS MARCO passage). Scores are
    Lucene's BM25 (float32); ties are broken by doc id, as Anserini does, so runs are
    deterministic.
    """

    def __init__(self, index_dir: str | os.PathLike[str], k1: float = 0.9, b: float = 0.4):
        self.index_dir = Path(index_dir)
        self.meta = read_bm25_meta(self.index_dir)
        self.k1 = float(k1)
        self.b = float(b)
        start_jvm()
        import jnius

        self._jnius = jnius
        self._searcher = jnius.autoclass("io.anserini.search.SimpleSearcher")(str(self.index_dir))
        self._searcher.set_bm25(self.k1, self.b)

    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def search(self, queries: Sequence[Query], k: int = 1000, threads: int = 2) -> Run:
        """Top-``k`` documents per query, ``{qid: {doc_id: score}}``.

        Every query appears in the result, with an empty dict when nothing matches (e.g. a
        query of stopwords only). Query ids must be unique.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        seen: set[str] = set()
        for query in queries:
            if query.query_id in seen:
                raise ValueError(f"duplicate query id {query.query_id!r}")
            seen.add(query.query_id)
        run: Run = {}
        for start in range(0, len(queries), _SEARCH_BATCH):
            batch = queries[start : start + _SEARCH_BATCH]
            texts, ids = self._java_list(), self._java_list()
            for query in batch:
                texts.add(query.text)
                ids.add(query.query_id)
            results = self._searcher.batch_search(texts, ids, int(k), int(threads))
            for query in batch:
                hits = results.get(query.query_id)
                run[query.query_id] = (
                    {hit.docid: float(hit.score) for hit in hits} if hits is not None else {}
                )
        return run

    def _java_list(self) -> Any:
        return self._jnius.autoclass("java.util.ArrayList")()

    def close(self) -> None:
        self._searcher.close()

    def __enter__(self) -> BM25Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bm25_search(
    index_dir: str | os.PathLike[str],
    queries: Sequence[Query],
    k: int = 1000,
    *,
    k1: float = 0.9,
    b: float = 0.4,
    threads: int = 2,
) -> Run:
    """One-shot :meth:`BM25Searcher.search` (opens and closes the index)."""
    with BM25Searcher(index_dir, k1=k1, b=b) as searcher:
        return searcher.search(queries, k=k, threads=threads)
