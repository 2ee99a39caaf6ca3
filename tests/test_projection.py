"""Learned projections: the file format, fitting, and indexes that store projected vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from elasticir.cli.app import app
from typer.testing import CliRunner

from elasticir import api
from elasticir.data import load_passages, read_topics, sample_dataset
from elasticir.data.errors import InputFormatError
from elasticir.index.store import EmbeddingStore
from elasticir.models.denser import ElasticDenser
from elasticir.models.projection import (
    PROJECTIONS_FILE,
    Projection,
    read_projections,
    shipped_projections_path,
    write_projections,
)
from elasticir.retrieve.dense import DenseSearcher, EncoderMismatchError
from elasticir.train.projection import ProjectionTrainConfig, fit_projection


def test_projection_applies_normalises_and_fingerprints() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((8, 32)).astype(np.float32)
    projection = Projection(matrix, normalize=True)
    vectors = rng.standard_normal((5, 32)).astype(np.float32)
    out = projection.apply(vectors, side="passage")
    assert out.shape == (5, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    expected = vectors @ matrix.T
    np.testing.assert_allclose(
        out, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )
    assert Projection(matrix.copy(), True).fingerprint == projection.fingerprint
    assert Projection(matrix, False).fingerprint != projection.fingerprint
    with pytest.raises(ValueError, match=r"takes \(n, 32\)"):
        projection.apply(vectors[:, :16], side="query")
    with pytest.raises(ValueError, match="dim <= in_dim"):
        Projection(matrix.T, True)
    with pytest.raises(ValueError, match="side is"):
        projection.apply(vectors, side="document")
    assert not projection.matrix.flags.writeable  # shared by threads
    np.testing.assert_array_equal(projection.apply(vectors, side="query"), out)  # symmetric
    # asymmetric: queries through their own matrix, passages through the other
    query_matrix = rng.standard_normal((8, 32)).astype(np.float32)
    both = Projection(matrix, True, query_matrix=query_matrix)
    assert both.asymmetric and not projection.asymmetric
    np.testing.assert_array_equal(both.apply(vectors, side="passage"), out)
    expected = vectors @ query_matrix.T
    np.testing.assert_allclose(
        both.apply(vectors, side="query"),
        expected / np.linalg.norm(expected, axis=1, keepdims=True),
        rtol=1e-5,
        atol=1e-6,
    )
    assert both.fingerprint != projection.fingerprint
    assert both.describe()["asymmetric"] is True and "asymmetric" not in projection.describe()
    with pytest.raises(ValueError, match="same shape"):
        Projection(matrix, True, query_matrix=query_matrix[:4])


def test_projections_file_round_trips_and_names_its_space(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    matrices = {4: rng.standard_normal((4, 12)), 8: rng.standard_normal((8, 12))}
    path = write_projections(
        tmp_path / "p.safetensors",
        matrices,
        space_fingerprint="abc",
        normalize=True,
        training={"x": 1},
    )
    read = read_projections(path, "abc")
    assert list(read) == [8, 4]  # largest first
    np.testing.assert_array_equal(read[4].matrix, matrices[4].astype(np.float32))
    assert read[4].query_matrix is None
    with pytest.raises(ValueError, match="fitted to the passage space abc"):
        read_projections(path, "other")
    queries = {8: rng.standard_normal((8, 12))}
    both = read_projections(
        write_projections(
            tmp_path / "q.safetensors",
            matrices,
            space_fingerprint="abc",
            normalize=True,
            training={},
            query_matrices=queries,
        )
    )
    assert both[8].asymmetric and not both[4].asymmetric
    np.testing.assert_array_equal(both[8].query_matrix, queries[8].astype(np.float32))
    np.testing.assert_array_equal(both[8].matrix, read[8].matrix)
    with pytest.raises(ValueError, match="needs the passage matrix"):
        write_projections(
            tmp_path / "x.safetensors",
            {4: matrices[4]},
            space_fingerprint="abc",
            normalize=True,
            training={},
            query_matrices=queries,
        )
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(InputFormatError, match="broken.safetensors"):
        read_projections(broken)


SMALL_FIT = {"steps": 300, "batch_size": 64, "lr": 1e-2}  # the synthetic tests' fit settings


def _ranking_off_the_main_directions(dim_in: int, n_q: int, n_p: int):
    """Unit ``(queries, passages, candidates)`` whose ranking lives in directions PCA does not
    favour: large-variance nuisance directions 0..7, small-variance directions 8..11 that
    rank; each query's 16 best passages as its candidates."""
    generator = torch.Generator().manual_seed(0)
    scale = torch.ones(dim_in) * 0.05
    scale[:8] = 1.0
    scale[8:12] = 0.6
    passages = torch.nn.functional.normalize(
        torch.randn(n_p, dim_in, generator=generator) * scale, dim=-1
    )
    queries = torch.zeros(n_q, dim_in)
    queries[:, 8:12] = torch.randn(n_q, 4, generator=generator)
    queries = torch.nn.functional.normalize(
        queries + 0.01 * torch.randn(n_q, dim_in, generator=generator), dim=-1
    )
    return queries, passages, (queries @ passages.T).topk(16).indices.numpy()


