"""The DiPair head and its token cache on the packaged 40-passage sample corpus.

The model is untrained here (a seeded random head over the real all-MiniLM-L6-v2 encoder):
these tests are about shapes, masking, the cache's files and its agreement with on-the-fly
scoring, not about ranking quality (``test_train_dipair.py`` trains one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from elasticir.data import read_topics, sample_dataset
from elasticir.data.corpus import load_passages
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.records import Passage
from elasticir.index.token_cache import MissingTokensError, TokenCache, default_cache_dir
from elasticir.models.denser import ElasticDenser
from elasticir.rerank.dipair import DiPair, DiPairConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHARD = 8  # the 40 sample passages in 5 shards
SHORT = "Paris."  # [CLS] paris . [SEP]: 4 tokens, far fewer than k


@pytest.fixture(scope="module")
def dipair(denser: ElasticDenser) -> DiPair:
    return DiPair.create(encoder=denser, seed=13)


@pytest.fixture(scope="module")
def corpus() -> Path:
    path = sample_dataset().corpus
    assert path is not None
    return path


@pytest.fixture(scope="module")
def passages(corpus: Path) -> dict[str, Passage]:
    return load_passages(corpus)


@pytest.fixture(scope="module")
def cache(dipair: DiPair, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample corpus cached in one uninterrupted run."""
    path = default_cache_dir(tmp_path_factory.mktemp("cache") / "index")
    report = dipair.build_cache(corpus, path, shard_size=SHARD, progress=False)
    assert report.complete and report.encoded == report.num_passages == 40
    return path


def test_default_shape_and_config_checks(dipair: DiPair) -> None:
    config = dipair.config
    assert (config.k, config.query_tokens, config.dim) == (32, 16, 64)
    assert (config.layers, config.heads, config.ffn) == (2, 4, 256)
    assert config.passage_max_length == 256  # resolved from all-MiniLM-L6-v2
    with pytest.raises(ValueError, match="multiple of heads"):
        DiPairConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        DiPairConfig(k=0)
    with pytest.raises(ValueError, match="cannot exceed query_max_length"):
        DiPairConfig(query_tokens=32, query_max_length=16)
    with pytest.raises(ValueError, match="dropout"):
        DiPairConfig(dropout=1.0)


def test_cache_files_and_round_trip(
    cache: Path, dipair: DiPair, passages: dict[str, Passage]
) -> None:
    assert cache.name == "index.dipair"
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["model_fingerprint"] == dipair.fingerprint
    assert (meta["k"], meta["dim"], meta["dtype"]) == (32, 64, "float16")
    assert meta["num_shards"] == 5 and meta["num_passages"] == 40
    assert meta["corpus"] == str(sample_dataset().corpus.resolve())  # type: ignore[union-attr]
    stored = TokenCache(cache)
    assert stored.doc_ids == list(passages) and len(stored) == 40 and "p01" in stored
    ids, (tokens, lengths, vectors) = stored.load()
    assert tokens.shape == (40, 32, 64) and tokens.dtype == np.float16
    assert vectors is None and stored.vector_dim == 0  # not a residual model: no vectors
    expected, expected_lengths, _ = dipair.encode_passages(
        [passages[d].encoder_text() for d in ids]
    )
    np.testing.assert_array_equal(lengths, expected_lengths)
    np.testing.assert_allclose(tokens.astype(np.float32), expected, atol=2e-3, rtol=2e-3)
    # lookup: any order, across shards, repeats allowed
    wanted = [ids[33], ids[2], ids[17], ids[2]]
    got, got_lengths, _ = stored.lookup(wanted)
    np.testing.assert_array_equal(got, tokens[[33, 2, 17, 2]])
    np.testing.assert_array_equal(got_lengths, lengths[[33, 2, 17, 2]])


def test_missing_doc_ids_are_listed(cache: Path, dipair: DiPair) -> None:
    stored = TokenCache(cache)
    with pytest.raises(MissingTokensError, match="2 doc id.*nope, gone") as err:
        stored.lookup(["p01", "nope", "gone", "nope"])
    assert err.value.doc_ids == ["nope", "gone"]
    with pytest.raises(MissingTokensError, match="nope"):
        dipair.score("a query", ["p01", "nope"], cache)
    with pytest.raises(MissingResourceError, match="not a DiPair token cache"):
        TokenCache(cache.parent)


