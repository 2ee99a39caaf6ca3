"""The quickstart: index -> search -> evaluate, dense and BM25 and their fusion, on nq-open.

Runs on the shared data folder when it is there, otherwise on the tiny sample shipped in the
package (and says how to get real data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from elasticir import api
from elasticir.data.datasets import Dataset, data_root, get_dataset, sample_dataset
from elasticir.data.errors import MissingResourceError
from elasticir.data.trec import write_run

NO_DATA_HINT = (
    "No data folder found, so the quickstart runs on the 40-passage sample shipped with the "
    "package. For real benchmarks (MS MARCO DL19, NQ), put the data folder at ../shared/data "
    "or set ELASTICIR_DATA=/path/to/data (it holds msmarco-dl19/, nq-open/, topics/)."
)


@dataclass(frozen=True)
class QuickstartResult:
    dataset: str
    rows: dict[str, dict[str, float]]  # system -> measure -> value
    runs: dict[str, Path]
    used_sample: bool


QUICKSTART_DATASETS = ("nq-open", "msmarco-dl19", "sample")


def choose_dataset(name: str = "nq-open", data_dir: Path | None = None) -> tuple[Dataset, bool]:
    """The named dataset, or the shipped sample (``True``) when no data folder exists.

    Raises ``ValueError`` for a dataset the quickstart does not run and
    :class:`MissingResourceError` for a ``data_dir`` that does not exist or lacks the
    dataset: only a data folder that is nowhere to be found falls back to the sample.
    """
    if name not in QUICKSTART_DATASETS:
        raise ValueError(
            f"the quickstart runs on {', '.join(QUICKSTART_DATASETS)}; got {name!r} (use "
            "`elasticir index`, `search` and `eval` for other datasets)"
        )
    if name == "sample":
        return sample_dataset(), False
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise MissingResourceError(f"--data-dir {data_dir}: no such directory")
        return get_dataset(name, root=data_dir), False
    try:
        root = data_root()
    except MissingResourceError:
        if os.environ.get("ELASTICIR_DATA"):
            raise  # named, but not there: say so rather than run on the sample
        return sample_dataset(), True
    return get_dataset(name, root=root), False


def run_quickstart(
    dataset: Dataset,
    *,
    index_root: Path = Path("indexes"),
    runs_root: Path = Path("runs"),
    k: int = 100,
    progress: bool = True,
    used_sample: bool = False,
) -> QuickstartResult:
    """Dense (flat), BM25 and RRF hybrid over ``dataset``; returns their measures.

    The quickstart's own index directories are rebuilt on every run (``overwrite``).
    """
    if dataset.corpus is None or dataset.queries is None:
        raise ValueError(f"dataset {dataset.name!r} has no corpus or queries to run on")
    encoder = api.load_encoder()
    dense_dir = index_root / f"{dataset.name}-minilm-flat"
    bm25_dir = index_root / f"{dataset.name}-bm25"
    api.build_index(
        api.IndexConfig(corpus=dataset.corpus, output=dense_dir, progress=progress, overwrite=True),
        encoder,
    )
    api.build_index(
        api.IndexConfig(
            corpus=dataset.corpus,
            output=bm25_dir,
            index_type=api.BM25,
            progress=progress,
            overwrite=True,
        )
    )
    runs: dict[str, Path] = {}
    results: dict[str, dict[str, float]] = {}
    for system, index_dir in (("dense", dense_dir), ("bm25", bm25_dir)):
        path = runs_root / f"{dataset.name}-{system}.trec"
        run = api.search(
            api.SearchConfig(index=index_dir, topics=dataset.queries, output=path, k=k, tag=system),
            encoder if system == "dense" else None,
        )
        runs[system] = path
        results[system] = _measure(run, dataset)
    hybrid = api.fuse_runs([runs["dense"], runs["bm25"]], "rrf", k=k)
    runs["hybrid-rrf"] = runs_root / f"{dataset.name}-hybrid-rrf.trec"
    write_run(runs["hybrid-rrf"], hybrid, tag="hybrid-rrf", k=k)
    results["hybrid-rrf"] = _measure(hybrid, dataset)
    return QuickstartResult(dataset.name, results, runs, used_sample)


def _measure(run: api.Run, dataset: Dataset) -> dict[str, float]:
    measures = ("nDCG@10", "RR@10", "R@100") if dataset.name != "msmarco-dl19" else dataset.measures
    return api.evaluate_run(
        run,
        qrels=dataset.qrels,
        measures=measures,
        qas=dataset.qas,
        corpus=dataset.corpus if dataset.qas else None,
        topics=dataset.queries,
        ks=(1, 5, 20),
    )