def test_fitting_keeps_the_ranking_better_than_pca() -> None:
    """Vectors whose ranking lives in directions PCA does not favour: the fit must find them."""
    dim_in = 24
    queries, passages, candidates = _ranking_off_the_main_directions(dim_in, 600, 800)
    fits = {}
    for asymmetric in (False, True):
        fitted, info = fit_projection(
            queries, passages, candidates, 8, asymmetric=asymmetric, **SMALL_FIT
        )
        print(info)
        assert info["heldout_kl"] < info["heldout_kl_pca"]
        assert info["heldout_top10_kept"] > info["heldout_top10_kept_pca"]
        assert fitted.passage.shape == (8, dim_in) and (fitted.query is not None) == asymmetric
        fits[asymmetric] = info
    assert not np.allclose(fitted.query, fitted.passage)  # the query side went its own way
    # its own query matrix can only help here: queries live in other directions than passages
    assert fits[True]["heldout_kl"] < fits[False]["heldout_kl"]


def test_student_mined_negatives_keep_more_of_the_corpus_top_10() -> None:
    """Teacher-mined candidates never show the fit the passages its projection wrongly puts on
    top over the whole corpus; re-mining them from the projection being fitted does."""
    queries, passages, candidates = _ranking_off_the_main_directions(32, 800, 3000)
    fits = {}
    for negatives in (0, 16):
        _, fits[negatives] = fit_projection(
            queries,
            passages,
            candidates,
            8,
            student_negatives=negatives,
            remine_every=50,
            **SMALL_FIT,
        )
    assert fits[16]["student_negatives"] == 16 and fits[16]["remine_every"] == 50
    assert "remine_every" not in fits[0]
    for info in fits.values():  # both beat PCA on the whole corpus ...
        assert info["heldout_corpus_top10_kept"] > info["heldout_corpus_top10_kept_pca"] + 0.1
    # ... and mining the fit's own mistakes keeps clearly more of the corpus-wide top 10
    assert fits[16]["heldout_corpus_top10_kept"] > fits[0]["heldout_corpus_top10_kept"] + 0.04, fits
    # no steps: the PCA start itself, reported as such
    _, pca = fit_projection(queries, passages, candidates, 8, steps=0)
    assert pca["heldout_corpus_top10_kept"] == pca["heldout_corpus_top10_kept_pca"]
    assert pca["final_train_kl"] is None
    with pytest.raises(ValueError, match="student_negatives must be a non-negative integer"):
        ProjectionTrainConfig(output=Path("x.safetensors"), student_negatives=-1)


def test_student_mining_and_corpus_agreement_on_real_vectors(denser: ElasticDenser) -> None:
    """On the sample set's real query and passage vectors and the shipped 128-d matrix: the
    student-mined negatives are exactly each trained query's projected top k (untrained rows
    stay 0), and top-10 agreement is 1 for the full vectors themselves and a brute-force
    overlap for the projected ones."""
    from functools import partial

    from elasticir.train.projection import _student_mined, project_vectors, top10_kept

    sample = sample_dataset()
    queries = torch.from_numpy(denser.encode_queries([q.text for q in read_topics(sample.queries)]))
    texts = [p.encoder_text() for p in load_passages(sample.corpus).values()]
    passages = torch.from_numpy(denser.encode_passages(texts))
    matrix = torch.from_numpy(denser.projection(128).matrix.copy())
    project = partial(project_vectors, normalize=True)
    rows = np.arange(0, len(queries), 2)  # every other query is "trained"
    k = 3
    mined = _student_mined(queries, passages, rows, (matrix, matrix), project, k)
    small_q, small_p = project(queries, matrix), project(passages, matrix)
    scores = (small_q @ small_p.T).numpy()
    for row in range(len(queries)):
        if row in rows:
            expected = np.argsort(-scores[row], kind="stable")[:k]
            assert set(mined[row].tolist()) == set(expected.tolist())
        else:
            assert mined[row].tolist() == [0] * k
    # more negatives than passages: capped, not a shape error
    assert _student_mined(queries, passages, rows, (matrix, matrix), project, 10**6).shape == (
        len(queries),
        len(passages),
    )
    assert np.all(top10_kept(queries, passages, queries, passages) == 1.0)
    kept = top10_kept(queries, passages, small_q, small_p)
    full = (queries @ passages.T).numpy()
    top = min(10, len(passages))
    for row, share in enumerate(kept):
        a = set(np.argsort(-full[row], kind="stable")[:top].tolist())
        b = set(np.argsort(-scores[row], kind="stable")[:top].tolist())
        assert share == pytest.approx(len(a & b) / top)
    assert 0.0 < kept.mean() < 1.0  # 128 of 384 dims: close, not the same ranking