def test_a_killed_build_resumes_to_the_same_arrays(
    cache: Path, dipair: DiPair, corpus: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.dipair"
    shutil.copytree(cache, copy)
    # what a kill during shard 2 leaves: its .ids and .len in place, no .npy, a temporary file
    (copy / "shard-00002.npy").unlink()
    (copy / ".tmp-shard-00002.npy.abc123").write_bytes(b"half a shard")
    (copy / "shard-00004.npy").unlink()
    (copy / "shard-00004.len").unlink()
    with pytest.raises(MissingResourceError, match="2 shard"):
        TokenCache(copy).lookup(["p01"])
    report = dipair.build_cache(corpus, copy, shard_size=SHARD, progress=False)
    assert report.complete and report.encoded == 2 * SHARD
    before, after = TokenCache(cache).load(), TokenCache(copy).load()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1].tokens, after[1].tokens)
    np.testing.assert_array_equal(before[1].lengths, after[1].lengths)
    # a finished cache is not re-encoded
    assert dipair.build_cache(corpus, copy, shard_size=SHARD, progress=False).encoded == 0


def test_other_settings_or_models_are_refused(
    cache: Path, dipair: DiPair, denser: ElasticDenser, corpus: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="made differently.*shard_size"):
        dipair.build_cache(corpus, cache, shard_size=4, progress=False)
    other_seed = DiPair.create(encoder=denser, seed=14)
    with pytest.raises(ValueError, match="made differently.*model_fingerprint"):
        other_seed.build_cache(corpus, cache, shard_size=SHARD, progress=False)
    smaller = DiPair.create(DiPairConfig(k=16, dim=32), encoder=denser)
    with pytest.raises(ValueError, match=r"made differently.*k: cache has 32, asked 16"):
        smaller.build_cache(corpus, cache, shard_size=SHARD, progress=False)
    # a cache is only read by the model that wrote it
    with pytest.raises(ValueError, match="rebuild the cache"):
        other_seed.score("a query", ["p01"], cache)
    # a failed first run leaves no directory behind
    with pytest.raises(FileNotFoundError):
        dipair.build_cache(tmp_path / "absent.jsonl", tmp_path / "new.dipair", progress=False)
    assert not (tmp_path / "new.dipair").exists()


def test_cached_scores_equal_on_the_fly_scores(
    cache: Path, dipair: DiPair, passages: dict[str, Passage]
) -> None:
    queries = read_topics(sample_dataset().queries)[:3]  # type: ignore[arg-type]
    ids = list(passages)
    for query in queries:
        cached = dipair.score(query.text, ids, cache)
        fresh = dipair.score_texts(query.text, [passages[d].encoder_text() for d in ids])
        assert cached.shape == (40,) and cached.dtype == np.float32
        np.testing.assert_allclose(cached, fresh, atol=5e-3)
    # the run-level and Rerank-scorer paths give the same numbers
    run = {q.query_id: {d: 0.0 for d in ids[:10]} for q in queries}
    reranked = dipair.rerank(queries, run, cache, depth=6)
    assert all(len(docs) == 6 for docs in reranked.values())
    first = queries[0]
    direct = dipair.score(first.text, list(reranked[first.query_id]), cache)
    np.testing.assert_allclose(list(reranked[first.query_id].values()), direct, atol=1e-6)
    scorer = dipair.scorer(cache)
    chosen = [passages[d] for d in ids[5:9]]
    np.testing.assert_allclose(
        scorer.score(first.text, chosen), dipair.score(first.text, ids[5:9], cache), atol=1e-6
    )
    on_the_fly = dipair.scorer()
    np.testing.assert_allclose(
        on_the_fly.score(first.text, chosen),
        dipair.score_texts(first.text, [p.encoder_text() for p in chosen]),
        atol=1e-6,
    )


