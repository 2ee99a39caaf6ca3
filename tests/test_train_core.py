"""The step loop every trainer shares (:func:`elasticir.train.core.run_steps`), on a toy model:
what happens in each step and in which order, when checkpoints are written, and that a run
stopped by its ``on_step`` callback resumes from its checkpoint to the uninterrupted weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from elasticir.train.checkpoint import Checkpoint
from elasticir.train.core import lr_schedule, run_steps
from elasticir.train.denser import DenserTrainConfig


def toy(steps: int) -> tuple[torch.nn.Linear, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(steps, 0.2))
    return model, optimizer, scheduler


def body(model: torch.nn.Linear, events: list[Any]) -> Any:
    def one_step(step: int) -> dict[str, float]:
        assert all(p.grad is None for p in model.parameters())  # zero_grad came first
        x = torch.randn(4, 3)  # the global torch RNG, as the checkpoint restores it
        loss = model(x).pow(2).mean() + step
        loss.backward()
        events.append(("body", step))
        return {"total": float(loss.item())}

    return one_step


def test_each_step_runs_body_optimizer_history_bar_save_then_callback() -> None:
    model, optimizer, scheduler = toy(5)
    events: list[Any] = []
    history: list[dict[str, Any]] = [{"stage": 0, "step": 0}]
    before = model.weight.detach().clone()
    seconds = run_steps(
        body(model, events),
        optimizer,
        scheduler,
        list(model.parameters()),
        1.0,
        steps=5,
        checkpoint_every=2,
        save=lambda step, seconds, history: events.append(("save", step, len(history))),
        step=0,
        seconds=1.5,
        history=history,
        show=lambda step, record: events.append(("show", step)),
        on_step=lambda step, record: events.append(("on_step", step, record["total"])),
        tag={"stage": 1},
    )
    assert seconds > 1.5 and not torch.equal(before, model.weight)
    totals = [entry["losses"]["total"] for entry in history[1:]]
    assert events == [
        ("body", 1), ("show", 1), ("on_step", 1, totals[0]),
        ("body", 2), ("show", 2), ("save", 2, 3), ("on_step", 2, totals[1]),
        ("body", 3), ("show", 3), ("on_step", 3, totals[2]),
        ("body", 4), ("show", 4), ("save", 4, 5), ("on_step", 4, totals[3]),
        ("body", 5), ("show", 5), ("save", 5, 6), ("on_step", 5, totals[4]),
    ]  # fmt: skip
    assert [list(e) for e in history[1:]] == [["stage", "step", "lr", "losses"]] * 5
    assert [e["step"] for e in history[1:]] == [1, 2, 3, 4, 5]
    assert history[1]["lr"] == pytest.approx(0.1 * 1 / 2)  # the warm-up's first factor
    assert run_steps(  # already at the last step: nothing runs
        body(model, events),
        optimizer,
        scheduler,
        [],
        None,
        steps=5,
        checkpoint_every=2,
        save=lambda *_: pytest.fail("saved"),
        step=5,
        seconds=2.0,
        history=history,
        show=lambda *_: pytest.fail("shown"),
    ) == pytest.approx(2.0)


def test_a_run_stopped_by_its_callback_resumes_to_the_uninterrupted_weights(
    tmp_path: Path,
) -> None:
    def train(output: Path, stop_at: int | None = None) -> tuple[torch.nn.Linear, list]:
        config = DenserTrainConfig(output=output, steps=5, checkpoint_every=2)
        model, optimizer, scheduler = toy(5)
        checkpoint = Checkpoint(output / "state.pt", "toy", "key", config)
        step, seconds, history = checkpoint.resume(model, optimizer, scheduler)

        def stop(step: int, record: dict[str, float]) -> None:
            if step == stop_at:
                raise KeyboardInterrupt

        run_steps(
            body(model, []),
            optimizer,
            scheduler,
            list(model.parameters()),
            None,
            steps=5,
            checkpoint_every=2,
            save=lambda step, seconds, history: checkpoint.save(
                model, optimizer, scheduler, step, seconds, history
            ),
            step=step,
            seconds=seconds,
            history=history,
            show=lambda step, record: None,
            on_step=stop,
        )
        return model, history

    straight, straight_history = train(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", stop_at=3)  # after the step-2 checkpoint
    state = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert state["step"] == 2
    resumed, resumed_history = train(tmp_path / "resumed")
    assert torch.equal(straight.weight, resumed.weight) and torch.equal(straight.bias, resumed.bias)
    assert [(e["step"], e["lr"], e["losses"]) for e in resumed_history] == [
        (e["step"], e["lr"], e["losses"]) for e in straight_history
    ]