def test_default_model_ships_projections(denser: ElasticDenser) -> None:
    assert shipped_projections_path(denser.fingerprint).is_file()
    assert denser.dims == (384, 256, 128, 64)
    texts = ["who wrote the origin of species", "Charles Darwin published it in 1859."]
    for dim in (256, 128, 64):
        queries = denser.encode_queries(texts, dim=dim)
        passages = denser.encode_passages(texts, dim=dim)
        assert queries.shape == passages.shape == (2, dim)
        np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
        # a projection of the full vectors, not another encoder
        projection = denser.projection(dim)
        np.testing.assert_allclose(
            queries, projection.apply(denser.encode_queries(texts), side="query"), atol=1e-6
        )
        np.testing.assert_allclose(
            passages,
            projection.apply(denser.encode_passages(texts), side="passage"),
            atol=1e-6,
        )
    assert denser.projection(None) is None and denser.projection(384) is None
    with pytest.raises(ValueError, match=r"no 100-d projection \(dims: 384, 256, 128, 64\)"):
        denser.encode_queries(texts, dim=100)


def test_projected_index_shrinks_and_is_searched_with_projected_queries(
    denser: ElasticDenser, tmp_path: Path
) -> None:
    sample = sample_dataset()
    queries = read_topics(sample.queries)
    runs, sizes = {}, {}
    for dim in (None, 128):
        out = tmp_path / f"index-{dim}"
        api.build_index(
            api.IndexConfig(sample.corpus, out, dim=dim, progress=False), encoder=denser
        )
        meta = json.loads((out / "meta.json").read_text())
        sizes[dim] = meta["bytes_per_passage"]
        store = json.loads((tmp_path / f"index-{dim}.embeddings" / "meta.json").read_text())
        assert meta["dim"] == store["dim"] == (dim or 384)
        if dim:
            assert (
                meta["encoder"]["projection"]["fingerprint"] == denser.projection(128).fingerprint
            )
        searcher = DenseSearcher(out, denser)
        assert searcher.dim == (dim or 384)
        runs[dim] = searcher.search(queries, k=3)
    # 384 -> 128 dims: a third of the bytes, in the embedding cache and in the index
    cached = {d: EmbeddingStore(tmp_path / f"index-{d}.embeddings").load()[1].nbytes for d in runs}
    assert cached[128] * 3 == cached[None]
    assert sizes[128] == pytest.approx(sizes[None] / 3, abs=2)  # a small fixed header
    top1 = [max(runs[d][q.query_id], key=runs[d][q.query_id].get) for d in runs for q in queries]
    agree = np.mean(np.array(top1[: len(queries)]) == np.array(top1[len(queries) :]))
    assert agree >= 0.8  # the projection keeps (most of) the ranking


def test_index_refuses_a_query_encoder_with_other_projections(
    denser: ElasticDenser, tmp_path: Path
) -> None:
    sample = sample_dataset()
    out = tmp_path / "index-128"
    api.build_index(api.IndexConfig(sample.corpus, out, dim=128, progress=False), encoder=denser)
    # a copy of the model (same passage space) with projections of its own in its folder
    copy = tmp_path / "model"
    shutil.copytree(denser.model_path, copy)
    rng = np.random.default_rng(2)
    write_projections(
        copy / PROJECTIONS_FILE,
        {128: rng.standard_normal((128, 384))},
        space_fingerprint=denser.fingerprint,
        normalize=True,
        training={},
    )
    other = ElasticDenser(copy)
    assert other.fingerprint == denser.fingerprint and other.dims == (384, 128)
    with pytest.raises(EncoderMismatchError, match="projection"):
        DenseSearcher(out, other)
    no_such_dim = tmp_path / "index-256"
    api.build_index(
        api.IndexConfig(sample.corpus, no_such_dim, dim=256, progress=False), encoder=denser
    )
    with pytest.raises(EncoderMismatchError, match="256 dims"):
        DenseSearcher(no_such_dim, other)


