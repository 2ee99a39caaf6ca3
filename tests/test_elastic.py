"""Elastic structure: importance, function-preserving reordering, sliced forward, FLOPs, menus.

All on the real default model (all-MiniLM-L6-v2: 6 layers, 12 heads x 32, FFN 1536). Every
test that changes weights loads its own copy; the session ``denser`` fixture is only read.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, BertConfig

from elasticir.compute.levels import FULL, Level
from elasticir.data import data_root, read_topics
from elasticir.data.corpus import iter_corpus
from elasticir.data.datasets import sample_dataset
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.models.denser import ElasticDenser
from elasticir.models.elastic import (
    DEFAULT_LEVELS,
    SubNetwork,
    compute_importance,
    default_levels,
    elastic_forward,
    flops_ratio,
    level_flops,
    make_elastic,
    reorder_,
    sub_network,
)
from elasticir.models.loading import read_levels, resolve_model_path

TOPICS = "topics/topics.msmarco-passage.dev-subset.txt"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run this module on one intra-op thread, restored afterwards.

    On a small machine shared with other jobs, torch's OpenMP threads wait on each other at
    every op: one 64-token query took ~0.8 s on two threads and ~35 ms on one. One thread
    keeps these tests fast and the latency ratios meaningful.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ texts and models


def _msmarco_queries(n: int = 64) -> list[str] | None:
    try:
        path = data_root() / TOPICS
    except MissingResourceError:
        return None
    if not path.is_file():
        return None
    return [q.text for q in read_topics(path)[:n]]


def _sample_texts() -> list[str]:
    dataset = sample_dataset()
    passages = [p.encoder_text() for p in iter_corpus(dataset.corpus)]  # type: ignore[arg-type]
    return [q.text for q in read_topics(dataset.queries)] + passages  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def source() -> tuple[str, object]:
    path = resolve_model_path(None)
    return path, AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def load(source: tuple[str, object]) -> Callable[[], torch.nn.Module]:
    """A fresh copy of the default model in eval mode (tests may change its weights)."""
    return lambda: AutoModel.from_pretrained(source[0]).eval()


@pytest.fixture(scope="module")
def batch(source: tuple[str, object]) -> dict[str, torch.Tensor]:
    texts = _sample_texts()[:12] + ["a", "dense retrieval with elastic encoders"]
    return source[1](texts, padding=True, truncation=True, max_length=96, return_tensors="pt")


@pytest.fixture(scope="module")
def reordered(
    load: Callable[[], torch.nn.Module], source: tuple[str, object]
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(original, reordered-by-importance) copies of the default model."""
    original, model = load(), load()
    texts = _msmarco_queries() or _sample_texts()
    reorder_(model, compute_importance(model, source[1], texts))
    return original, model


