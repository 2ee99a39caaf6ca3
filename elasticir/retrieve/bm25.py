"""BM25 over a Lucene index built and searched by Pyserini / Anserini.

Indexing streams any corpus :func:`~elasticir.data.corpus.iter_corpus` reads (BEIR JSONL,
MS MARCO / DPR TSV, JsonCollection folders) into a temporary Pyserini JsonCollection
(``{"id", "contents"}``, contents = "title text" as Pyserini's DPR indexes join them), then runs
Anserini's ``IndexCollection`` (``JsonCollection`` + ``DefaultLuceneDocumentGenerator``, the
default English analyzer: Porter stemming, Lucene stopwords) in-process through pyjnius, with
the Anserini jar that ships inside Pyserini.

The index is built in a temporary directory beside ``index_dir`` and swapped in only when
complete, so a crash or Ctrl-C never leaves a half-built index where a good one was.

The JVM starts on first use (see :mod:`elasticir.java`); importing this module
does not start it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from elasticir.data.errors import CountedWarning, InputFormatError, MissingResourceError
from elasticir.data.files import atomic_dir, temporary_dir_beside
from elasticir.data.manifest import META_FILE, read_json_object, write_json
from elasticir.data.records import Query, Run
from elasticir.index.output import BM25 as BM25_KIND
from elasticir.index.output import check_index_output
from elasticir.java import anserini_jar, start_jvm
from elasticir.progress import progress_bar

__all__ = ["BM25Searcher", "META_FILE", "bm25_search", "build_bm25_index", "read_bm25_meta"]

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


def build_bm25_index(
    corpus_path: str | os.PathLike[str],
    index_dir: str | os.PathLike[str],
    threads: int = 2,
    progress: bool = True,
    *,
    store_positions: bool = True,
    store_docvectors: bool = True,
    store_raw: bool = False,
    overwrite: bool = False,
) -> Path:
    """Build a BM25 Lucene index of ``corpus_path`` at ``index_dir`` and return its path.

    Positions and document vectors are stored by default (as in Pyserini's prebuilt indexes:
    they enable phrase queries and RM3 / Rocchio feedback); ``store_raw`` also keeps the
    JSON source of each document, which doubles the index and slows search, and is not
    needed to rank. ``index_dir`` gets a ``meta.json`` describing the build. It must be
    absent, an empty directory or, with ``overwrite``, a BM25 index, which is replaced only
    once the new one is complete; anything else (a folder that is not a BM25 index, a file,
    an index without ``overwrite``) raises ``ValueError`` before any work (see
    :func:`elasticir.index.output.check_index_output`).

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
    check_index_output(index_dir, BM25_KIND, overwrite=overwrite)
    start_jvm()
    import jnius

    started = time.monotonic()
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        temporary_dir_beside(index_dir, "collection") as coll,
        atomic_dir(index_dir) as tmp_index,
    ):
        count, empty = _write_json_collection(corpus_path, coll, threads, progress)
        if count == 0:
            raise ValueError(f"{corpus_path}: corpus holds no passages")
        converted = time.monotonic()

        args = jnius.autoclass("io.anserini.index.IndexCollection$Args")()
        args.input = str(coll)
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
        write_json(tmp_index / META_FILE, meta)
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
        meta = read_json_object(meta_path, what="a BM25 index's meta")
        kind = meta.get("kind")
        if kind != INDEX_KIND:
            raise InputFormatError(
                index_dir, None, f"a BM25 Lucene index (meta.json kind {INDEX_KIND!r})", repr(kind)
            )
    if not index_dir.is_dir() or not any(index_dir.glob("segments_*")):
        raise InputFormatError(
            index_dir, None, "a Lucene index directory (with a segments_N file)", "none found"
        )
    return meta


