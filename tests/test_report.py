"""The run report shared by the load generator and the simulator, on hand-made records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from elasticir.data.errors import InputFormatError
from elasticir.schedule.report import (
    RequestRecord,
    comparison_table,
    read_records,
    read_report,
    summarize,
    write_report,
)

SLO = 0.1


def hand_made() -> list[RequestRecord]:
    """Eight requests, one a second: a late answer, a refusal, a failure, an unjudged query."""
    rows = [  # qid, latency, status, choice, quality
        ("a", 0.010, "ok", "A", 1.0),
        ("b", 0.020, "ok", "A", 0.5),
        ("a", 0.050, "ok", "B", 0.8),
        ("b", 0.300, "ok", "B", 0.9),  # late: answered, but worth 0
        ("a", 0.001, "rejected", None, None),
        ("c", None, "error", None, None),
        ("c", 0.040, "ok", "A", None),  # c is unjudged
        ("a", 0.030, "ok", "A", 0.0),
    ]
    records = [
        RequestRecord(i, qid, float(i), lat, status, choice, quality, queue_length=i, batch_size=1)
        for i, (qid, lat, status, choice, quality) in enumerate(rows)
    ]
    records[0].doc_ids = ["d1", "d2"]
    return records[::-1]  # the order of the list does not matter, the intended time does


def test_summary_of_hand_made_records() -> None:
    s = summarize(hand_made(), SLO, duration=10.0)
    assert (s["count"], s["answered"], s["late"], s["rejected"], s["errors"]) == (8, 6, 1, 1, 1)
    # answered latencies 10, 20, 30, 40, 50, 300 ms; linear interpolation between ranks
    assert s["p50_ms"] == pytest.approx(35.0)
    assert s["p95_ms"] == pytest.approx(237.5)
    assert s["p99_ms"] == pytest.approx(287.5)
    assert s["max_ms"] == pytest.approx(300.0)
    assert s["within_slo"] == pytest.approx(5 / 8)  # of all requests, not of the answered
    assert s["goodput"] == pytest.approx(0.5)
    assert s["offered_rate"] == pytest.approx(0.8) and s["answered_rate"] == pytest.approx(0.6)
    assert s["judged"] == 6  # a and b (c never has a quality)
    assert s["mean_quality"] == pytest.approx((1.0 + 0.5 + 0.8 + 0.9 + 0.0) / 5)
    # the late one and the refused one count 0
    assert s["effective_quality"] == pytest.approx((1.0 + 0.5 + 0.8 + 0 + 0 + 0.0) / 6)
    # answered in intended order: A A B B A A -> two switches in five steps
    assert s["switch_rate"] == pytest.approx(0.4)
    assert s["choice_shares"] == pytest.approx({"A": 4 / 6, "B": 2 / 6})
    assert s["slo_ms"] == pytest.approx(100.0)


def test_time_outside_the_server_is_client_minus_server_latency() -> None:
    records = hand_made()
    assert summarize(records, SLO, 10.0)["outside_p50_ms"] is None  # no server timings
    by_id = {r.id: r for r in records}
    for i, server in ((0, 0.006), (1, 0.017), (2, 0.046)):  # 4, 3 and 4 ms outside
        by_id[i].server_latency = server
    by_id[4].server_latency = 0.0  # a refusal's timing is not an answer's: ignored
    assert summarize(records, SLO, 10.0)["outside_p50_ms"] == pytest.approx(4.0)


def test_judged_queries_can_be_named() -> None:
    s = summarize(hand_made(), SLO, 10.0, judged={"a", "b", "c"})
    # c's failed request and its on-time answer without a quality count 0 as well
    assert s["judged"] == 8
    assert s["effective_quality"] == pytest.approx(2.3 / 8)


def test_empty_and_degenerate_runs_give_none_not_nan() -> None:
    for records, duration in (([], 10.0), ([], 0.0), (hand_made()[:1], 0.0)):
        s = summarize(records, SLO, duration)
        json.dumps(s, allow_nan=False)  # no NaN anywhere
        assert s["switch_rate"] is None
    empty = summarize([], SLO, 10.0)
    assert empty["count"] == 0 and empty["p95_ms"] is None and empty["within_slo"] is None
    assert empty["effective_quality"] is None and empty["choice_shares"] == {}
    assert empty["goodput"] == 0.0


def test_report_files_exist_parse_and_round_trip(tmp_path: Path) -> None:
    records = sorted(hand_made(), key=lambda r: r.id)
    summary = summarize(records, SLO, 8.0)
    meta = {
        "trace": "step:high=3",
        "rate": 1.0,
        "policy": "queue",
        "metric": "nDCG@10",
        "odd": float("nan"),
        "machine": {"cpu_model": "Test CPU", "cores": 2, "flags": ["avx2"], "python": "3.11"},
    }
    paths = write_report(tmp_path / "run", records, summary, meta)
    assert set(paths) == {"requests", "summary", "markdown", "timeseries"}
    assert read_records(paths["requests"]) == records
    payload = json.loads(
        paths["summary"].read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON")
    )
    assert payload == read_report(tmp_path / "run")
    assert payload["summary"]["count"] == 8 and payload["meta"]["odd"] is None
    markdown = paths["markdown"].read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and "| run | queue | step:high=3 |" in rows[1]
    assert "machine: Test CPU, 2 cores (flags: avx2), Python 3.11" in markdown
    png = paths["timeseries"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".tmp-")]


def test_comparison_table_has_a_row_per_run() -> None:
    fast = {"meta": {"name": "fast", "policy": "static:L4", "trace": "poisson", "rate": 50}}
    fast["summary"] = summarize(sorted(hand_made(), key=lambda r: r.id), SLO, 8.0)
    slow = {"meta": {"name": "slow", "policy": "deadline"}, "summary": summarize([], SLO, 8.0)}
    table = comparison_table([fast, slow])
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert "| fast | static:L4 | poisson | 50 | 35.0 | 237.5 | 287.5 | 62.5% |" in lines[2]
    assert lines[3].startswith("| slow | deadline | - | 0 | - |")


def test_bad_request_lines_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    good = json.dumps({"id": 0, "qid": "a", "intended": 0.0, "latency": None, "status": "ok"})
    for bad, expected in (
        ("not json", "expected a JSON request record"),
        (json.dumps({"id": 1}), "expected an object with id, qid"),
        (good.replace('"ok"', '"fine"'), "expected status ok, rejected, error"),
    ):
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(InputFormatError, match=f"{path}:2: {expected}"):
            read_records(path)


def test_percentiles_are_finite_on_one_answer() -> None:
    s = summarize([RequestRecord(0, "a", 0.0, 0.02, "ok", "A")], SLO, 1.0)
    assert s["p50_ms"] == s["p99_ms"] == s["max_ms"] == pytest.approx(20.0)
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in s.values())
