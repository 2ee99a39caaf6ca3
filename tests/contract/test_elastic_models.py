"""The contract every elastic model keeps, run over each one: ElasticDenser and ElasticRanker.

Its levels form a menu (full first, FLOPs falling); the levels are nested (a smaller level's
weights are a slice of a larger one's); a level's outputs are those of its sub-network run
alone, as a plain Hugging Face model with no elastic code
(:func:`~elasticir.models.elastic.extract_sub_network`); and two threads at two levels get
what each gets alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from elasticir.compute import FULL, Level, level_flops, sub_network
from elasticir.models.elastic import extract_sub_network

pytestmark = [pytest.mark.contract, pytest.mark.usefixtures("one_torch_thread")]

QUERIES = ["why is the sea salty", "who built the eiffel tower", "bees"]
PASSAGES = [
    "The sea is salty because rivers carry dissolved minerals into it.",
    "The Eiffel Tower was finished in 1889 for the world fair.",
    "Honeybees dance to tell their nest mates where flowers are.",
]


@dataclass
class Elastic:
    """One elastic model as the contract sees it."""

    levels: tuple[Level, ...]
    config: object
    encoder: torch.nn.Module  # the transformer whose sub-networks the levels are
    run: Callable[[Level], np.ndarray]  # the model's own outputs at a level
    alone: Callable[[torch.nn.Module, Level], np.ndarray]  # a standalone sub-network's


def _denser(model) -> Elastic:
    from elasticir.models.denser import pool

    tokens = model.tokenizer(QUERIES, padding=True, truncation=True, max_length=64,
                             return_tensors="pt")  # fmt: skip

    def alone(small: torch.nn.Module, level: Level) -> np.ndarray:
        with torch.inference_mode():
            hidden = small(**tokens).last_hidden_state
            settings = model.settings
            return pool(
                hidden, tokens["attention_mask"], settings.pooling, settings.normalize
            ).numpy()

    return Elastic(
        tuple(model.levels),
        model.model.config,
        model.model,
        lambda level: model.encode_queries(QUERIES, level=level),
        alone,
    )


def _ranker(model) -> Elastic:
    from elasticir.models.ranker import encode_pairs

    def alone(small: torch.nn.Module, level: Level) -> np.ndarray:
        depth = sub_network(model.config, level).depth
        scores = []
        with torch.inference_mode():
            for query, passage in zip(QUERIES, PASSAGES):  # one pair: no padding
                ids, types = encode_pairs(
                    model.tokenizer, [query], [passage], model.max_length, True
                )
                hidden = small(
                    input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types)
                ).last_hidden_state
                scores.append(float(model.net.heads(depth - 1, hidden[:, 0])[0]))
        return np.asarray(scores, dtype=np.float32)

    return Elastic(
        tuple(model.levels),
        model.config,
        model.net.encoder,
        lambda level: model.score_pairs(QUERIES, PASSAGES, level=level).scores,
        alone,
    )


# The shipped ranker has the pooled exit head, which the standalone run below does not model
# (it reads the [CLS] head): it is checked through the scorer contract instead.
@pytest.fixture(params=["denser", "ranker", "shipped-denser"])
def elastic(request: pytest.FixtureRequest) -> Elastic:
    fixture = {
        "denser": "elastic_denser",
        "ranker": "elastic_ranker",
        "shipped-denser": "shipped_denser",
        "shipped-ranker": "shipped_ranker_model",
    }[request.param]
    model = request.getfixturevalue(fixture)
    return _denser(model) if request.param.endswith("denser") else _ranker(model)


def test_the_menu_starts_at_full_and_falls_in_flops(elastic: Elastic) -> None:
    assert elastic.levels[0] == FULL and len(elastic.levels) >= 3
    flops = [level_flops(elastic.config, level) for level in elastic.levels]
    assert flops == sorted(flops, reverse=True) and len(set(flops)) == len(flops)


def test_levels_are_nested(elastic: Elastic) -> None:
    models = {level: extract_sub_network(elastic.encoder, level) for level in elastic.levels}
    subs = {level: sub_network(elastic.config, level) for level in elastic.levels}
    pairs = [
        (a, b)
        for a in elastic.levels
        for b in elastic.levels
        if a != b and all(x <= y for x, y in zip(subs[a], subs[b]))
    ]
    assert pairs, "some level of the menu must be inside another"
    for small, large in pairs:
        big = dict(models[large].named_parameters())
        for name, weight in models[small].named_parameters():
            inside = big[name][tuple(slice(0, n) for n in weight.shape)]
            assert torch.equal(weight, inside), (small, large, name)


def test_a_level_is_its_sub_network_run_alone(elastic: Elastic) -> None:
    for level in elastic.levels:
        small = extract_sub_network(elastic.encoder, level)
        kept = (
            sum(p.numel() for p in small.encoder.parameters()) if hasattr(small, "encoder") else 0
        )
        if level != FULL:
            assert kept < sum(p.numel() for p in elastic.encoder.encoder.parameters())
        np.testing.assert_allclose(
            elastic.run(level), elastic.alone(small, level), atol=2e-5, err_msg=str(level)
        )


def _size(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_two_threads_at_two_levels_get_what_each_gets_alone(elastic: Elastic) -> None:
    chosen = (elastic.levels[0], elastic.levels[-1])
    alone = {level: elastic.run(level) for level in chosen}
    got: list[tuple[Level, np.ndarray]] = []
    errors: list[BaseException] = []

    def work(level: Level) -> None:
        try:
            for _ in range(3):
                got.append((level, elastic.run(level)))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(level,)) for level in chosen * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(got) == 12, errors
    for level, output in got:
        np.testing.assert_allclose(output, alone[level], atol=1e-5)