def cut_to_clause_limit(
    text: str, distinct_terms: Callable[[str], int], limit: int
) -> tuple[str, int, int] | None:
    """Cut a query that Lucene would refuse to the longest prefix it accepts.

    Anserini's ``BagOfWordsQueryGenerator`` (what ``SimpleSearcher`` searches with) makes one
    Boolean clause per *distinct* analyzed term, and Lucene refuses a query of more than
    ``IndexSearcher.getMaxClauseCount()`` clauses (``TooManyClauses``, which
    ``batch_search`` reports as "queryCount = N is not equal to completedTaskCount = M").
    Measured with Anserini 1.7.1 (Lucene 9): 1,024 distinct terms search, 1,025 fail.

    ``distinct_terms(text)`` must return the number of distinct terms the searcher's analyzer
    makes of ``text``. Returns ``None`` when ``text`` fits in ``limit`` (then it must be
    searched unchanged), else ``(prefix, terms, kept)``: the longest prefix of its
    whitespace-separated words with at most ``limit`` distinct terms, the distinct terms of
    ``text`` and those of ``prefix``. Should even the first word hold more than ``limit``
    terms (text without spaces: CJK, a long hyphenated chain), that word is cut by characters
    instead. Costs no call at all for a text of at most ``limit`` characters (every term is at
    least one character), one for a longer text that fits, and about ``log2(words) + 1`` for
    one that is cut.
    """
    if len(text) <= limit:
        return None
    terms = distinct_terms(text)
    if terms <= limit:
        return None

    def longest_fitting(units: Sequence[str], join: str) -> tuple[int, int]:
        # Binary search with the invariant "the first `lo` units fit, the first `hi` do not";
        # it needs no monotonicity to end on a prefix that fits, and analysis is monotone here
        # anyway (the tokenizer always splits at whitespace, so a longer prefix of words only
        # adds terms).
        lo, lo_terms, hi = 0, 0, len(units)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            mid_terms = distinct_terms(join.join(units[:mid]))
            if mid_terms <= limit:
                lo, lo_terms = mid, mid_terms
            else:
                hi = mid
        return lo, lo_terms

    words = text.split()
    count, kept = longest_fitting(words, " ")
    if count > 0:
        return " ".join(words[:count]), terms, kept
    # One character makes at most one term, so at least one character of a word always fits.
    count, kept = longest_fitting(words[0], "")
    return words[0][:count], terms, kept


_INDEX_INPUT = re.compile(r'\w*IndexInput\((?:path=)?"?([^()"]*)"?\)')


def _java_error(exc: Exception, directory: Path) -> str:
    """``ClassName: message`` of a pyjnius ``JavaException``, plus its root cause's, short.

    Lucene's resource descriptions (stream wrappers around a path) and ``directory``'s own
    path are left out: the caller names the directory already. E.g. ``CorruptIndexException:
    Unexpected file read error while reading index. (NoSuchFileException: _0.si)``.
    """

    def brief(classname: str, message: str) -> str:
        message = message.split(" (resource", 1)[0].strip()
        # 'MemorySegmentIndexInput(path="/idx/segments_1")' -> '/idx/segments_1', innermost first
        while True:
            shorter = _INDEX_INPUT.sub(r"\1", message)
            if shorter == message:
                break
            message = shorter
        message = message.replace(f"{directory}{os.sep}", "")
        return f"{classname.rsplit('.', 1)[-1]}: {message}"

    text = brief(
        str(getattr(exc, "classname", None) or type(exc).__name__),
        str(getattr(exc, "innermessage", None) or exc),
    )
    # pyjnius flattens the Java stack trace into lines; a line "Caused by:" precedes each
    # cause's "class: message" line. The deepest cause is the one to act on (a missing file).
    lines = list(getattr(exc, "stacktrace", None) or [])
    causes = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.strip() == "Caused by:"]
    if causes and ": " in causes[-1]:
        classname, message = causes[-1].strip().split(": ", 1)
        text += f" ({brief(classname, message)})"
    return text


