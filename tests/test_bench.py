"""The benchmark helpers of :mod:`elasticir.bench`, and the rule that benchmark scripts take
them from there: no script imports another script or touches ``sys.path``."""

from __future__ import annotations

import ast
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from elasticir.bench import (
    DL_MEASURES,
    NQ_MEASURES,
    concat_stores,
    consistency_risk,
    cpu_info,
    cut_run,
    dense_search,
    encode,
    interleaved_rates,
    load_corpora,
    log,
    machine,
    median_rates,
    paired_bootstrap,
    report_path,
    trained_query_ids,
)
from elasticir.bench.machine import RELEVANT_FLAGS

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


# -- paired bootstrap ----------------------------------------------------------------------------
def _paired(n: int, shift: float, noise: float, seed: int = 1) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    before = rng.uniform(0.2, 0.8, n)
    after = before + shift + rng.normal(0.0, noise, n)
    return (
        {f"q{i}": float(v) for i, v in enumerate(before)},
        {f"q{i}": float(v) for i, v in enumerate(after)},
    )


def test_bootstrap_interval_covers_a_known_difference() -> None:
    before, after = _paired(200, shift=0.05, noise=0.05)
    low, high = paired_bootstrap(before, after)
    mean = 100 * np.mean([after[q] - before[q] for q in before])
    assert low < 5.0 < high  # in points: the true shift
    assert low < mean < high
    assert high - low < 3.0  # 200 queries pin it down to about +-0.7 points


def test_bootstrap_interval_of_a_constant_difference_is_that_difference() -> None:
    before, after = _paired(50, shift=0.03, noise=0.0)
    low, high = paired_bootstrap(before, after)
    assert low == pytest.approx(3.0) and high == pytest.approx(3.0)


def test_bootstrap_of_identical_scores_is_zero_width_at_zero() -> None:
    before, _ = _paired(43, shift=0.0, noise=0.0)
    assert paired_bootstrap(before, dict(before)) == (0.0, 0.0)


def test_bootstrap_is_reproducible_by_seed_and_ignores_dict_order() -> None:
    before, after = _paired(43, shift=0.01, noise=0.1)
    first = paired_bootstrap(before, after)
    assert paired_bootstrap(before, after) == first
    shuffled = dict(sorted(after.items(), key=lambda kv: random.Random(3).random()))
    assert paired_bootstrap(before, shuffled) == first  # queries are taken in sorted id order
    assert paired_bootstrap(before, after, seed=1) != first
    assert paired_bootstrap(before, after, seed=1) == paired_bootstrap(before, after, seed=1)


def test_bootstrap_refuses_different_or_no_queries() -> None:
    with pytest.raises(ValueError, match="different"):
        paired_bootstrap({"a": 0.5}, {"b": 0.5})
    with pytest.raises(ValueError, match="no"):
        paired_bootstrap({}, {})


def test_bootstrap_reproduces_a_committed_interval() -> None:
    """The interval in a committed report's targets, recomputed from its per-query scores."""
    path = ROOT / "results" / "denser-focus-4k.json"
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    report = json.loads(path.read_text(encoding="utf-8"))
    per_query = "dl19 nDCG@10 per query"
    full = report["levels"]["full"]["scores"]["384"][per_query]
    half = report["levels"]["L6-W50"]["scores"]["384"][per_query]
    low, high = paired_bootstrap(full, half)
    target = report["targets"]["<=50% FLOPs level within 1.0 nDCG@10 point of full (DL19)"]
    assert f"(95% CI {low:+.2f} to {high:+.2f})" in target["detail"]
    assert (round(low, 2), round(high, 2)) == (-7.95, -2.12)


# -- reports ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "out, suffix, expected",
    [
        ("results/rerank-cv-wise0.5", ".json", "results/rerank-cv-wise0.5.json"),
        ("results/rerank-cv-wise0.5", ".md", "results/rerank-cv-wise0.5.md"),
        ("results/foundation", ".md", "results/foundation.md"),
        ("results/foundation.json", ".md", "results/foundation.md"),
        ("results/foundation.md", ".json", "results/foundation.json"),
    ],
)
def test_report_path_appends_and_keeps_dots_in_names(out: str, suffix: str, expected: str) -> None:
    assert report_path(Path(out), suffix) == Path(expected)


def test_log_writes_a_timestamped_line_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    log("encoding corpora")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] encoding corpora\n", captured.err)


def test_measure_sets() -> None:
    assert DL_MEASURES == ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100")
    assert NQ_MEASURES == ("RR@10",)


