"""The examples in examples/ run and return sensible results on the built-in sample."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retrieve_and_evaluate_example() -> None:
    results = load("retrieve_and_evaluate").main("sample")
    assert set(results) == {"dense", "bm25", "hybrid"}
    assert results["dense"]["nDCG@10"] > 0.8
    assert all(0.0 <= v <= 1.0 for row in results.values() for v in row.values())


def test_vectors_example() -> None:
    top = load("encode_and_search_vectors").main()
    assert len(top) == 3 and all(score > 0.3 for _, _, score in top)


def test_cascade_compute_example() -> None:
    runs = load("cascade_compute").main()
    assert set(runs) == {"full", "dense@L2-W50"}
    assert all(len(docs) == 3 for run in runs.values() for docs in run.values())
    assert runs["full"] != runs["dense@L2-W50"]  # the call's compute changed the ranking
