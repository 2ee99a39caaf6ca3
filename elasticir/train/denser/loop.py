"""ElasticDenser's training loop: :func:`train_denser`.

Each step applies the **sandwich rule**: the full level, the smallest level and one random
middle level of the menu (plus the config's ``focus`` levels), each adding its listwise
distillation and alignment loss (:mod:`elasticir.train.losses.listwise`) to one optimizer
step; ``sandwich=False`` trains only the listed ``levels`` (a static, one-level baseline).

What it keeps in ``<output>``, besides the teacher caches
(:mod:`elasticir.train.denser.distillation`)::

    checkpoint/state.pt      student + optimizer + scheduler + step + RNG states, every
                             ``checkpoint_every`` steps (removed once the model is written)
    config.json, model.safetensors, tokenizer files, elasticir.json, training-log.jsonl

Everything is seeded and resumable: batches and middle levels are drawn from generators seeded
by ``(seed, step)``; a rerun of the same config after a kill resumes from the last checkpoint
and ends with the weights an uninterrupted run ends with (same device and thread count).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elasticir.compute.levels import FULL, Level
from elasticir.data.manifest import MODEL_MANIFEST, write_json
from elasticir.models.elastic import Importance, level_menu
from elasticir.train.checkpoint import Checkpoint
from elasticir.train.core import (
    already_finished,
    check_model_output,
    lr_schedule,
    mark_trainable,
    run_steps,
    torch_threads,
    training_bar,
)
from elasticir.train.denser.config import DenserTrainConfig, check_focus
from elasticir.train.denser.distillation import Distillation, prepare_distillation
from elasticir.train.denser.student import initial_student

__all__ = ["CHECKPOINT_FORMAT", "denser_optimizer", "level_plan", "train_denser"]

CHECKPOINT_FORMAT = "elasticir-train-checkpoint"


def train_denser(
    config: DenserTrainConfig,
    progress: bool = True,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None = None,
) -> Path:
    """Train the elastic query encoder of ``config``; returns the model directory.

    Resumable: rerunning the same config continues from ``<output>/checkpoint/state.pt``, and
    returns at once when ``<output>`` already holds the finished model. ``on_step(step,
    losses)`` is called after each optimizer step with ``{level: {"kl", "align", "total"}}``
    (an exception from it stops the run like a kill would).
    """
    output = config.output
    check_model_output(config)
    with torch_threads(config.threads):
        distillation = prepare_distillation(config, progress)
        if already_finished(output, distillation.key):
            return output
        return _train(config, distillation, progress, on_step)


def _train(
    config: DenserTrainConfig,
    distillation: Distillation,
    progress: bool,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None,
) -> Path:
    model, importance = initial_student(config, distillation)
    menu = level_menu(model.config, config.levels)
    model.train(config.dropout)  # dropout off by default: the full level starts at the teacher
    parameters = mark_trainable(model, config.train_word_embeddings)
    optimizer = denser_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(config.steps, config.warmup)
    )
    checkpoint = Checkpoint(
        config.output / "checkpoint" / "state.pt", CHECKPOINT_FORMAT, distillation.key, config
    )
    step, seconds, history = checkpoint.resume(model, optimizer, scheduler)
    plan = level_plan(config, menu)

    def one_step(step: int) -> dict[str, dict[str, float]]:
        rows = distillation.batch(step)
        record: dict[str, dict[str, float]] = {}
        for level in plan(step):
            loss = distillation.losses(model, rows, level)
            loss.total.backward()
            record[str(level)] = loss.values()
        return record

    with training_bar(progress, config.steps, step) as show:
        seconds = run_steps(
            one_step,
            optimizer,
            scheduler,
            parameters,
            config.max_grad_norm,
            steps=config.steps,
            checkpoint_every=config.checkpoint_every,
            save=partial(checkpoint.save, model, optimizer, scheduler),
            step=step,
            seconds=seconds,
            history=history,
            show=show,
            on_step=on_step,
        )
    _write_model(config, distillation, model, importance, menu, seconds, history)
    shutil.rmtree(checkpoint.path.parent, ignore_errors=True)
    return config.output


def level_plan(config: DenserTrainConfig, menu: tuple[Level, ...]) -> Callable[[int], list[Level]]:
    """The levels trained at each step: the sandwich (full, smallest, one random middle, plus
    the ``focus`` levels) or, for a static run, exactly the listed levels."""
    if not config.sandwich:
        static = [Level(lv) for lv in config.levels or ()]  # unique and canonical already
        return lambda step: static
    focus = check_focus(config, menu)
    smallest = menu[-1]
    middle = [lv for lv in menu[1:-1] if lv not in focus]

    def sandwich(step: int) -> list[Level]:
        levels = [FULL] if len(menu) == 1 else [FULL, smallest]
        if middle:
            rng = np.random.default_rng([config.seed, 211, step])
            levels.insert(1, middle[int(rng.integers(len(middle)))])
        extra = [lv for lv in focus if lv not in levels]
        return levels[:1] + extra + levels[1:]

    return sandwich


def denser_optimizer(model: torch.nn.Module, config: DenserTrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trained parameters, biases and LayerNorms without weight decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            no = name.endswith("bias") or "LayerNorm" in name
            (no_decay if no else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


def _final_losses(history: list[dict[str, Any]], steps: int) -> dict[str, dict[str, float]]:
    """Per level, the mean of its last ``max(1, steps // 10)`` recorded losses."""
    window = max(1, steps // 10)
    seen: dict[str, list[dict[str, float]]] = {}
    for entry in history:
        for level, values in entry["losses"].items():
            seen.setdefault(level, []).append(values)
    return {
        level: {
            name: float(np.mean([v[name] for v in values[-window:]]))
            for name in ("kl", "align", "total")
        }
        for level, values in seen.items()
    }


def _write_model(
    config: DenserTrainConfig,
    distillation: Distillation,
    model: torch.nn.Module,
    importance: Importance,
    menu: tuple[Level, ...],
    seconds: float,
    history: list[dict[str, Any]],
) -> None:
    """Weights, tokenizer and log first, each file renamed into place; ``elasticir.json``
    (the mark of a finished model) last."""
    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f".tmp-model.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.eval()
    model.save_pretrained(staging)
    distillation.tokenizer.save_pretrained(staging)
    with open(staging / "training-log.jsonl", "w", encoding="utf-8") as fh:
        for entry in history:
            fh.write(json.dumps(entry) + "\n")
    for item in staging.iterdir():
        os.replace(item, output / item.name)
    shutil.rmtree(staging, ignore_errors=True)
    settings = distillation.settings
    manifest = {
        "levels": [str(level) for level in menu],
        "pooling": settings.pooling,
        "normalize": settings.normalize,
        "max_length": settings.max_length,
        "passage_encoder": {
            "model": config.base_model_name(),
            "fingerprint": distillation.teacher_fingerprint,
        },
        "elastic": {
            "reordered": True,
            "importance_texts": importance.num_texts,
            "importance_tokens": importance.num_tokens,
            "importance_max_length": config.max_query_length,
            "source_model": config.base_model_name(),
        },
        "training": {
            "method": "sandwich" if config.sandwich else "static",
            "trained_levels": (
                "sandwich over levels"
                + (f", plus {', '.join(config.focus)} at every step" if config.focus else "")
            )
            if config.sandwich
            else list(config.levels or ()),
            "key": distillation.key,
            "config": config.to_dict(),
            "data": distillation.data,
            "steps": config.steps,
            "seed": config.seed,
            "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(1, len(history)), 3),
            "torch_threads": torch.get_num_threads(),
            "final_losses": _final_losses(history, config.steps),
        },
    }
    write_json(output / MODEL_MANIFEST, manifest)
