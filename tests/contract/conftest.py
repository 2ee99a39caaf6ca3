"""One instance of each elastic model and scorer, built once for the contract suite.

Untrained ones, so the suite needs no training run: an elastic checkpoint of the shipped
all-MiniLM-L6-v2 (heads and neurons sorted by importance on the packaged sample's texts),
an ElasticRanker over the same base model, and a seeded DiPair head; and the trained models
that ship with the package (``elastic-minilm``, ``ranker-minilm``, ``dipair-minilm``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from elasticir.data import sample_dataset
from elasticir.data.corpus import iter_corpus


@pytest.fixture(scope="session")
def elastic_denser(tmp_path_factory: pytest.TempPathFactory):
    from elasticir.models.denser import ElasticDenser
    from elasticir.models.elastic import make_elastic

    texts = [p.encoder_text() for p in iter_corpus(sample_dataset().corpus)]
    directory: Path = tmp_path_factory.mktemp("contract") / "elastic-minilm"
    make_elastic(None, directory, texts)
    return ElasticDenser(directory)


@pytest.fixture(scope="session")
def elastic_ranker():
    from elasticir.models.ranker import ElasticRanker, UntrainedExitsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedExitsWarning)  # the contract needs no training
        return ElasticRanker(max_length=64, batch_size=4)


@pytest.fixture(scope="session")
def scorers(elastic_denser, elastic_ranker, denser) -> dict[str, object]:
    from elasticir.rerank.biencoder import BiEncoderScorer
    from elasticir.rerank.dipair import DiPair, DiPairScorer
    from elasticir.rerank.ranker import RankerScorer

    return {
        "biencoder": BiEncoderScorer(elastic_denser),
        "ranker": RankerScorer(elastic_ranker),
        "dipair": DiPairScorer(DiPair.create(encoder=denser, seed=13)),
        # the trained models that ship with the package, loaded by name
        "shipped-ranker": RankerScorer(shipped_ranker()),
        "shipped-dipair": DiPairScorer(DiPair.load("dipair-minilm")),
    }


def shipped_ranker():
    from elasticir.models.ranker import ElasticRanker

    return ElasticRanker("ranker-minilm", max_length=64, batch_size=4)


@pytest.fixture(scope="session")
def shipped_denser():
    from elasticir.models.denser import ElasticDenser

    return ElasticDenser("elastic-minilm")


@pytest.fixture(scope="session")
def shipped_ranker_model():
    return shipped_ranker()
