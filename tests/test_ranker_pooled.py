"""ElasticRanker's pooled head: the bi-encoder's own scoring with gated cross attention.

The encoder is the packaged all-MiniLM-L6-v2, untouched (no training, no reordering), so with
the gates shut the ranker must score exactly what the ElasticDenser bi-encoder scores, and with
the gates at 0 exactly what plain joint attention over the pair gives. One torch thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elasticir.compute.levels import Level
from elasticir.data.errors import InputFormatError
from elasticir.models.denser import ElasticDenser
from elasticir.models.loading import resolve_model_path
from elasticir.rerank.policies import ConfidencePolicy, simulate
from elasticir.rerank.ranker import (
    POOLED_OFFSET,
    POOLED_SCALE,
    ElasticRanker,
    RankerNet,
    encode_pairs,
    pad_batch,
)
from elasticir.train.ranker import RankerTrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUERIES = ["how do bees make honey", "tallest mountain in africa", "who painted the mona lisa"]
PASSAGES = [
    "Bees turn flower nectar into honey by evaporating its water inside the hive.",
    "Kilimanjaro, a dormant volcano in Tanzania, is the highest peak on the continent.",
    "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century.",
    "Interest rates rose for the third time this year.",
    "Honey bees live in colonies of tens of thousands of workers.",
]
PAIRS_Q = [q for q in QUERIES for _ in PASSAGES]
PAIRS_P = PASSAGES * len(QUERIES)


def _pooled(gate_init: float) -> ElasticRanker:
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(None)
    net = RankerNet(AutoModel.from_pretrained(path), head="pooled", gate_init=gate_init)
    net.init_exits_(path)
    return ElasticRanker.from_net(
        net, AutoTokenizer.from_pretrained(path), max_length=128, batch_size=4, device="cpu"
    )


@pytest.fixture(scope="module")
def shut() -> ElasticRanker:
    return _pooled(-1e9)


@pytest.fixture(scope="module")
def ranker() -> ElasticRanker:
    return _pooled(-2.0)  # partly open: the segments do see each other


def test_pooled_layout_marks_the_segments(shut: ElasticRanker) -> None:
    tokenizer = shut.tokenizer
    ids, types = encode_pairs(tokenizer, [QUERIES[2]], [PASSAGES[2]], 128, True, pooled=True)
    query = tokenizer(QUERIES[2])["input_ids"]
    passage = tokenizer(PASSAGES[2])["input_ids"]
    assert ids[0] == query + passage  # [CLS] q [SEP] [CLS] p [SEP]
    assert types[0] == [0] * len(query) + [1] * len(passage)
    cut, _ = encode_pairs(tokenizer, [QUERIES[2]], [PASSAGES[2] * 20], 40, False, pooled=True)
    assert len(cut[0]) == 40 and cut[0].count(tokenizer.cls_token_id) == 2


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_shut_gates_score_exactly_the_bi_encoder(shut: ElasticRanker) -> None:
    bi = ElasticDenser(device="cpu")
    cosine = _cosine(bi.encode_queries(PAIRS_Q), bi.encode_passages(PAIRS_P))
    scores = shut.score_pairs(PAIRS_Q, PAIRS_P).scores
    np.testing.assert_allclose(scores, POOLED_SCALE * (cosine - POOLED_OFFSET), atol=2e-4)
    # exit 3 is the bi-encoder cut after 3 layers: each text alone through Hugging Face's model
    encoder, tokenizer = shut.net.encoder, shut.tokenizer

    def layer_3(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for text in texts:
                ids = torch.tensor([tokenizer(text)["input_ids"]])
                out.append(encoder(ids, output_hidden_states=True).hidden_states[3][0].mean(0))
        return torch.stack(out).numpy()

    cosine = _cosine(layer_3(PAIRS_Q), layer_3(PAIRS_P))
    scores = shut.score_pairs(PAIRS_Q, PAIRS_P, level="L3").scores
    np.testing.assert_allclose(scores, POOLED_SCALE * (cosine - POOLED_OFFSET), atol=2e-4)


def test_open_gates_are_plain_joint_attention() -> None:
    ranker = _pooled(0.0)
    ids, types = encode_pairs(ranker.tokenizer, PAIRS_Q[:4], PAIRS_P[:4], 128, True, pooled=True)
    got = ranker.score_pairs(PAIRS_Q[:4], PAIRS_P[:4]).scores
    encoder = ranker.net.encoder
    expected = []
    with torch.inference_mode():
        for row, kinds in zip(ids, types):  # one pair at a time, through Hugging Face's model
            second = torch.tensor(kinds).bool()
            index = torch.arange(len(row))
            positions = torch.where(second, index - int((~second).sum()), index)
            hidden = encoder(
                input_ids=torch.tensor([row]),
                # an explicit mask: without one, transformers >= 5.25 reads the restart of
                # position_ids as two packed sequences and stops them attending to each other
                attention_mask=torch.ones(1, len(row), dtype=torch.long),
                position_ids=positions[None],
                token_type_ids=torch.zeros(1, len(row), dtype=torch.long),
            ).last_hidden_state[0]
            q, p = hidden[~second].mean(0), hidden[second].mean(0)
            cosine = float(F.cosine_similarity(q, p, dim=0))
            expected.append(POOLED_SCALE * (cosine - POOLED_OFFSET))
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_the_gates_learn(ranker: ElasticRanker) -> None:
    net = ranker.net
    ids, types = encode_pairs(ranker.tokenizer, PAIRS_Q[:5], PAIRS_P[:5], 64, True, pooled=True)
    batch = pad_batch(ids, types, np.arange(5), 0, "cpu")
    scores, states = net.exit_outputs(*batch, Level("L6-W50"))
    assert scores.shape == (5, 6) and len(states) == 7
    F.log_softmax(scores, dim=0)[0].sum().neg().backward()
    try:
        grad = net.gates.grad
        assert grad is not None and grad.shape == (6, 12)
        assert bool((grad[:, :6] != 0).all())  # the level's heads get a gradient
        assert bool((grad[:, 6:] == 0).all())  # the heads the W50 level drops do not
    finally:
        net.zero_grad(set_to_none=True)


def test_pooled_early_exit_matches_the_records(ranker: ElasticRanker) -> None:
    records = ranker.layer_records(PAIRS_Q, PAIRS_P, batch_size=4)
    full = ranker.score_pairs(PAIRS_Q, PAIRS_P, batch_size=4)
    np.testing.assert_allclose(records.scores[:, -1], full.scores, atol=1e-4)
    margins = np.abs(2 / (1 + np.exp(-records.scores.astype(np.float64))) - 1)
    policy = ConfidencePolicy("margin", float(np.median(margins[:, 2])), min_layer=3)
    out = ranker.score_pairs(PAIRS_Q, PAIRS_P, policy=policy, batch_size=4)
    layers, scores = simulate(policy, records)
    np.testing.assert_array_equal(out.exit_layers, layers)
    assert {3, 6} <= set(layers.tolist())
    np.testing.assert_allclose(out.scores, scores, atol=1e-4)
    saturation = ConfidencePolicy("saturation", float(np.median(records.saturation[:, 1])), 2)
    out = ranker.score_pairs(PAIRS_Q, PAIRS_P, policy=saturation, batch_size=4)
    layers, scores = simulate(saturation, records)
    np.testing.assert_array_equal(out.exit_layers, layers)
    np.testing.assert_allclose(out.scores, scores, atol=1e-4)


def test_pooled_bf16_builds_its_attention_bias_in_bf16_and_stays_close(
    ranker: ElasticRanker,
) -> None:
    """At bf16 the gated attention bias is built in bfloat16 (no full-size fp32 tensor to cast
    at every layer); the scores stay close to fp32's and keep each query's order."""
    bf16 = ElasticRanker.from_net(
        ranker.net, ranker.tokenizer, max_length=128, batch_size=4, device="cpu", precision="bf16"
    )
    ids, types = bf16._encode(PAIRS_Q[:2], PAIRS_P[:2])
    batch = pad_batch(ids, types, np.arange(2), bf16._pad_id, bf16.device)
    with torch.inference_mode(), bf16._autocast():
        _, masks = bf16.net.start(*batch)
    assert masks.cross.dtype == masks.pad.dtype == torch.bfloat16
    _, masks = ranker.net.start(*batch)
    assert masks.cross.dtype == torch.float32  # outside autocast nothing changes
    exact = ranker.score_pairs(PAIRS_Q, PAIRS_P).scores
    fast = bf16.score_pairs(PAIRS_Q, PAIRS_P).scores
    assert not np.array_equal(fast, exact)
    assert np.abs(fast - exact).max() < 0.05 * exact.std()
    for q in range(len(QUERIES)):
        rows = slice(q * len(PASSAGES), (q + 1) * len(PASSAGES))
        assert (np.argsort(-fast[rows]) == np.argsort(-exact[rows])).all()


def test_pooled_ranker_saves_and_loads(ranker: ElasticRanker, tmp_path: Path) -> None:
    path = ranker.save(tmp_path / "pooled")
    manifest = json.loads((path / "elasticir.json").read_text())
    assert manifest["exits"]["kind"] == "pooled"
    loaded = ElasticRanker(path, batch_size=4, device="cpu")
    assert loaded.net.pooled and torch.equal(loaded.net.gates, ranker.net.gates)
    np.testing.assert_array_equal(
        loaded.score_pairs(PAIRS_Q, PAIRS_P, level="L4").scores,
        ranker.score_pairs(PAIRS_Q, PAIRS_P, level="L4").scores,
    )
    # a [CLS] ranker cannot read pooled exits, nor the other way round
    manifest["exits"]["kind"] = "cls"
    (path / "elasticir.json").write_text(json.dumps(manifest))
    with pytest.raises(InputFormatError, match="no gates|gates"):
        ElasticRanker(path)
    manifest["exits"]["kind"] = "attention"
    (path / "elasticir.json").write_text(json.dumps(manifest))
    with pytest.raises(InputFormatError, match="exits.kind"):
        ElasticRanker(path)


def test_head_settings_are_checked_and_keep_cls_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="head is one of"):
        RankerTrainConfig(output=tmp_path / "x", head="attention")
    with pytest.raises(ValueError, match="gate_init"):
        RankerTrainConfig(output=tmp_path / "x", head="pooled", gate_init=float("nan"))
    with pytest.raises(ValueError, match="gate_lr"):
        RankerTrainConfig(output=tmp_path / "x", head="pooled", gate_lr=0.0)
    cls = RankerTrainConfig(output=tmp_path / "x").training_fields()
    assert not {"head", "gate_init", "gate_lr"} & set(cls)  # keys of [CLS] runs unchanged
    pooled = RankerTrainConfig(output=tmp_path / "x", head="pooled").training_fields()
    assert pooled["head"] == "pooled" and pooled["gate_lr"] == 0.05
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
    )
    with pytest.raises(ValueError, match="unknown ranker head"):
        RankerNet(BertModel(config), head="attention")


@pytest.mark.data
def test_training_a_pooled_ranker_moves_its_gates(data_root: Path, tmp_path: Path) -> None:
    from elasticir.train.ranker import train_ranker

    config = RankerTrainConfig(
        output=tmp_path / "pooled",
        data_root=data_root,
        head="pooled",
        max_groups_per_source=3,
        steps=3,
        batch_size=2,
        group_size=4,
        max_length=64,
        levels=("full", "L6-W50"),
        importance_pairs=8,
        exit_holdout=0,
        checkpoint_every=3,
        threads=1,
    )
    path = train_ranker(config, progress=False)
    manifest = json.loads((path / "elasticir.json").read_text())
    assert manifest["exits"]["kind"] == "pooled"
    assert manifest["training"]["config"]["head"] == "pooled"
    ranker = ElasticRanker(path, device="cpu")
    gates = ranker.net.gates.detach()
    moved = float((gates + 8.0).abs().max())
    # the gates have their own learning rate (0.05): with the trunk's (5e-5) Adam's 3 steps
    # could not move them past ~1e-4
    assert gates.shape == (6, 12) and 1e-3 < moved < 0.5
    scores = ranker.score_pairs(PAIRS_Q[:5], PAIRS_P[:5], level="L6-W50").scores
    assert np.isfinite(scores).all()