class BM25Searcher:
    """BM25 search over a Lucene index with Anserini's ``SimpleSearcher``.

    This is the Java object Pyserini's ``LuceneSearcher`` wraps, called the same way
    (``set_bm25``, ``batch_search``), but reached through pyjnius directly: importing
    ``pyserini.search.lucene`` also imports ``pyserini.encode`` (torch, transformers,
    scikit-learn, openai), 7-10 s on first use that BM25 does not need.

    ``k1=0.9, b=0.4`` are Anserini's defaults (tuned on MS MARCO passage). Scores are
    Lucene's BM25 (float32); ties are broken by doc id, as Anserini does, so runs are
    deterministic.

    Opening a directory that holds an unreadable Lucene index (a truncated or overwritten
    ``segments_N``, a missing segment file) raises :class:`InputFormatError` naming it.
    """

    def __init__(self, index_dir: str | os.PathLike[str], k1: float = 0.9, b: float = 0.4):
        self.index_dir = Path(index_dir)
        self.meta = read_bm25_meta(self.index_dir)
        self.k1 = float(k1)
        self.b = float(b)
        start_jvm()
        import jnius

        self._jnius = jnius
        try:
            self._searcher = jnius.autoclass("io.anserini.search.SimpleSearcher")(
                str(self.index_dir)
            )
        except jnius.JavaException as exc:
            # Lucene's own message names a stream wrapper, not the index, and comes with a
            # Java stack trace; the directory and the gist are what the user can act on.
            got = _java_error(exc, self.index_dir)
            raise InputFormatError(self.index_dir, None, "a readable Lucene index", got) from None
        self._searcher.set_bm25(self.k1, self.b)
        # Read once (a static setting) so that queries too short to exceed it need no Java
        # call. Lucene's default is 1,024: a query of 1,024 distinct terms searches, one of
        # 1,025 throws (measured; see cut_to_clause_limit and tests/test_bm25_limits.py).
        self.max_clauses = int(
            jnius.autoclass("org.apache.lucene.search.IndexSearcher").getMaxClauseCount()
        )
        self._term_counter: Callable[[str], int] | None = None

    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def search(
        self, queries: Sequence[Query], k: int = 1000, threads: int = 2, progress: bool = False
    ) -> Run:
        """Top-``k`` documents per query, ``{qid: {doc_id: score}}``.

        Every query appears in the result, with an empty dict when nothing matches (e.g. a
        query of stopwords only). Query ids must be unique, and query texts must not be empty
        or whitespace only (``ValueError`` naming the query). A query with more distinct
        analyzed terms than Lucene's clause limit (:attr:`max_clauses`, 1,024) is searched
        as its longest prefix that fits (see :func:`cut_to_clause_limit`), and one
        :class:`CountedWarning` per call says how many were cut. ``progress`` reports
        progress on stderr when there is more than one batch of ``_SEARCH_BATCH`` queries.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        seen: set[str] = set()
        texts: list[str] = []
        cuts: list[tuple[str, int, int]] = []  # (query id, terms, kept terms)
        for query in queries:
            if query.query_id in seen:
                raise ValueError(f"duplicate query id {query.query_id!r}")
            seen.add(query.query_id)
            if not query.text.strip():
                # Lucene would return nothing for it, yet it would count in every average.
                raise ValueError(f"query {query.query_id!r} has an empty text")
            cut = cut_to_clause_limit(query.text, self._distinct_terms, self.max_clauses)
            if cut is None:
                texts.append(query.text)
            else:
                texts.append(cut[0])
                cuts.append((query.query_id, cut[1], cut[2]))
        if cuts:
            warnings.warn(_cut_message(cuts, self.max_clauses), CountedWarning, stacklevel=2)
        run: Run = {}
        label = "bm25 search"
        with progress_bar(progress and len(queries) > _SEARCH_BATCH, len(queries), label) as step:
            for start in range(0, len(queries), _SEARCH_BATCH):
                batch = queries[start : start + _SEARCH_BATCH]
                java_texts, ids = self._java_list(), self._java_list()
                for query, text in zip(batch, texts[start : start + _SEARCH_BATCH]):
                    java_texts.add(text)
                    ids.add(query.query_id)
                results = self._searcher.batch_search(java_texts, ids, int(k), int(threads))
                for query in batch:
                    hits = results.get(query.query_id)
                    run[query.query_id] = (
                        {hit.docid: float(hit.score) for hit in hits} if hits is not None else {}
                    )
                step(len(batch))
        return run

    def _distinct_terms(self, text: str) -> int:
        """Distinct terms the searcher's analyzer makes of ``text``: the clauses Anserini's
        bag-of-words query of ``text`` has. Only called for texts longer than the limit."""
        if self._term_counter is None:
            analyzer = self._searcher.get_analyzer()
            analyze = self._jnius.autoclass("io.anserini.analysis.AnalyzerUtils").analyze
            hash_set = self._jnius.autoclass("java.util.HashSet")
            # Counted on the Java side: no copy of the term list into Python.
            self._term_counter = lambda t: int(hash_set(analyze(analyzer, t)).size())
        return self._term_counter(text)

    def _java_list(self) -> Any:
        return self._jnius.autoclass("java.util.ArrayList")()

    def close(self) -> None:
        self._searcher.close()

    def __enter__(self) -> BM25Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_message(cuts: Sequence[tuple[str, int, int]], limit: int) -> str:
    """The one warning of a search call: how many queries were cut, with the first as an
    example; ``cuts`` holds ``(query id, distinct terms, distinct terms kept)``."""
    qid, terms, kept = cuts[0]
    many = f"{len(cuts):,} queries" if len(cuts) > 1 else "1 query"
    were = "were" if len(cuts) > 1 else "was"
    their = "their" if len(cuts) > 1 else "its"
    return (
        f"{many} over Lucene's {limit:,}-clause limit {were} cut to {their} first {limit:,} "
        f"distinct terms at most (e.g. {qid}: {terms:,} terms -> first {kept:,})"
    )


def bm25_search(
    index_dir: str | os.PathLike[str],
    queries: Sequence[Query],
    k: int = 1000,
    *,
    k1: float = 0.9,
    b: float = 0.4,
    threads: int = 2,
    progress: bool = False,
) -> Run:
    """One-shot :meth:`BM25Searcher.search` (opens and closes the index)."""
    with BM25Searcher(index_dir, k1=k1, b=b) as searcher:
        return searcher.search(queries, k=k, threads=threads, progress=progress)
