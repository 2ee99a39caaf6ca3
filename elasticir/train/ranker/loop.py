"""ElasticRanker's training loop: :func:`train_ranker`.

**Widths**: each step applies the sandwich rule over the menu's widths -- full width (first:
its deepest exit is the self-distillation target), the smallest, and one random other (seeded
per step); ``sandwich=False`` trains exactly the widths of ``levels`` every step. Each width
adds every exit's loss (:mod:`elasticir.train.losses.ranker`) to one optimizer step; after
the last step the exit classifier is fitted (:mod:`elasticir.train.ranker.exit_classifier`)
and the ranker written.

Seeded and resumable like ``elasticir train denser``: ``<output>/checkpoint/state.pt`` every
``checkpoint_every`` steps; rerunning the same config resumes and ends with the weights an
uninterrupted run ends with (same device and thread count).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elasticir.compute.levels import Level
from elasticir.models.elastic import default_levels, level_menu
from elasticir.models.ranker import RankerNet, write_ranker
from elasticir.train.checkpoint import Checkpoint
from elasticir.train.core import (
    already_finished,
    check_model_output,
    choose_device,
    lr_schedule,
    run_steps,
    torch_threads,
    training_bar,
)
from elasticir.train.losses.ranker import group_losses
from elasticir.train.ranker.config import RankerTrainConfig
from elasticir.train.ranker.data import TrainingGroups, batch_tensors, load_groups
from elasticir.train.ranker.exit_classifier import fit_exit_classifier
from elasticir.train.ranker.net import start_net

__all__ = ["CHECKPOINT_FORMAT", "train_ranker", "width_plan"]

CHECKPOINT_FORMAT = "elasticir-train-ranker-checkpoint"


def train_ranker(
    config: RankerTrainConfig,
    progress: bool = True,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None = None,
) -> Path:
    """Train the ElasticRanker of ``config``; returns the model directory.

    Resumable: rerunning the same config continues from ``<output>/checkpoint/state.pt``, and
    returns at once when ``<output>`` already holds the finished model. ``on_step(step,
    losses)`` is called after each optimizer step with ``{"W<width>": {loss name: value}}``
    (an exception from it stops the run like a kill would).
    """
    output = config.output
    check_model_output(config)
    with torch_threads(config.threads):
        groups = load_groups(config, progress=progress)
        if already_finished(output, groups.key):
            return output
        return _train(config, groups, progress, on_step)


def width_plan(config: RankerTrainConfig, widths: Sequence[int]) -> Callable[[int], list[int]]:
    """The widths trained at each step, full width first: the sandwich (full, smallest, one
    random other), or every width of ``levels`` without it."""
    widths = sorted(set(widths), reverse=True)
    if not config.sandwich:
        return lambda step: list(widths)
    smallest, middle = widths[-1], widths[1:-1]

    def sandwich(step: int) -> list[int]:
        plan = [100] if len(widths) == 1 else [100, smallest]
        if middle:
            rng = np.random.default_rng([config.seed, 211, step])
            plan.insert(1, middle[int(rng.integers(len(middle)))])
        return plan

    return sandwich


def _optimizer(net: RankerNet, config: RankerTrainConfig) -> torch.optim.Optimizer:
    for name, parameter in net.named_parameters():
        frozen = (
            name.startswith("classifier.")
            or name.startswith("encoder.pooler.")
            or ("word_embeddings" in name and not config.train_word_embeddings)
        )
        parameter.requires_grad_(not frozen)
    decay, no_decay, heads, gates = [], [], [], []
    for name, parameter in net.named_parameters():
        if not parameter.requires_grad:
            continue
        if name == "gates":
            gates.append(parameter)
        elif name.startswith("heads."):
            heads.append(parameter)
        elif name.endswith("bias") or "LayerNorm" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr": config.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": config.lr},
        {"params": heads, "weight_decay": 0.0, "lr": config.head_lr},
    ]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr": config.gate_lr})
    return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


def _train(
    config: RankerTrainConfig,
    groups: TrainingGroups,
    progress: bool,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None,
) -> Path:
    device = choose_device(config.device)
    net, tokenizer, importance, start_levels = start_net(config, groups, device)
    menu = level_menu(net.config, config.levels) if config.levels is not None else None
    ranker_levels = menu if menu is not None else start_levels or default_levels(net.config)
    widths = sorted({lv.width for lv in ranker_levels} | {100}, reverse=True)
    if not config.sandwich:
        widths = sorted({Level(lv).width for lv in config.levels or ()}, reverse=True)
    types = int(getattr(net.config, "type_vocab_size", 1) or 1) > 1
    net.train(config.dropout)
    optimizer = _optimizer(net, config)
    parameters = [p for p in net.parameters() if p.requires_grad]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(config.steps, config.warmup)
    )
    checkpoint = Checkpoint(
        config.output / "checkpoint" / "state.pt", CHECKPOINT_FORMAT, groups.key, config
    )
    step, seconds, history = checkpoint.resume(net, optimizer, scheduler)
    plan = width_plan(config, widths)

    def one_step(step: int) -> dict[str, dict[str, float]]:
        batch = groups.batch(step)
        tensors = batch_tensors(batch, tokenizer, config, device, types)
        record: dict[str, dict[str, float]] = {}
        reference = None
        for width in plan(step):
            loss = group_losses(net, tensors, batch, width, config, reference)
            loss.total.backward()
            if width == 100:
                reference = loss.deepest_scores.detach()
            record[f"W{width}"] = loss.values()
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
            save=partial(checkpoint.save, net, optimizer, scheduler),
            step=step,
            seconds=seconds,
            history=history,
            show=show,
            on_step=on_step,
        )
    classifier_stats = None
    if config.exit_holdout and groups.holdout:
        classifier_stats = fit_exit_classifier(net, tokenizer, groups, widths, config, device)
    net.eval()
    training = {
        "method": "sandwich" if config.sandwich else "fixed widths",
        "widths": widths,
        "key": groups.key,
        "config": config.to_dict(),
        "data": groups.data,
        "steps": config.steps,
        "seed": config.seed,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(history)), 3),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "importance_pairs": importance.num_texts if importance is not None else None,
        "importance_tokens": importance.num_tokens if importance is not None else None,
        "final_losses": _final_losses(history, config.steps),
        "exit_classifier": classifier_stats,
    }
    write_ranker(
        config.output,
        net,
        tokenizer,
        levels=ranker_levels,
        max_length=config.max_length,
        classifier=classifier_stats is not None,
        training=training,
        source_model=config.base_model_name(),
        extra_files={"training-log.jsonl": "".join(json.dumps(e) + "\n" for e in history)},
    )
    shutil.rmtree(checkpoint.path.parent, ignore_errors=True)
    return config.output


def _final_losses(history: list[dict[str, Any]], steps: int) -> dict[str, dict[str, float]]:
    """Per width, the mean of its last ``max(1, steps // 10)`` recorded losses."""
    window = max(1, steps // 10)
    seen: dict[str, list[dict[str, float]]] = {}
    for entry in history:
        for width, values in entry["losses"].items():
            seen.setdefault(width, []).append(values)
    return {
        width: {name: float(np.mean([v[name] for v in values[-window:]])) for name in values[-1]}
        for width, values in seen.items()
    }
