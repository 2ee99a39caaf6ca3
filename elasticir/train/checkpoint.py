"""A training run's resumable state: ``<output>/checkpoint/state.pt``.

A checkpoint holds the model, optimizer, schedule, step, seconds, loss history and every RNG
state (Python, NumPy, torch, CUDA), written atomically with the run's ``format`` and ``key``;
a resume must match both, so a rerun with other settings or data refuses to continue it. A run
resumed from its last checkpoint ends with the weights an uninterrupted run ends with (same
device and thread count). Used by ``elasticir.train.denser`` and ``elasticir.train.ranker``
(DiPair's two-stage state has a layout of its own, :mod:`elasticir.train.dipair.loop`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elasticir.data.files import atomic_file
from elasticir.train.config import TrainConfigFile

__all__ = ["Checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    """A run's resumable state: ``path``, written with ``format`` and the run's ``key`` (what
    it trains on and with which settings), both of which a resume must match."""

    path: Path
    format: str
    key: str
    config: TrainConfigFile

    def resume(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> tuple[int, float, list[dict[str, Any]]]:
        """``(step, seconds, history)`` so far: restored with the model, optimizer, schedule
        and RNG states when the file exists, else ``(0, 0.0, [])`` with every RNG seeded."""
        if not self.path.is_file():
            _seed_everything(self.config.seed)
            return 0, 0.0, []
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("format") != self.format or state.get("key") != self.key:
            raise ValueError(
                f"{self.path} was written by a run with other settings or data "
                f"({_config_difference(state.get('config'), self.config)}); rerun with those, "
                "or delete the checkpoint directory to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_states(state["rng"])
        return int(state["step"]), float(state["seconds"]), state["history"]

    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        step: int,
        seconds: float,
        history: list[dict[str, Any]],
    ) -> None:
        state = {
            "format": self.format,
            "key": self.key,
            "config": self.config.to_dict(),
            "step": step,
            "seconds": seconds,
            "history": history,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
        }
        with atomic_file(self.path) as tmp:
            torch.save(state, tmp)


def _rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _config_difference(saved: object, config: TrainConfigFile) -> str:
    if not isinstance(saved, dict):
        return "no readable config"
    now = config.training_fields()
    differ = [
        f"{name}: {saved.get(name)!r} there, {value!r} now"
        for name, value in now.items()
        if saved.get(name) != value
    ]
    return "; ".join(differ) or "same settings, other training data or base model"
