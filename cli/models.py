"""``elasticir models``: the trained models that ship with the package."""

from __future__ import annotations

import json

import typer
from elasticir.cli.common import reports_errors


@reports_errors
def main(
    as_json: bool = typer.Option(False, "--json", help="The cards as one JSON list"),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also what each was trained on and its evaluation"
    ),
) -> None:
    """List the shipped models: name, kind, levels with their FLOPs ratio, projection
    dimensions, shipped calibrations and the card's summary.

    Use a name wherever a model is asked for: `search --model elastic-minilm --level L4`,
    `rerank --ranker elastic` (ranker-minilm), `rerank --ranker dipair` (dipair-minilm),
    `--policy calibrated:rank` for a calibration shipped with the ranker. Each is checked
    against its checksums and rebuilt on top of the installed base model on first use
    (into $ELASTICIR_CACHE, default ~/.cache/elasticir). Cards: elasticir/shipped/NAME/card.md.
    """
    from elasticir.models.shipped import list_shipped

    models = list_shipped()
    if as_json:
        typer.echo(json.dumps([m.card for m in models], indent=2))
        return
    if not models:
        typer.echo("no shipped models installed")
        return
    for model in models:
        card = model.card
        typer.echo(f"{model.name}  ({model.kind})")
        typer.echo(f"  {model.summary}")
        levels = card.get("levels") or []
        if levels:
            shown = ", ".join(f"{r['level']} {r['flops']:.2f}" for r in levels)
            typer.echo(f"  levels (FLOPs vs full): {shown}")
        if card.get("projections"):
            typer.echo(f"  dimensions: {', '.join(str(d) for d in card['projections'])}")
        if card.get("shape"):
            shape = card["shape"]
            typer.echo(
                f"  head: first {shape.get('k')} passage tokens projected to {shape.get('dim')} "
                f"dims, {shape.get('query_tokens')} query tokens"
            )
        for name, cal in (card.get("calibrations") or {}).items():
            policy = str(cal.get("policy"))
            policy = policy if len(policy) <= 40 else policy.split(",")[0] + ",..."
            typer.echo(
                f"  calibration {name}: {policy} at {cal.get('level')}, "
                f"{cal.get('precision')}, delta {cal.get('delta')}, for {cal.get('first_stage')}"
            )
        if verbose:
            typer.echo(f"  trained on: {card.get('trained_on')}")
            for row in (card.get("evaluation") or {}).get("rows", []):
                typer.echo("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
        typer.echo("")
