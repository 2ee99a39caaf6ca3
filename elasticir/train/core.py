"""The training loop's shared parts: device, threads, the optimiser step and its
schedule, the step loop itself (:func:`run_steps`), seeded batches, the progress bar, and the
checks of a run's output directory.

Every trainer (``elasticir.train.denser``, ``.ranker``, ``.dipair``, ``.projection``) uses
these; the resumable state itself is :class:`elasticir.train.checkpoint.Checkpoint`, and the
keys of runs and caches are :mod:`elasticir.train.keys`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from elasticir.data.manifest import MODEL_MANIFEST
from elasticir.progress import progress_bar
from elasticir.train.config import TrainConfigFile, check_training_output

__all__ = [
    "already_finished",
    "check_model_output",
    "choose_device",
    "finished_key",
    "lr_schedule",
    "mark_trainable",
    "optimizer_step",
    "run_steps",
    "shuffled_rows",
    "torch_threads",
    "training_bar",
]


# --------------------------------------------------------------------------- where and how fast


def choose_device(name: str | None) -> torch.device:
    """The device a config names, else CUDA when there is one, else the CPU."""
    if name is not None:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch on ``threads`` intra-op threads inside the block (None: unchanged), restored after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- optimisation


def mark_trainable(model: torch.nn.Module, word_embeddings: bool) -> list[torch.nn.Parameter]:
    """Marks what is trained (all but the word embeddings, unless ``word_embeddings``) and
    returns it."""
    trainable = []
    for name, parameter in model.named_parameters():
        frozen = "word_embeddings" in name and not word_embeddings
        parameter.requires_grad_(not frozen)
        if not frozen:
            trainable.append(parameter)
    return trainable


def lr_schedule(total: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup * total`` updates, then linear decay; never exactly 0."""
    warm = int(round(warmup * total))

    def factor(update: int) -> float:
        if update < warm:
            return (update + 1) / (warm + 1)
        return max(total - update, 1) / max(total - warm, 1)

    return factor


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    parameters: list[torch.nn.Parameter],
    max_grad_norm: float | None,
) -> float:
    """Clip the gradients of ``parameters`` (unless ``max_grad_norm`` is None), then step the
    optimizer and its schedule; returns the learning rate the step used."""
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return lr


Record = TypeVar("Record")


def run_steps(
    step_fn: Callable[[int], Record],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    parameters: list[torch.nn.Parameter],
    max_grad_norm: float | None,
    *,
    steps: int,
    checkpoint_every: int,
    save: Callable[[int, float, list[dict[str, Any]]], None],
    step: int,
    seconds: float,
    history: list[dict[str, Any]],
    show: Callable[[int, Record], None],
    on_step: Callable[[int, Record], None] | None = None,
    tag: dict[str, Any] | None = None,
) -> float:
    """The optimizer steps ``step + 1 .. steps`` of a run resumed at ``step`` (0: a new one)
    with ``seconds`` and ``history`` so far; returns the run's seconds, ``history`` extended.

    Each step: ``zero_grad``, ``step_fn(step)`` (the trainer's body: its batch, its losses and
    their ``backward``, returning the step's record of losses), the clipped optimizer step and
    its schedule (:func:`optimizer_step`), then ``{**tag, "step", "lr", "losses": record}``
    appended to ``history``, ``show(step, record)``, ``save(step, seconds, history)`` every
    ``checkpoint_every`` steps and after the last, and last ``on_step(step, record)`` (so an
    exception from it stops the run after that step's checkpoint, as a kill would).
    ``seconds`` count the steps only, not the saving nor the callbacks.
    """
    while step < steps:
        started = time.perf_counter()
        step += 1
        optimizer.zero_grad(set_to_none=True)
        record = step_fn(step)
        lr = optimizer_step(optimizer, scheduler, parameters, max_grad_norm)
        seconds += time.perf_counter() - started
        history.append({**(tag or {}), "step": step, "lr": lr, "losses": record})
        show(step, record)
        if step % checkpoint_every == 0 or step == steps:
            save(step, seconds, history)
        if on_step is not None:
            on_step(step, record)
    return seconds


def shuffled_rows(
    n: int,
    size: int,
    step: int,
    seed: tuple[int, ...],
    orders: dict[tuple[int, ...], np.ndarray],
) -> np.ndarray:
    """The ``size`` rows (of ``n``) of 1-based ``step``: consecutive slices of per-epoch
    shuffles, epoch ``e``'s drawn from ``(*seed, e)`` and kept in ``orders``."""
    positions = np.arange((step - 1) * size, step * size)
    rows = np.empty(size, dtype=np.int64)
    for epoch in np.unique(positions // n):
        key = (*seed, int(epoch))
        if key not in orders:
            orders[key] = np.random.default_rng(list(key)).permutation(n)
        inside = positions // n == epoch
        rows[inside] = orders[key][positions[inside] % n]
    return rows


@contextmanager
def training_bar(
    enabled: bool, total: int, done: int
) -> Iterator[Callable[[int, dict[str, dict[str, float]]], None]]:
    """A bar over the steps showing the latest ``"total"`` loss of each entry of a step's
    record (a level, a width, a stage)."""
    latest: dict[str, float] = {}
    shown = [done]
    with progress_bar(enabled, total, "training", completed=done) as advance:

        def show(step: int, record: dict[str, dict[str, float]]) -> None:
            for level, values in record.items():
                latest[level] = values["total"]
            text = "  ".join(f"{level} {value:.4f}" for level, value in latest.items())
            advance(step - shown[0], status=text)
            shown[0] = step

        yield show


# --------------------------------------------------------------------------- the output directory


def check_model_output(config: TrainConfigFile) -> None:
    """:func:`~elasticir.train.config.check_training_output` of ``config.output``, which also
    must not be the base model's directory nor hold a model this command did not write."""
    output = config.output  # type: ignore[attr-defined]
    check_training_output(output)
    if config.base_model is not None and Path(config.base_model).exists():
        if Path(config.base_model).resolve() == output.resolve():
            raise ValueError("the output directory is the base model's: choose another one")
    if (output / "config.json").is_file() and not (output / MODEL_MANIFEST).is_file():
        if not (output / "checkpoint").is_dir():
            raise ValueError(
                f"{output} holds a model that this command did not write; choose another "
                "output directory"
            )


def finished_key(output: Path) -> str | None:
    """The training key of the finished model in ``output`` (None when there is none yet);
    raises when ``output`` holds a model that was not trained here."""
    manifest = output / MODEL_MANIFEST
    if not manifest.is_file():
        return None
    training = json.loads(manifest.read_text(encoding="utf-8")).get("training")
    if not isinstance(training, dict):
        raise ValueError(
            f"{output} holds a model that this command did not train; choose another output"
        )
    return training.get("key")


def already_finished(output: Path, key: str) -> bool:
    """Whether ``output`` already holds the finished model of run ``key`` (a rerun returns it
    at once); raises when it holds a model trained with other settings."""
    finished = finished_key(output)
    if finished == key:
        return True
    if finished is not None:
        raise ValueError(
            f"{output} already holds a model trained with other settings; use another "
            "output directory (or delete that one)"
        )
    return False
