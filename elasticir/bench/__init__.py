"""Helpers shared by the benchmark scripts in ``benchmarks/``.

What every report needs (:func:`machine`, :func:`report_path`, :func:`log`), timing in
interleaved rounds (:func:`interleaved_rates`, :func:`median_rates`), the paired bootstrap of
per-query differences (:func:`paired_bootstrap`), the cached embedding stores under
``indexes/bench/`` (:func:`encode`, :data:`WORK`), first stages for reranking
(:mod:`elasticir.bench.reranking`) and the measure sets of the quality tables.

Benchmark scripts import these from here, never from one another. No other ``elasticir``
module imports this package, and importing it loads no model, prints nothing and sets no
environment variable (torch and FAISS load on first use).
"""

from elasticir.bench.machine import cpu_info, machine
from elasticir.bench.measures import DL_MEASURES, NQ_MEASURES
from elasticir.bench.reports import log, report_path
from elasticir.bench.reranking import (
    concat_stores,
    consistency_risk,
    cut_run,
    dense_search,
    load_corpora,
    trained_query_ids,
)
from elasticir.bench.stores import WORK, encode
from elasticir.bench.timing import interleaved_rates, median_rates
from elasticir.eval.significance import paired_bootstrap

__all__ = [
    "DL_MEASURES",
    "NQ_MEASURES",
    "WORK",
    "concat_stores",
    "consistency_risk",
    "cpu_info",
    "cut_run",
    "dense_search",
    "encode",
    "interleaved_rates",
    "load_corpora",
    "log",
    "machine",
    "median_rates",
    "paired_bootstrap",
    "report_path",
    "trained_query_ids",
]