# -- machine ---------------------------------------------------------------------------------
X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile hypervisor

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32 asimddp sve bf16 i8mm
CPU implementer\t: 0x41
"""


def test_cpu_info_reads_the_model_and_relevant_flags_in_order() -> None:
    info = cpu_info(X86_CPUINFO)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16"] + [
        "amx_tile",
        "amx_bf16",
    ]  # RELEVANT_FLAGS order; fpu and hypervisor are left out; the first core's line counts


def test_cpu_info_reads_arm_features_and_never_takes_a_core_index_for_a_model() -> None:
    info = cpu_info(ARM_CPUINFO)
    assert info["flags"] == ["asimd", "asimddp", "sve", "bf16", "i8mm"]
    assert info["model"] and info["model"] != "0"


def test_cpu_info_without_cpuinfo_names_the_architecture() -> None:
    info = cpu_info("")
    assert info["flags"] == [] and info["model"]


def test_machine_records_the_cpu_and_its_flags() -> None:
    report = machine()
    for key in ("python", "torch", "threads", "cpu", "cores"):  # what reports always had
        assert key in report
    assert json.loads(json.dumps(report)) == report  # goes into the JSON reports as it is
    assert isinstance(report["cpu_model"], str) and report["cpu_model"]
    assert isinstance(report["flags"], list) and set(report["flags"]) <= set(RELEVANT_FLAGS)
    cpuinfo = Path("/proc/cpuinfo")
    if not sys.platform.startswith("linux") or not cpuinfo.exists():
        return
    text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
    if names:
        assert report["cpu_model"] == names[0].strip()
    lines = re.findall(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    if lines:
        present = set(lines[0].split())
        assert report["flags"] == [f for f in RELEVANT_FLAGS if f in present]
        if "avx2" in present:
            assert "avx2" in report["flags"]


# -- timing ----------------------------------------------------------------------------------
class _Counting:
    """A scorer that records who scored in which order."""

    def __init__(self, label: str, calls: list[str]) -> None:
        self.label, self.calls = label, calls

    def score(self, text: str, docs: list) -> list[float]:
        self.calls.append(self.label)
        return [float(len(text) + i) for i, _ in enumerate(docs)]


def test_interleaved_rates_time_every_scorer_every_round_in_seeded_order() -> None:
    calls: list[str] = []
    scorers = {label: _Counting(label, calls) for label in ("a", "b", "c")}
    work = [("query one", ["p1", "p2", "p3"]), ("query two", ["p4"])]
    rates = interleaved_rates(scorers, work, rounds=3, min_seconds=0.0)
    assert set(rates) == {"a", "b", "c"}
    assert all(len(r) == 3 and all(x > 0 for x in r) for r in rates.values())
    # min_seconds=0: one pass (both queries) per scorer per round, in Random(round)'s order
    order = calls[::2]
    expected = [x for r in range(3) for x in random.Random(r).sample(["a", "b", "c"], 3)]
    assert order == expected


def test_interleaved_rates_repeat_passes_until_min_seconds() -> None:
    calls: list[str] = []
    rates = interleaved_rates({"a": _Counting("a", calls)}, [("q", ["p"])], 1, min_seconds=0.02)
    assert len(calls) > 1  # a trivial pass is far shorter than 20 ms
    assert 0 < rates["a"][0] <= len(calls) / 0.02  # passes done over at least 20 ms


def test_median_rates_take_medians_and_ratios_within_rounds() -> None:
    rates = {"fast": [10.0, 40.0, 30.0], "full": [5.0, 10.0, 30.0]}
    table = median_rates(rates, lambda label: "full", "speedup_vs_full")
    assert table == {
        "fast": {"pairs_per_s": 30.0, "speedup_vs_full": 2.0},  # ratios 2, 4, 1
        "full": {"pairs_per_s": 10.0, "speedup_vs_full": 1.0},
    }


# -- reranking helpers -----------------------------------------------------------------------
def test_cut_run_keeps_the_top_depth_of_evaluated_queries() -> None:
    run = {"q1": {"a": 1.0, "b": 3.0, "c": 3.0, "d": 0.5}, "q2": {"x": 1.0}}
    assert cut_run(run, 2, {"q1"}) == {"q1": {"b": 3.0, "c": 3.0}}
    assert list(cut_run(run, 3, {"q1", "q2"})["q1"]) == ["b", "c", "a"]  # ties by doc id


def test_concat_stores_joins_ids_and_stacks_vectors() -> None:
    a = (["x", "y"], np.ones((2, 3), dtype=np.float32))
    b = (["z"], np.zeros((1, 3), dtype=np.float32))
    ids, vectors = concat_stores(a, b)
    assert ids == ["x", "y", "z"] and vectors.shape == (3, 3) and vectors[2].sum() == 0


def test_load_corpora_reads_every_corpus_by_doc_id() -> None:
    from elasticir.data import load_passages, sample_dataset

    corpus = sample_dataset().corpus
    single = load_passages(corpus)
    assert load_corpora([corpus]) == single
    assert load_corpora([corpus, corpus]) == single
    assert load_corpora([]) == {}


def test_trained_query_ids_reads_the_anchor_groups() -> None:
    ranker = SimpleNamespace(manifest={"training": {"data": {"anchor": {"query_ids": ["1", "2"]}}}})
    assert trained_query_ids(ranker) == {"1", "2"}
    assert trained_query_ids(SimpleNamespace(manifest={})) == set()
    assert trained_query_ids(SimpleNamespace(manifest={"training": {"data": None}})) == set()


def test_consistency_risk_is_zero_for_the_same_order_and_grows_when_it_changes() -> None:
    full = {"q": {f"d{i}": float(20 - i) for i in range(20)}}
    assert consistency_risk(full, full) == 0.0
    reversed_ = {"q": {d: -s for d, s in full["q"].items()}}
    assert 0.0 < consistency_risk(reversed_, full) <= 1.0
    without_top = {"q": {d: s for d, s in full["q"].items() if d != "d0"}}
    assert consistency_risk(without_top, full) > 0.0  # a missing document counts as last


@pytest.mark.usefixtures("one_torch_thread")
def test_encode_caches_the_store_and_dense_search_is_exact(
    denser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elasticir.bench import stores
    from elasticir.data import read_topics, sample_dataset
    from elasticir.index.store import EmbeddingStore

    monkeypatch.setattr(stores, "WORK", tmp_path / "bench")
    sample = sample_dataset()
    path = encode(denser, sample.corpus, "sample")
    assert path == tmp_path / "bench" / "sample.embeddings"
    ids, vectors = EmbeddingStore(path).load()
    assert len(ids) == len(load_corpora([sample.corpus])) == vectors.shape[0]
    assert encode(denser, sample.corpus, "sample") == path  # reused as it is

    queries = read_topics(sample.queries)[:3]
    run = dense_search(denser, (ids, vectors), queries, depth=5)
    expected = denser.encode_queries([q.text for q in queries]) @ vectors.T
    for q, row in zip(queries, expected):
        assert len(run[q.query_id]) == 5
        top = sorted(run[q.query_id].items(), key=lambda kv: -kv[1])
        assert [d for d, _ in top] == [ids[i] for i in np.argsort(-row, kind="stable")[:5]]
        for doc, score in top:
            assert score == pytest.approx(float(row[ids.index(doc)]), abs=1e-5)


# -- how benchmark scripts and the library use this package -----------------------------------
def test_no_benchmark_touches_sys_path() -> None:
    files = [p for p in BENCHMARKS.iterdir() if p.is_file()]
    offenders = [p.name for p in files if "sys.path" in p.read_text(encoding="utf-8")]
    assert offenders == [], f"import from elasticir.bench instead: {offenders}"


def test_no_benchmark_imports_another_benchmark() -> None:
    names = {p.stem for p in SCRIPTS}
    crossing = []
    for path in SCRIPTS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module.split(".")[0]]
            else:
                continue
            crossing += [f"{path.name}:{node.lineno}: {m}" for m in modules if m in names]
    assert crossing == [], crossing


def _elasticir_imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
    return [(m, names) for m, names in out if m.split(".")[0] == "elasticir"]


def test_only_benchmarks_and_tests_import_elasticir_bench() -> None:
    library = [*(ROOT / "elasticir").rglob("*.py"), *(ROOT / "cli").glob("*.py")]
    bench = ROOT / "elasticir" / "bench"
    users = [
        str(path.relative_to(ROOT))
        for path in library
        if bench not in path.parents
        for module, _ in _elasticir_imports(path)
        if module == "elasticir.bench" or module.startswith("elasticir.bench.")
    ]
    assert users == [], f"library modules must not import elasticir.bench: {users}"


def test_elasticir_bench_uses_no_cli_and_no_private_names() -> None:
    wrong = []
    for path in sorted((ROOT / "elasticir" / "bench").glob("*.py")):
        for module, names in _elasticir_imports(path):
            if module.startswith("elasticir.cli"):
                wrong.append(f"{path.name}: {module}")
            if not module.startswith("elasticir.bench"):
                wrong += [f"{path.name}: {module}.{n}" for n in names if n.startswith("_")]
    assert wrong == [], wrong


def test_importing_elasticir_bench_is_silent_and_light() -> None:
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import elasticir.bench\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'jnius') if m in sys.modules]\n"
        "print(','.join(heavy), dict(os.environ) == before)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (done.stdout, done.stderr) == (" True\n", "")