def test_cli_index_dim_and_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sample = sample_dataset()
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(sample.corpus), "--dim", "64", "-q"])
    assert result.exit_code == 0, result.output
    index = Path("indexes") / "corpus-flat-d64"
    assert json.loads((index / "meta.json").read_text())["dim"] == 64
    result = runner.invoke(
        app, ["search", "-i", str(index), "--topics", str(sample.queries), "-k", "5"]
    )
    assert result.exit_code == 0, result.output
    lines = Path(result.output.split("run: ")[1].split(" (")[0]).read_text().splitlines()
    assert len(lines) == 5 * len(read_topics(sample.queries))
    bad = runner.invoke(app, ["index", str(sample.corpus), "--dim", "100", "-o", "x", "-q"])
    assert bad.exit_code == 2 and "no 100-d projection" in bad.output
    assert not Path("x.embeddings").exists()  # nothing half-made


def test_corpora_join_the_pool_and_candidates_are_mined_over_the_union(
    tmp_path: Path, denser: ElasticDenser
) -> None:
    """``train projection --corpus``: the corpus passages, encoded by the teacher, are added
    to the pool, and every query's candidates are its exact top-k over pool + corpus."""
    from types import SimpleNamespace

    from elasticir.train.denser import DenserTrainConfig
    from elasticir.train.projection import ProjectionTrainConfig, _corpus_pool

    rng = np.random.default_rng(5)
    pool = rng.standard_normal((30, denser.dim)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = denser.encode_queries([q.text for q in read_topics(sample_dataset().queries)])
    distillation = SimpleNamespace(  # the teacher side prepare_distillation would give
        passages=torch.from_numpy(pool),
        teacher_queries=torch.from_numpy(queries),
        teacher_fingerprint=denser.fingerprint,
        keys={"passages": "p", "queries": "q", "candidates": "c"},
    )
    config = ProjectionTrainConfig(output=tmp_path / "p.safetensors", corpora=["sample"])
    assert config.corpora == ("sample",)
    data = DenserTrainConfig(output=tmp_path, cache=tmp_path / "cache", candidates=8)
    out = _corpus_pool(config, data, distillation, progress=False)
    texts = [p.encoder_text() for p in load_passages(sample_dataset().corpus).values()]
    assert out["counts"] == {"sample": len(texts)}
    passages = out["passages"].numpy()
    assert passages.shape == (30 + len(texts), denser.dim)
    np.testing.assert_array_equal(passages[:30], pool)
    np.testing.assert_allclose(passages[30:], denser.encode_passages(texts), atol=1e-5)
    expected = np.argsort(-(queries @ passages.T), axis=1, kind="stable")[:, :8]
    assert out["candidates"].shape == (len(queries), 8)
    assert (out["candidates"] >= 30).any()  # the corpus passages are found
    np.testing.assert_array_equal(np.sort(out["candidates"], 1), np.sort(expected, 1))
    assert (
        _corpus_pool(
            ProjectionTrainConfig(output=tmp_path / "p.safetensors"), data, distillation, False
        )
        is None
    )
    for wrong, message in (("missing/corpus.jsonl", "corpus file"), ("no-such-set", "unknown")):
        bad = ProjectionTrainConfig(output=tmp_path / "p.safetensors", corpora=[wrong])
        with pytest.raises((FileNotFoundError, ValueError), match=message):
            _corpus_pool(bad, data, distillation, progress=False)
    # the same corpus at another path (a copy, a moved data folder) gets its own store rather
    # than reusing the first one, whose meta names the other path and would refuse it
    copy = tmp_path / "copy" / "corpus.jsonl"
    copy.parent.mkdir()
    shutil.copy(sample_dataset().corpus, copy)
    moved = ProjectionTrainConfig(output=tmp_path / "p.safetensors", corpora=[str(copy)])
    again = _corpus_pool(moved, data, distillation, progress=False)
    np.testing.assert_array_equal(again["passages"].numpy(), passages)
    assert again["counts"] == {str(copy): len(texts)}