def test_short_texts_are_padded_and_the_padding_is_masked(
    dipair: DiPair, passages: dict[str, Passage]
) -> None:
    long_text = next(iter(passages.values())).encoder_text()
    tokens, lengths, _ = dipair.encode_passages([SHORT, long_text])
    assert tokens.shape == (2, 32, 64) and lengths.tolist() == [4, 32]
    assert not tokens[0, 4:].any() and tokens[0, :4].any()
    q_tokens, q_lengths, _ = dipair.encode_queries(["capital of france"])
    assert q_tokens.shape == (1, 16, 64) and 3 <= q_lengths[0] < 16
    assert not q_tokens[0, q_lengths[0] :].any()
    scores = dipair.score_tokens(q_tokens[0], int(q_lengths[0]), tokens, lengths)
    # garbage in the padded rows (of the passage and of the query) changes nothing
    noisy_p, noisy_q = tokens.copy(), q_tokens[0].copy()
    noisy_p[0, 4:] = 50.0
    noisy_q[q_lengths[0] :] = -50.0
    noisy = dipair.score_tokens(noisy_q, int(q_lengths[0]), noisy_p, lengths)
    np.testing.assert_allclose(noisy, scores, atol=1e-5)
    # ... while the real rows matter, and a pair's score does not depend on its batch
    changed = tokens.copy()
    changed[0, 1] += np.random.default_rng(0).normal(size=64).astype(np.float32)
    assert (
        abs(dipair.score_tokens(q_tokens[0], int(q_lengths[0]), changed, lengths)[0] - scores[0])
        > 1e-4
    )
    alone = dipair.score_texts("capital of france", [SHORT])
    np.testing.assert_allclose(alone, scores[:1], atol=1e-5)
    assert dipair.score_texts("capital of france", []).shape == (0,)
    with pytest.raises(ValueError, match="DiPair head takes"):
        dipair.head(
            torch.zeros(1, 16, 64), torch.tensor([3]), torch.zeros(2, 31, 64), torch.tensor([2, 2])
        )


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_the_inference_head_scores_as_the_transformer_modules(layers: int) -> None:
    """Out of training the head skips padded columns and all but the [SCORE] row of its last
    layer; its scores must equal those of the ``nn.TransformerEncoder`` it is built from."""
    from elasticir.rerank.dipair import DiPairHead

    torch.manual_seed(0)
    # no dropout, so the module path (taken in training mode) is deterministic
    config = DiPairConfig(
        k=8, query_tokens=5, dim=32, layers=layers, heads=4, dropout=0.0, residual=True
    )
    head = DiPairHead(48, config).eval()
    torch.nn.init.normal_(head.score.weight)  # residual heads start at zero: give it a say

    def reference(*args):
        head.train()
        try:
            return head(*args)
        finally:
            head.eval()

    cases = [  # (query rows, query lengths, passage lengths)
        (1, [3], [8, 8, 2, 5]),  # one shared short query, full and short passages
        (1, [5], [4, 2, 1]),  # every passage shorter than k: trailing columns dropped
        (3, [1, 5, 2], [8, 3, 6]),  # a query per row, lengths differing per row
    ]
    for rows, q_lengths, p_lengths in cases:
        batch = len(p_lengths)
        query = torch.randn(rows, 5, 32)
        passages = torch.randn(batch, 8, 32)
        args = (query, torch.tensor(q_lengths), passages, torch.tensor(p_lengths))
        sim = torch.rand(batch)
        with torch.inference_mode():
            fast = head(*args, sim)
        expected = reference(*args, sim).detach()
        torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
        assert fast.std() > 0.1  # the pairs' scores differ: the comparison has teeth


