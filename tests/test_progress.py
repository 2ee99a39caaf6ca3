"""Plain-line progress, used when stderr is not a terminal (runs under nohup, logs)."""

import io

import pytest

from elasticir.progress import line_progress, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_rate_limited_and_the_last_state_is_always_written():
    stream, clock = io.StringIO(), FakeClock()
    with line_progress(stream, 10, "training", log_every=30, clock=clock) as advance:
        advance(1, status="loss 1.0")  # t=0: too soon after the start, nothing written
        clock.now = 31
        advance(2, status="loss 0.5")  # written: 3/10
        clock.now = 40
        advance(1)  # 9 s after the last line: held back
        clock.now = 50
        advance(1)  # held back too; the end writes the final count
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("training: 3/10  elapsed 0:00:31")
    assert "left ~0:01:12" in lines[0]  # 31 s for 3 items, 7 to go
    assert lines[0].endswith("loss 0.5")
    assert lines[1].startswith("training: 5/10  elapsed 0:00:50")


def test_a_resumed_run_estimates_from_its_own_items_and_an_error_still_reports():
    stream, clock = io.StringIO(), FakeClock()
    with pytest.raises(RuntimeError):
        with line_progress(stream, 100, "steps", completed=90, log_every=5, clock=clock) as adv:
            clock.now = 10
            adv(5)  # 5 new items in 10 s, 5 left: ~10 s
            clock.now = 12
            adv(1)
            raise RuntimeError("killed")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "steps: 95/100  elapsed 0:00:10  left ~0:00:10"
    assert lines[1].startswith("steps: 96/100  elapsed 0:00:12")


def test_progress_bar_writes_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("ELASTICIR_PROGRESS_SECONDS", "0")
    with progress_bar(True, 3, "encoding") as advance:
        advance(3)
    err = capsys.readouterr().err
    assert "encoding: 3/3" in err


def test_disabled_progress_writes_nothing(capsys):
    with progress_bar(False, 3, "encoding") as advance:
        advance(3)
    assert capsys.readouterr().err == ""
