"""``elasticir train``: train models; ``train denser`` makes every query level land in one index."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import reports_errors

app = typer.Typer(
    help="Train compute-elastic models (resumable: rerun the same command after a kill).",
    no_args_is_help=True,
)


@app.command("denser")
@reports_errors
def denser(
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="JSON file of training settings (the field names of DenserTrainConfig, any "
        "subset); the flags below override it",
        exists=True,
        dir_okay=False,
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Model directory to write (caches and checkpoints go inside it); needed here "
        "or in --config",
    ),
    model: str = typer.Option(
        None,
        help="Base model: it stays the frozen passage encoder (the index space) and is the "
        "starting point of the query encoder (default: all-MiniLM-L6-v2)",
    ),
    data: Path = typer.Option(
        None,
        help="Data folder with topics/ and train/ (default: $ELASTICIR_DATA or ../shared/data)",
    ),
    steps: int = typer.Option(None, help="Optimizer steps (default: 2000)"),
    seed: int = typer.Option(None, help="Seed of every random choice (default: 13)"),
    batch_size: int = typer.Option(None, help="Training queries per step (default: 64)"),
    lr: float = typer.Option(
        None, help="Peak AdamW learning rate, linear warm-up and decay (default: 5e-5)"
    ),
    levels: str = typer.Option(
        None,
        help="Comma-separated levels of the menu, e.g. full,L4,L2-W50 (default: the base "
        "model's default menu); each step trains full, the smallest and one random other",
    ),
    static_level: str = typer.Option(
        None,
        help="Train only this level (a static baseline) instead of the sandwich over the menu",
    ),
    candidates: int = typer.Option(
        None, "-k", "--candidates", help="Mined hard negatives per query (default: 32)"
    ),
    temperature: float = typer.Option(
        None, help="Softmax temperature of the scores (default: 0.05)"
    ),
    align_weight: float = typer.Option(
        None, help="Weight of 1 - cos(student query, teacher query) (default: 1.0)"
    ),
    pool_size: int = typer.Option(
        None, help="Passages sampled into the pool the teacher encodes (default: 20000)"
    ),
    max_queries: int = typer.Option(None, help="Cap on training queries (default: all)"),
    checkpoint_every: int = typer.Option(None, help="Steps between checkpoints (default: 100)"),
    threads: int = typer.Option(
        None, help="Torch threads (1 is fastest on a small shared machine) (default: torch's)"
    ),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Train an elastic query encoder into the frozen base model's passage space.

    The passage side stays the base model at full compute, so an index built with the base
    model serves every query level of the result: `elasticir search --model OUTPUT --level
    L2-W50`. Every level is a nested sub-network of one set of weights, trained by
    distillation from the base model (sandwich rule: full, smallest and one random level per
    step). Seeded, and resumable: the teacher's vectors are cached and the run checkpoints;
    kill it and run the same command again to continue.
    """
    from dataclasses import replace

    from elasticir import api
    from elasticir.train.denser import DenserTrainConfig

    if levels is not None and static_level is not None:
        raise ValueError("give --levels (the sandwich menu) or --static-level, not both")
    overrides: dict[str, object] = {
        "output": output,
        "base_model": model,
        "data_root": data,
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "candidates": candidates,
        "temperature": temperature,
        "align_weight": align_weight,
        "passage_pool_size": pool_size,
        "max_queries": max_queries,
        "checkpoint_every": checkpoint_every,
        "threads": threads,
        "device": device,
    }
    if levels is not None:
        overrides["levels"] = tuple(lv.strip() for lv in levels.split(",") if lv.strip())
        overrides["sandwich"] = True
    if static_level is not None:
        overrides["levels"] = (static_level,)
        overrides["sandwich"] = False
    given = {name: value for name, value in overrides.items() if value is not None}
    if config is not None:
        settings = replace(DenserTrainConfig.from_json(config), **given)
    elif "output" not in given:
        raise ValueError("say where to write the model: --output DIR (or output in --config)")
    else:
        settings = DenserTrainConfig(**given)  # type: ignore[arg-type]
    path = api.train_denser(settings, progress=not quiet)
    typer.echo(f"model: {path}")