def test_a_saved_model_loads_with_the_same_fingerprint_and_scores(
    dipair: DiPair, cache: Path, tmp_path: Path
) -> None:
    path = dipair.save(tmp_path / "model", training={"note": "untrained"})
    manifest = json.loads((path / "elasticir.json").read_text())
    assert manifest["kind"] == "dipair"
    assert (manifest["k"], manifest["query_tokens"], manifest["dim"]) == (32, 16, 64)
    assert manifest["head"] == {"layers": 2, "heads": 4, "ffn": 256, "dropout": 0.1}
    assert manifest["encoder"] == {
        "model": "all-MiniLM-L6-v2",
        "fingerprint": dipair.encoder.own_fingerprint,
    }
    assert not (path / "encoder").exists()  # the encoder is unchanged: named, not copied
    loaded = DiPair.load(path)
    assert loaded.fingerprint == dipair.fingerprint
    ids = ["p03", "p11", "p40"]
    np.testing.assert_array_equal(
        loaded.score("who wrote hamlet", ids, cache), dipair.score("who wrote hamlet", ids, cache)
    )
    # a manifest naming other encoder weights, or not a DiPair at all, is refused
    manifest["encoder"]["fingerprint"] = "0123456789abcdef"
    (path / "elasticir.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="now has fingerprint"):
        DiPair.load(path)
    (path / "elasticir.json").write_text(json.dumps({"kind": "ranker"}))
    with pytest.raises(InputFormatError, match='"kind": "dipair"'):
        DiPair.load(path)
    with pytest.raises(MissingResourceError, match="not a DiPair model"):
        DiPair.load(tmp_path)


# --------------------------------------------------------------------------- residual models


@pytest.fixture(scope="module")
def residual(denser: ElasticDenser) -> DiPair:
    return DiPair.create(DiPairConfig(residual=True), encoder=denser, seed=13)


def test_an_untrained_residual_model_ranks_as_the_bi_encoder(
    residual: DiPair, denser: ElasticDenser, passages: dict[str, Passage]
) -> None:
    texts = [p.encoder_text() for p in passages.values()]
    query = "who wrote hamlet"
    cosine = denser.encode_passages(texts) @ denser.encode_queries([query])[0]
    scores = residual.score_texts(query, texts)
    # the head's output layer starts at zero: the score is 20 * cos(q, p) and nothing else
    np.testing.assert_allclose(scores, 20.0 * cosine, atol=1e-4)
    assert list(np.argsort(-scores)) == list(np.argsort(-cosine))
    encoded = residual.encode_passages(texts[:3])
    assert encoded.vectors is not None and encoded.vectors.shape == (3, 384)
    with pytest.raises(ValueError, match="needs the pairs' bi-encoder similarity"):
        residual.head(
            torch.zeros(1, 16, 64), torch.tensor([3]), torch.zeros(2, 32, 64), torch.tensor([2, 2])
        )
    with pytest.raises(ValueError, match="scores with the texts' sentence embeddings"):
        residual.score_tokens(encoded.tokens[0][:16], 3, encoded.tokens, encoded.lengths)


def test_a_residual_cache_stores_sentence_vectors_and_scores_as_on_the_fly(
    residual: DiPair,
    dipair: DiPair,
    denser: ElasticDenser,
    corpus: Path,
    passages: dict[str, Passage],
    tmp_path: Path,
) -> None:
    path = tmp_path / "residual.dipair"
    residual.build_cache(corpus, path, shard_size=SHARD, progress=False)
    stored = TokenCache(path)
    assert stored.vector_dim == 384 and len(list(path.glob("shard-*.vec"))) == 5
    ids, (tokens, lengths, vectors) = stored.load()
    assert vectors is not None and vectors.dtype == np.float16 and vectors.shape == (40, 384)
    np.testing.assert_allclose(
        vectors.astype(np.float32),
        denser.encode_passages([passages[d].encoder_text() for d in ids]),
        atol=2e-3,
    )
    wanted = [ids[30], ids[1], ids[30]]
    looked = stored.lookup(wanted)
    assert looked.vectors is not None
    np.testing.assert_array_equal(looked.vectors, vectors[[30, 1, 30]])
    query = "capital of france"
    np.testing.assert_allclose(
        residual.score(query, wanted, path),
        residual.score_texts(query, [passages[d].encoder_text() for d in wanted]),
        atol=0.05,  # float16 rounding of tokens and vectors, times the scale of 20
    )
    # a killed build (one .vec in place, its .npy not yet) resumes to the same vectors
    (path / "shard-00003.npy").unlink()
    assert residual.build_cache(corpus, path, shard_size=SHARD, progress=False).encoded == SHARD
    np.testing.assert_array_equal(TokenCache(path).load()[1].vectors, vectors)
    # a damaged vector shard is named, with what was expected
    broken = tmp_path / "broken.dipair"
    shutil.copytree(path, broken)
    with open(broken / "shard-00001.vec", "wb") as fh:  # a path would get ".npy" appended
        np.save(fh, np.zeros((SHARD, 10), dtype=np.float16))
    with pytest.raises(InputFormatError, match=r"shard-00001\.vec.*float16 of shape \(8, 384\)"):
        TokenCache(broken).lookup(["p01"])
    # a non-residual cache cannot serve a residual model, nor the other way round
    plain = tmp_path / "plain.dipair"
    dipair.build_cache(corpus, plain, shard_size=SHARD, progress=False)
    with pytest.raises(ValueError, match="rebuild the cache with this model"):
        residual.score(query, wanted, plain)
    with pytest.raises(ValueError, match="rebuild the cache with this model"):
        dipair.score(query, wanted, path)


def test_a_saved_residual_model_loads_residual(residual: DiPair, tmp_path: Path) -> None:
    path = residual.save(tmp_path / "residual-model")
    manifest = json.loads((path / "elasticir.json").read_text())
    assert manifest["residual"] is True
    loaded = DiPair.load(path)
    assert loaded.config.residual and loaded.fingerprint == residual.fingerprint
    texts = ["Paris is the capital of France.", "Hamlet is a play."]
    np.testing.assert_array_equal(
        loaded.score_texts("capital of france", texts),
        residual.score_texts("capital of france", texts),
    )
    # a manifest written before residual models existed has no "residual": a plain model
    del manifest["residual"]
    (path / "elasticir.json").write_text(json.dumps(manifest))
    with pytest.raises(InputFormatError, match="weights of this DiPair head"):
        DiPair.load(path)  # the plain head has no residual_scale: the weights do not fit
    with pytest.raises(ValueError, match="residual must be true or false"):
        DiPairConfig(residual="yes")  # type: ignore[arg-type]
