"""DiPair's two-stage training loop: :func:`train_dipair`.

Stage 1 (``stage1_steps``) trains the projections and the head with the encoder frozen, on its
cached token outputs (:mod:`elasticir.train.dipair.frozen`), so a step costs only the head.
Stage 2 (``stage2_steps``) trains end to end: the encoder runs on every step (without dropout;
the word-embedding table stays frozen unless ``train_word_embeddings``), with its own lower
learning rate. Either stage may have 0 steps.

What :func:`train_dipair` writes (``<output>`` is the DiPair model directory), besides the
caches of :mod:`~elasticir.train.dipair.frozen` and :mod:`~elasticir.train.dipair.teacher`::

    checkpoint/state.pt                      head (+ encoder in stage 2), optimizer, scheduler,
                                             stage, step; removed once the model is written
    dipair.safetensors, encoder/ (after stage 2), training-log.jsonl, elasticir.json (last)

A rerun of the same config after a kill resumes from the last checkpoint and ends with the
weights an uninterrupted run ends with (same device and thread count): nothing random is
carried between steps except what the checkpoint holds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from elasticir.data.files import atomic_file
from elasticir.data.manifest import MODEL_MANIFEST
from elasticir.models.dipair import DiPair, DiPairHead
from elasticir.train.config import check_training_output
from elasticir.train.core import (
    already_finished,
    lr_schedule,
    mark_trainable,
    run_steps,
    torch_threads,
    training_bar,
)
from elasticir.train.dipair.config import DiPairTrainConfig
from elasticir.train.dipair.data import DiPairData, prepare_dipair_data
from elasticir.train.dipair.frozen import base_encoder

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser
    from elasticir.train.dipair.teacher import Teacher

__all__ = ["CHECKPOINT_FORMAT", "initial_dipair", "train_dipair"]

CHECKPOINT_FORMAT = "elasticir-dipair-checkpoint"


def initial_dipair(config: DiPairTrainConfig, encoder: ElasticDenser | None = None) -> DiPair:
    """The untrained model of ``config``: the base encoder and a head seeded by ``seed``."""
    if encoder is None:
        encoder = base_encoder(config)
    return DiPair.create(config.model_config(), encoder, seed=config.seed)


def train_dipair(
    config: DiPairTrainConfig,
    progress: bool = True,
    teacher: Teacher | Any | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Path:
    """Train the DiPair model of ``config`` in two stages; returns the model directory.

    ``teacher`` scores the training pairs for distillation (see the module docstring).
    Resumable: rerunning the same config continues from ``<output>/checkpoint/state.pt``, and
    returns at once when ``<output>`` already holds the finished model. ``on_step(stage, step,
    losses)`` is called after each optimizer step (an exception from it stops the run like a
    kill would).
    """
    output = config.output
    check_training_output(output)
    if (output / "config.json").is_file() and not (output / MODEL_MANIFEST).is_file():
        raise ValueError(f"{output} holds a model this command did not write; choose another")
    with torch_threads(config.threads):
        encoder = base_encoder(config)
        data = prepare_dipair_data(config, progress, teacher, encoder)
        if already_finished(output, data.key):
            return output
        return _train(config, data, encoder, progress, on_step)


def _train(
    config: DiPairTrainConfig,
    data: DiPairData,
    encoder: ElasticDenser,
    progress: bool,
    on_step: Callable[[int, int, dict[str, float]], None] | None,
) -> Path:
    dipair = initial_dipair(config, encoder)
    head, model = dipair.head, encoder.model
    checkpoint = config.output / "checkpoint" / "state.pt"
    state: dict[str, Any] | None = None
    seconds, history = 0.0, []
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("key") != data.key:
            raise ValueError(
                f"{checkpoint} was written by a run with other settings or data; rerun with "
                "those, or delete the checkpoint directory to start over"
            )
        head.load_state_dict(state["head"])
        if state.get("encoder") is not None:
            model.load_state_dict(state["encoder"])
        seconds, history = float(state["seconds"]), list(state["history"])
    total = config.stage1_steps + config.stage2_steps
    done = 0 if state is None else _global_step(config, state["stage"], state["step"])
    with training_bar(progress, total, done) as show:
        for stage, steps in ((1, config.stage1_steps), (2, config.stage2_steps)):
            if steps == 0 or (state is not None and state["stage"] > stage):
                continue
            resume = state if state is not None and state["stage"] == stage else None
            seconds = _run_stage(
                config,
                data,
                head,
                model,
                stage,
                steps,
                resume,
                checkpoint,
                seconds,
                history,
                show,
                on_step,
            )
    _write_model(config, data, dipair, seconds, history)
    shutil.rmtree(checkpoint.parent, ignore_errors=True)
    return config.output


def _run_stage(
    config: DiPairTrainConfig,
    data: DiPairData,
    head: DiPairHead,
    model: torch.nn.Module,
    stage: int,
    steps: int,
    resume: dict[str, Any] | None,
    checkpoint: Path,
    seconds: float,
    history: list[dict[str, Any]],
    show: Callable[[int, dict[str, dict[str, float]]], None],
    on_step: Callable[[int, int, dict[str, float]], None] | None,
) -> float:
    end_to_end = stage == 2
    trained = mark_trainable(model, config.train_word_embeddings) if end_to_end else []
    optimizer = _optimizer(config, head, trained, stage)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(steps, config.warmup))
    step = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        step = int(resume["step"])
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    head.train()
    model.eval()  # the encoder runs without dropout; in stage 1 it does not run at all
    encoder = model if end_to_end else None

    def one_step(step: int) -> dict[str, float]:
        torch.manual_seed(
            int(np.random.default_rng([config.seed, 307, stage, step]).integers(2**62))
        )
        batch = data.batch(stage, step)
        losses = data.losses(head, batch, encoder)
        losses["total"].backward()
        return {name: float(value.item()) for name, value in losses.items()}

    def show_stage(step: int, record: dict[str, float]) -> None:
        show(_global_step(config, stage, step), {f"stage{stage}": record})

    seconds = run_steps(
        one_step,
        optimizer,
        scheduler,
        parameters,
        config.max_grad_norm,
        steps=steps,
        checkpoint_every=config.checkpoint_every,
        save=partial(
            _save_checkpoint, checkpoint, data, head, encoder, optimizer, scheduler, stage
        ),
        step=step,
        seconds=seconds,
        history=history,
        show=show_stage,
        on_step=None if on_step is None else partial(on_step, stage),
        tag={"stage": stage},
    )
    for parameter in trained:
        parameter.requires_grad_(False)
    head.eval()
    return seconds


def _global_step(config: DiPairTrainConfig, stage: int, step: int) -> int:
    return step if stage == 1 else config.stage1_steps + step


def _optimizer(
    config: DiPairTrainConfig,
    head: DiPairHead,
    encoder_parameters: list[torch.nn.Parameter],
    stage: int,
) -> torch.optim.Optimizer:
    head_lr = config.lr if stage == 1 else config.stage2_lr

    def decays(name: str, parameter: torch.nn.Parameter) -> bool:
        # matrices decay; biases, norms and the position / segment tables do not
        return parameter.ndim >= 2 and "positions" not in name and "segments" not in name

    named = list(head.named_parameters())
    groups: list[dict[str, Any]] = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    for group in groups:
        group["lr"] = head_lr
    if encoder_parameters:
        groups += [
            {
                "params": [p for p in encoder_parameters if p.ndim >= 2],
                "weight_decay": config.weight_decay,
                "lr": config.encoder_lr,
            },
            {
                "params": [p for p in encoder_parameters if p.ndim < 2],
                "weight_decay": 0.0,
                "lr": config.encoder_lr,
            },
        ]
    return torch.optim.AdamW(groups, lr=head_lr, foreach=True)


def _save_checkpoint(
    path: Path,
    data: DiPairData,
    head: DiPairHead,
    encoder: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    stage: int,
    step: int,
    seconds: float,
    history: list[dict[str, Any]],
) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "key": data.key,
        "config": data.config.to_dict(),
        "stage": stage,
        "step": step,
        "seconds": seconds,
        "history": history,
        "head": head.state_dict(),
        "encoder": None if encoder is None else encoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def _final_losses(history: list[dict[str, Any]], stage: int, steps: int) -> dict[str, float]:
    """Mean of a stage's last ``max(1, steps // 10)`` recorded losses."""
    values = [entry["losses"] for entry in history if entry["stage"] == stage]
    window = values[-max(1, steps // 10) :]
    return {name: float(np.mean([v[name] for v in window])) for name in ("ce", "kl", "total")}


def _write_model(
    config: DiPairTrainConfig,
    data: DiPairData,
    dipair: DiPair,
    seconds: float,
    history: list[dict[str, Any]],
) -> None:
    """The log first, then the model directory (``elasticir.json`` last)."""
    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    with atomic_file(output / "training-log.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for entry in history:
            fh.write(json.dumps(entry) + "\n")
    stages = {
        f"stage{stage}": {
            "steps": steps,
            "final_losses": _final_losses(history, stage, steps),
        }
        for stage, steps in ((1, config.stage1_steps), (2, config.stage2_steps))
        if steps
    }
    training = {
        "method": "dipair-two-stage",
        "key": data.key,
        "config": config.to_dict(),
        "data": data.stats,
        "stages": stages,
        "base_encoder": {"fingerprint": data.encoder_fingerprint},
        "seed": config.seed,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(history)), 4),
        "torch_threads": torch.get_num_threads(),
    }
    dipair.head.eval()
    dipair.save(output, training=training, save_encoder=config.stage2_steps > 0)
