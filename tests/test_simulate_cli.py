"""`elasticir simulate` end to end on a hand-made points file (no model): the reports it
writes, the overhead taken from a real run's records, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elasticir.cli.app import app
from typer.testing import CliRunner

from elasticir.schedule.choices import Choice
from elasticir.schedule.points import CostModel, OperatingPoint, OperatingPoints
from elasticir.schedule.report import RequestRecord, write_records

runner = CliRunner()


@pytest.fixture
def points_file(tmp_path: Path) -> Path:
    def point(choice: str, fixed: float, per: float, quality: float) -> OperatingPoint:
        per_query = {f"q{i}": quality for i in range(4)}
        return OperatingPoint(
            Choice.parse(choice),
            CostModel(fixed, per, (0.9, 1.0, 1.2)),
            {"RR@10": quality},
            per_query,
        )

    points = OperatingPoints(
        [point("L2-W50", 0.002, 0.001, 0.5), point("full", 0.008, 0.004, 0.7)],
        "RR@10",
        dev={"query_ids": [f"q{i}" for i in range(4)]},
    )
    path = tmp_path / "points.json"
    points.save(path)
    return path


def simulate(points: Path, out: Path, *extra: str):
    args = [
        "simulate", "--points", str(points), "--trace", "poisson", "--rate", "40",
        "--duration", "5", "--slo-ms", "60", "-o", str(out), "-q", *extra,
    ]  # fmt: skip
    return runner.invoke(app, args)


def summary(out: Path, policy: str) -> dict:
    return json.loads((out / policy / "summary.json").read_text())


def test_simulate_writes_a_report_per_policy_and_a_table(points_file: Path, tmp_path: Path):
    out = tmp_path / "sim"
    result = simulate(points_file, out, "--policy", "deadline;frontier")
    assert result.exit_code == 0, result.output
    for policy in ("deadline", "static_L2-W50", "static_full"):
        for name in ("requests.jsonl", "summary.json", "summary.md", "timeseries.png"):
            assert (out / policy / name).stat().st_size > 0, (policy, name)
        got = summary(out, policy)["summary"]
        assert got["count"] > 100 and got["answered"] == got["count"]
    assert "static:full" in (out / "comparison.md").read_text()
    # the cheap choice answers faster than the full one, and the full one is worth more
    cheap, full = summary(out, "static_L2-W50")["summary"], summary(out, "static_full")["summary"]
    assert cheap["p50_ms"] < full["p50_ms"] and cheap["mean_quality"] < full["mean_quality"]
    # an output folder with files in it is not overwritten without --overwrite
    again = simulate(points_file, out, "--policy", "deadline")
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_overhead_drawn_from_a_real_runs_records(points_file: Path, tmp_path: Path):
    records = [
        RequestRecord(i, "q0", i * 0.1, 0.025, "ok", "full", 1.0, server_latency=0.005)
        for i in range(20)
    ]  # every answer spent 20 ms outside the server's clock
    path = tmp_path / "requests.jsonl"
    write_records(path, records)
    plain, drawn = tmp_path / "plain", tmp_path / "drawn"
    assert simulate(points_file, plain, "--policy", "static:L2-W50").exit_code == 0
    result = simulate(points_file, drawn, "--policy", "static:L2-W50", "--overhead-from", path)
    assert result.exit_code == 0, result.output
    a, b = summary(plain, "static_L2-W50"), summary(drawn, "static_L2-W50")
    # 20 ms later (the service-time draws differ a little: the draws of the overhead interleave)
    assert b["summary"]["p50_ms"] == pytest.approx(a["summary"]["p50_ms"] + 20, abs=1.0)
    assert b["meta"]["overhead_from"] == str(path)
    # both ways of giving it at once, and records without the server's latency, are refused
    both = simulate(
        points_file, tmp_path / "both", "--overhead-ms", "2", "--overhead-from", str(path)
    )
    assert both.exit_code != 0 and "not both" in both.output
    bare = tmp_path / "bare.jsonl"
    write_records(bare, [RequestRecord(0, "q0", 0.0, 0.01, "ok", "full", 1.0)])
    refused = simulate(points_file, tmp_path / "bare", "--overhead-from", str(bare))
    assert refused.exit_code != 0 and "server's own latency" in refused.output