@pytest.fixture(scope="module")
def elastic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An elastic checkpoint of the default model, ranked on 64 MS MARCO queries when the
    shared data is there (else on the packaged sample texts)."""
    texts = _msmarco_queries() or _sample_texts()
    return make_elastic(None, tmp_path_factory.mktemp("elastic") / "minilm", texts)


@pytest.fixture(scope="module")
def elastic_denser(elastic_dir: Path) -> ElasticDenser:
    return ElasticDenser(elastic_dir, device="cpu")


def _hf(model: torch.nn.Module, batch: dict[str, torch.Tensor], **kwargs: object) -> object:
    with torch.inference_mode():
        return model(**batch, **kwargs)


def _elastic(model: torch.nn.Module, batch: dict[str, torch.Tensor], level: str) -> torch.Tensor:
    with torch.inference_mode():
        return elastic_forward(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            level,
            token_type_ids=batch.get("token_type_ids"),
        )


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)


# ------------------------------------------------------------------ importance and reordering


def test_importance_shapes_and_determinism(
    load: Callable[[], torch.nn.Module], source: tuple[str, object]
) -> None:
    model, texts = load(), _sample_texts()[:12]
    first = compute_importance(model, source[1], texts, batch_size=5)
    again = compute_importance(model, source[1], texts, batch_size=5)
    assert first.num_layers == 6 and first.num_texts == 12 and first.num_tokens > 16
    for i in range(6):
        assert first.heads[i].shape == (12,) and first.neurons[i].shape == (1536,)
        assert torch.equal(first.heads[i], again.heads[i])
        assert torch.equal(first.neurons[i], again.neurons[i])
        assert bool((first.heads[i] > 0).all()) and bool((first.neurons[i] >= 0).all())
    assert not model.training


def test_reorder_is_function_preserving(
    reordered: tuple[torch.nn.Module, torch.nn.Module], batch: dict[str, torch.Tensor]
) -> None:
    original, model = reordered
    assert not torch.equal(
        original.encoder.layer[0].attention.self.query.weight,
        model.encoder.layer[0].attention.self.query.weight,
    )
    before = _hf(original, batch).last_hidden_state
    after = _hf(model, batch).last_hidden_state
    real = batch["attention_mask"].bool()  # padding positions are never pooled
    # |hidden| reaches ~6: float32 summation-order noise is ~1e-6 relative
    torch.testing.assert_close(after[real], before[real], rtol=1e-5, atol=1e-5)
    mask = batch["attention_mask"]
    assert (_pool(after, mask) - _pool(before, mask)).abs().max() < 1e-5


def test_reorder_sorts_heads_and_neurons(
    reordered: tuple[torch.nn.Module, torch.nn.Module], source: tuple[str, object]
) -> None:
    _, model = reordered
    scores = compute_importance(model, source[1], _msmarco_queries() or _sample_texts())
    for i in range(scores.num_layers):
        for values in (scores.heads[i], scores.neurons[i]):
            steps = values[1:] - values[:-1]
            assert bool((steps <= 1e-6 * values.abs().max()).all()), f"layer {i} not sorted"


# ------------------------------------------------------------------ the sliced forward


def test_elastic_forward_full_equals_hugging_face(
    reordered: tuple[torch.nn.Module, torch.nn.Module], batch: dict[str, torch.Tensor]
) -> None:
    for model in reordered:
        expected = _hf(model, batch).last_hidden_state
        for level in ("full", "L6-W100"):
            assert (_elastic(model, batch, level) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_full_width_prefix_equals_first_layers(
    reordered: tuple[torch.nn.Module, torch.nn.Module],
    batch: dict[str, torch.Tensor],
    depth: int,
) -> None:
    _, model = reordered
    # hidden_states[0] is the embeddings; hidden_states[k] the output after k layers
    expected = _hf(model, batch, output_hidden_states=True).hidden_states[depth]
    assert (_elastic(model, batch, f"L{depth}") - expected).abs().max() < 1e-5


def test_sub_levels_shapes_and_differences(
    reordered: tuple[torch.nn.Module, torch.nn.Module], batch: dict[str, torch.Tensor]
) -> None:
    _, model = reordered
    full = _elastic(model, batch, "full")
    mask = batch["attention_mask"]
    for level in DEFAULT_LEVELS[1:]:
        hidden = _elastic(model, batch, str(level))
        assert hidden.shape == full.shape and hidden.dtype == torch.float32
        assert torch.isfinite(hidden).all()
        assert (hidden - full).abs().max() > 1e-2, level
        cosine = (_pool(hidden, mask) * _pool(full, mask)).sum(-1)
        print(f"{level}: mean cosine to full {cosine.mean():.3f}")


def test_heads_and_ffn_cut_apart_slice_what_they_name(
    reordered: tuple[torch.nn.Module, torch.nn.Module], batch: dict[str, torch.Tensor]
) -> None:
    _, model = reordered
    # all heads + all neurons is the full model; cutting only one of them changes the output,
    # and the cut that keeps the same units as a uniform width is that width exactly
    full = _elastic(model, batch, "full")
    assert (_elastic(model, batch, "L6-H100-F100") - full).abs().max() < 1e-6
    ffn_only = _elastic(model, batch, "L6-H100-F23")
    heads_only = _elastic(model, batch, "L6-H50-F100")
    assert (ffn_only - full).abs().max() > 1e-2 and (heads_only - full).abs().max() > 1e-2
    assert (ffn_only - heads_only).abs().max() > 1e-2
    assert torch.equal(_elastic(model, batch, "L6-H50-F50"), _elastic(model, batch, "L6-W50"))


def test_elastic_forward_changes_no_weights(
    reordered: tuple[torch.nn.Module, torch.nn.Module], batch: dict[str, torch.Tensor]
) -> None:
    _, model = reordered
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for level in DEFAULT_LEVELS:
        _elastic(model, batch, str(level))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sub_network_counts(load: Callable[[], torch.nn.Module]) -> None:
    config = BertConfig(num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    assert sub_network(config, FULL) == SubNetwork(6, 12, 1536)
    assert sub_network(config, "L4-W75") == SubNetwork(4, 9, 1152)
    assert sub_network(config, "L2-W50") == SubNetwork(2, 6, 768)
    assert sub_network(config, "L1-W1") == SubNetwork(1, 1, 15)  # at least one head
    assert sub_network(config, "L6-H100-F23") == SubNetwork(6, 12, 353)  # heads, FFN apart
    assert sub_network(config, "L6-H75-F37") == SubNetwork(6, 9, 568)
    with pytest.raises(ValueError, match="needs 7 layers"):
        sub_network(config, "L7")


# ------------------------------------------------------------------ FLOPs and menus


def _minilm_config() -> BertConfig:
    return BertConfig(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )


def test_flops_count() -> None:
    config, t, d, i = _minilm_config(), 32, 384, 1536
    per_layer = 2 * t * d * 3 * d + 4 * t * t * d + 2 * t * d * d + 4 * t * d * i
    assert level_flops(config, FULL, seq_len=t) == 6 * per_layer
    assert level_flops(config, "L3", seq_len=t) == 3 * per_layer
    assert flops_ratio(config, FULL) == 1.0
    # heads and FFN neurons cut apart: every head (attention as in full), 353 of 1536 neurons
    attention = 2 * t * d * 3 * d + 4 * t * t * d + 2 * t * d * d
    assert level_flops(config, "L6-H100-F23", seq_len=t) == 6 * (attention + 4 * t * d * 353)
    assert flops_ratio(config, "L6-H75-F37") == 0.5  # 9 heads + 568 neurons: exactly half


def test_flops_monotone_in_depth_and_width() -> None:
    config = _minilm_config()
    for seq_len in (8, 32, 256):
        for width in (10, 25, 50, 75, 100):
            costs = [level_flops(config, Level(depth=k, width=width), seq_len) for k in range(1, 7)]
            assert costs == sorted(costs) and len(set(costs)) == 6
        for depth in range(1, 7):
            costs = [
                level_flops(config, Level(depth=depth, width=w), seq_len)
                for w in (1, 25, 50, 75, 100)
            ]
            assert costs == sorted(costs) and len(set(costs)) == 5


def test_default_menu() -> None:
    config = _minilm_config()
    assert default_levels(config) == DEFAULT_LEVELS
    assert DEFAULT_LEVELS[0] == FULL and len(DEFAULT_LEVELS) >= 5
    ratios = [flops_ratio(config, level) for level in DEFAULT_LEVELS]
    print(
        "menu FLOPs ratios (32 tokens):",
        {str(lv): round(r, 3) for lv, r in zip(DEFAULT_LEVELS, ratios)},
    )
    assert ratios == sorted(ratios, reverse=True)
    assert min(ratios) <= 0.2 and any(r <= 0.5 for r in ratios)


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 8, 12, 24])
def test_default_menu_other_depths(layers: int) -> None:
    config = BertConfig(num_hidden_layers=layers)
    menu = default_levels(config)
    ratios = [flops_ratio(config, level) for level in menu]
    assert menu[0] == FULL and len({lv.resolve(layers) for lv in menu}) == len(menu)
    assert ratios == sorted(ratios, reverse=True)
    assert min(ratios) <= 0.2 and any(r <= 0.5 for r in ratios)
    assert len(menu) >= (5 if layers >= 3 else 3)


# ------------------------------------------------------------------ checkpoints and ElasticDenser


def test_read_levels(tmp_path: Path) -> None:
    assert read_levels(str(tmp_path)) == (FULL,)
    (tmp_path / "elasticir.json").write_text(json.dumps({"levels": ["L2-W50", "full", "L4"]}))
    assert read_levels(str(tmp_path)) == (FULL, Level("L2-W50"), Level("L4"))
    (tmp_path / "elasticir.json").write_text(json.dumps({"levels": ["L2-W50", "half"]}))
    with pytest.raises(InputFormatError, match="elasticir.json"):
        read_levels(str(tmp_path))


def test_make_elastic_round_trip(
    elastic_dir: Path, elastic_denser: ElasticDenser, denser: ElasticDenser
) -> None:
    queries = _msmarco_queries()
    if queries is None:
        pytest.skip(f"shared data not found ({TOPICS}): set ELASTICIR_DATA to the data folder")
    manifest = json.loads((elastic_dir / "elasticir.json").read_text())
    assert manifest["levels"] == [str(level) for level in DEFAULT_LEVELS]
    assert manifest["elastic"]["reordered"] is True
    assert manifest["elastic"]["importance_texts"] == 64
    assert (manifest["pooling"], manifest["normalize"], manifest["max_length"]) == (
        "mean",
        True,
        256,
    )

    assert elastic_denser.levels == DEFAULT_LEVELS
    assert elastic_denser.settings == denser.settings
    texts = queries[:24]
    reference = denser.encode_queries(texts)
    for level in elastic_denser.levels:
        vectors = elastic_denser.encode_queries(texts, level)
        assert vectors.shape == (24, 384) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        agreement = float((vectors * reference).sum(1).mean())
        ratio = elastic_denser.flops_ratio(level)
        print(f"{level}: FLOPs {ratio:.3f}, cosine to full {agreement:.3f}")
        if level == FULL:
            # reordering is function-preserving: the passage space is the original model's
            np.testing.assert_allclose(vectors, reference, atol=1e-5)
    passages = elastic_denser.encode_passages(_sample_texts()[10:16], "L3-W50")
    assert passages.shape == (6, 384)


def test_elastic_denser_levels_and_fingerprint(elastic_denser: ElasticDenser) -> None:
    assert elastic_denser.check_level("L6-W50") == Level("L6-W50")
    assert elastic_denser.check_level("L6") == Level("L6")  # the full model, spelled out
    with pytest.raises(ValueError, match="not offered"):
        elastic_denser.check_level("L5")
    assert elastic_denser.flops_ratio("full") == 1.0
    assert elastic_denser.flops_ratio("L2-W50") == pytest.approx(1 / 6)
    assert elastic_denser.level_flops("L4") < elastic_denser.level_flops("full")
    fingerprint = elastic_denser.fingerprint
    elastic_denser.encode_queries(["x"], "L2-W50")
    assert (
        elastic_denser.fingerprint == fingerprint == elastic_denser.describe()["model_fingerprint"]
    )
    assert "levels" not in elastic_denser.describe()  # meaning unchanged: the passage encoder


def test_concurrent_levels_match_alone(elastic_denser: ElasticDenser) -> None:
    texts = (_msmarco_queries() or _sample_texts())[:48]
    jobs = [("full", texts), ("L2-W50", texts[::-1]), ("L6-W50", texts[5:])]
    alone = [elastic_denser.encode_queries(t, level, batch_size=8) for level, t in jobs]

    def run(job: tuple[str, list[str]]) -> list[np.ndarray]:
        level, t = job
        return [elastic_denser.encode_queries(t, level, batch_size=8) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        together = list(pool.map(run, jobs))
    for expected, runs in zip(alone, together):
        for got in runs:
            np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_latency_by_level(elastic_denser: ElasticDenser, source: tuple[str, object]) -> None:
    tokenizer = source[1]
    pool = _msmarco_queries(512) or _sample_texts()
    queries, current = [], ""
    for text in pool * 8:  # join queries into ~60-token ones
        current = f"{current} {text}".strip()
        if len(tokenizer(current)["input_ids"]) >= 60:
            queries.append(current)
            current = ""
            if len(queries) == 32:
                break

    def median_time(texts: list[str], level: Level, repeats: int) -> float:
        elastic_denser.encode_queries(texts, level, batch_size=32)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            elastic_denser.encode_queries(texts, level, batch_size=32)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    levels = elastic_denser.levels
    single = {lv: median_time(queries[:1], lv, 9) for lv in levels}
    batch = {lv: median_time(queries, lv, 5) for lv in (FULL, levels[-1])}
    for lv in levels:
        line = f"{lv}: FLOPs {elastic_denser.flops_ratio(lv, 64):.3f}"
        line += f"  single query {single[lv] * 1e3:.1f} ms ({single[lv] / single[FULL]:.2f}x)"
        if lv in batch:
            line += f"  batch of 32 {batch[lv] * 1e3:.0f} ms ({batch[lv] / batch[FULL]:.2f}x)"
        print(line)
    assert batch[levels[-1]] < 0.8 * batch[FULL]
