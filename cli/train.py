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
    focus: str = typer.Option(
        None,
        help="Comma-separated menu levels trained at every step on top of the sandwich, e.g. "
        "L6-W50 (the level you will serve most) (default: none)",
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
    corpus: list[str] = typer.Option(
        None,
        "--corpus",
        help="A dataset (msmarco-dl19 or nq-open) whose corpus passage texts all join the pool: "
        "label-free, in-domain candidates; no query or judgement of it is read (repeatable)",
    ),
    pseudo_queries: int = typer.Option(
        None,
        help="Extra training inputs: this many 4-12-word spans cut from pool passages "
        "(seeded) (default: 0)",
    ),
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
    step, plus any --focus level at every step). Seeded, and resumable: the teacher's
    vectors are cached and the run checkpoints; kill it and run the same command again to
    continue.
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
        "corpus_passages": tuple(corpus) if corpus else None,
        "pseudo_queries": pseudo_queries,
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
    if focus is not None:
        overrides["focus"] = tuple(lv.strip() for lv in focus.split(",") if lv.strip())
    given = {name: value for name, value in overrides.items() if value is not None}
    if config is not None:
        settings = replace(DenserTrainConfig.from_json(config), **given)
    elif "output" not in given:
        raise ValueError("say where to write the model: --output DIR (or output in --config)")
    else:
        settings = DenserTrainConfig(**given)  # type: ignore[arg-type]
    path = api.train_denser(settings, progress=not quiet)
    typer.echo(f"model: {path}")


@app.command("projection")
@reports_errors
def projection(
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Projections file to write [default: <model>/projections.safetensors for a "
        "local model directory]",
    ),
    model: str = typer.Option(
        None,
        help="The passage space: a model directory trained by `train denser` (its passage "
        "encoder is used) or any encoder (default: all-MiniLM-L6-v2)",
    ),
    dims: str = typer.Option("256,128,64", help="Comma-separated target dimensions"),
    data: Path = typer.Option(
        None,
        help="Data folder with topics/ and train/ (default: $ELASTICIR_DATA or ../shared/data)",
    ),
    cache: Path = typer.Option(
        None,
        help="Folder of cached teacher vectors, shared with `train denser --config` runs "
        "that name the same cache (default: $ELASTICIR_CACHE or ~/.cache/elasticir)",
    ),
    corpus: list[str] = typer.Option(
        None,
        "--corpus",
        help="A dataset name (msmarco-dl19) or corpus file whose passages join the pool the "
        "projection is fitted on (repeatable; only passage texts are read)",
    ),
    asymmetric: bool = typer.Option(
        False,
        "--asymmetric/--symmetric",
        help="A query-side matrix of its own, fitted jointly with the passages' (default: "
        "one matrix for both sides; docs/experiments/elastic-denser.md compares the two)",
    ),
    student_negatives: int = typer.Option(
        0,
        help="Also train each query against this many passages that the projection being "
        "fitted ranks highest over the whole pool (its own mistakes; 0: teacher-mined and "
        "in-batch passages only)",
    ),
    remine_every: int = typer.Option(
        100, help="Steps between re-minings of the student's negatives"
    ),
    steps: int = typer.Option(1500, help="Adam steps per dimension"),
    batch_size: int = typer.Option(256, help="Training queries per step"),
    lr: float = typer.Option(2e-3, help="Peak learning rate (linear decay)"),
    seed: int = typer.Option(13, help="Seed of every random choice"),
    threads: int = typer.Option(None, help="Torch threads (default: torch's)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Fit learned projections of a passage space to fewer dimensions.

    Each matrix starts from PCA and is trained so the projected scores keep the full
    model's ranking (listwise KL over mined and in-batch passages, on the unlabelled
    training queries); --asymmetric gives queries a matrix of their own. Then `elasticir
    index --model MODEL --dim 128` stores passages through the (passage) matrix, and search
    projects queries to match. The default model's space already has
    projections shipped with the package; this command reproduces them (from the repo root):

    \b
        elasticir train projection --cache models/cache \\
            --corpus msmarco-dl19 --corpus nq-open --threads 1 \\
            --output elasticir/models/projections/2a015752a3c17d94.safetensors
    """
    from elasticir import api
    from elasticir.models.loading import read_passage_encoder, resolve_model_path
    from elasticir.models.projection import PROJECTIONS_FILE
    from elasticir.train.projection import ProjectionTrainConfig

    base = model
    if model is not None:
        spec = read_passage_encoder(resolve_model_path(model))
        if spec is not None:
            base = spec.model
            if Path(model, base).is_dir():
                base = str(Path(model, base))
    if output is None:
        if model is None or not Path(model).is_dir():
            raise ValueError(
                "say where to write the projections: --output FILE (the default model's "
                "folder belongs to its package)"
            )
        output = Path(model) / PROJECTIONS_FILE
    settings = ProjectionTrainConfig(
        output=output,
        base_model=base,
        dims=tuple(int(d) for d in dims.split(",") if d.strip()),
        data_root=data,
        cache=cache,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        asymmetric=asymmetric,
        student_negatives=student_negatives,
        remine_every=remine_every,
        corpora=tuple(corpus or ()),
        threads=threads,
    )
    path = api.train_projection(settings, progress=not quiet)
    typer.echo(f"projections: {path}")


# options that `train dipair` and `train ranker` share
ANCHOR_CORPUS = typer.Option(
    None, help="Dataset name or corpus file the anchor queries search (msmarco-dl19)"
)
ANCHOR_BM25_WEIGHT = typer.Option(
    None,
    help="Take the anchor groups from a fused first stage instead: this weight on BM25's "
    "min-max normalised scores, the rest on the bi-encoder's; a ranker is also taught the "
    "fused scores (0: bi-encoder only, the default; needs the bm25 extra)",
)


@app.command("dipair")
@reports_errors
def dipair(
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="JSON file of training settings (the field names of DiPairTrainConfig, any "
        "subset); the flags below override it",
        exists=True,
        dir_okay=False,
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="DiPair model directory to write; here or in --config"
    ),
    model: str = typer.Option(
        None, help="Encoder the head reads token outputs of (default: all-MiniLM-L6-v2)"
    ),
    data: Path = typer.Option(
        None, help="Data folder with train/ (default: $ELASTICIR_DATA or ../shared/data)"
    ),
    teacher: str = typer.Option(
        None,
        help="ElasticRanker model directory whose scores the head is distilled from (a "
        "cross-encoder teacher, scored once and cached)",
    ),
    teacher_scores: Path = typer.Option(
        None, help="Or a file of teacher scores (JSONL query/passage/score, or a TREC run)"
    ),
    stage1_steps: int = typer.Option(None, help="Head-only steps, encoder frozen (2000)"),
    stage2_steps: int = typer.Option(None, help="End-to-end steps (50)"),
    k: int = typer.Option(None, help="Passage tokens kept (32)"),
    query_tokens: int = typer.Option(None, help="Query tokens kept (16)"),
    dim: int = typer.Option(None, help="Projected token dimension (64)"),
    layers: int = typer.Option(None, help="Head Transformer layers (2)"),
    heads: int = typer.Option(None, help="Head attention heads (4)"),
    residual: bool = typer.Option(
        None,
        "--residual/--no-residual",
        help="Add the bi-encoder's own similarity to the head's score, so the head learns a "
        "correction to it (default: yes; --no-residual trains the plain DiPair head)",
    ),
    anchor_queries: int = typer.Option(
        None,
        help="Unlabelled MS MARCO dev queries (a seeded sample of topics/, never their qrels) "
        "whose top passages in --anchor-corpus become teacher-only groups: with --teacher, "
        "the head learns the ranker on MS MARCO-like candidate lists (0: none, the default)",
    ),
    anchor_corpus: str = ANCHOR_CORPUS,
    anchor_depth: int = typer.Option(None, help="Passages per anchor group (32)"),
    anchor_bm25_weight: float = ANCHOR_BM25_WEIGHT,
    anchor_cache: Path = typer.Option(
        None,
        help="Folder for the anchor corpus's bi-encoder vectors and BM25 index (default: "
        "$ELASTICIR_CACHE or ~/.cache/elasticir)",
    ),
    seed: int = typer.Option(None, help="Seed of every random choice (13)"),
    threads: int = typer.Option(None, help="Torch threads (default: torch's)"),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Train the DiPair head: projections + a small Transformer over cached passage tokens.

    Stage 1 trains the head with the encoder frozen (its token outputs computed once),
    stage 2 end to end; listwise CE on labels plus KL toward the teacher's scores (the
    --teacher cross-encoder, a --teacher-scores file, or the training files' own teacher
    scores). Seeded and resumable: rerun the same command after a kill.
    """
    from dataclasses import replace

    from elasticir.train.dipair import DiPairTrainConfig, train_dipair

    overrides = {
        "output": output,
        "base_model": model,
        "data_root": data,
        "teacher_scores": teacher_scores,
        "stage1_steps": stage1_steps,
        "stage2_steps": stage2_steps,
        "k": k,
        "query_tokens": query_tokens,
        "dim": dim,
        "layers": layers,
        "heads": heads,
        "residual": residual,
        "anchor_queries": anchor_queries,
        "anchor_corpus": anchor_corpus,
        "anchor_depth": anchor_depth,
        "anchor_bm25_weight": anchor_bm25_weight,
        "anchor_cache": anchor_cache,
        "seed": seed,
        "threads": threads,
        "device": device,
    }
    given = {name: value for name, value in overrides.items() if value is not None}
    if config is not None:
        settings = replace(DiPairTrainConfig.from_json(config), **given)
    elif "output" not in given:
        raise ValueError("say where to write the model: --output DIR (or output in --config)")
    else:
        settings = DiPairTrainConfig(**given)  # type: ignore[arg-type]
    scorer = None
    if teacher is not None:
        from elasticir.rerank.factory import ranker_teacher

        scorer = ranker_teacher(teacher)
    path = train_dipair(settings, progress=not quiet, teacher=scorer)
    typer.echo(f"model: {path}")


@app.command("ranker")
@reports_errors
def ranker(
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="JSON file of training settings (the field names of RankerTrainConfig, any "
        "subset); the flags below override it",
        exists=True,
        dir_okay=False,
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Ranker model directory to write; here or in --config"
    ),
    model: str = typer.Option(
        None, help="Encoder to start from (default: all-MiniLM-L6-v2, heads reordered)"
    ),
    data: Path = typer.Option(
        None, help="Data folder with train/ (default: $ELASTICIR_DATA or ../shared/data)"
    ),
    steps: int = typer.Option(None, help="Optimizer steps (2000)"),
    batch_size: int = typer.Option(None, help="Query groups per step (16)"),
    group_size: int = typer.Option(None, help="Passages per group: 1 positive + negatives (8)"),
    max_length: int = typer.Option(None, help="Tokens per query-passage pair (256)"),
    lr: float = typer.Option(None, help="Peak learning rate of the encoder (5e-5)"),
    levels: str = typer.Option(
        None, help="Comma-separated levels of the menu (default: the model's default menu)"
    ),
    head: str = typer.Option(
        None,
        help="Exit heads: cls (a [CLS] relevance head per layer; the default) or pooled (the "
        "bi-encoder's cosine of mean-pooled query and passage states per layer, with gated "
        "cross attention between them: training starts from the bi-encoder's ranking)",
    ),
    anchor_queries: int = typer.Option(
        None,
        help="Unlabelled MS MARCO dev queries (a seeded sample of topics/, never their qrels) "
        "whose top passages in --anchor-corpus, scored by the base bi-encoder, are added as "
        "teacher-only groups that hold the ranker near the bi-encoder (0: none, the default)",
    ),
    anchor_corpus: str = ANCHOR_CORPUS,
    anchor_bm25_weight: float = ANCHOR_BM25_WEIGHT,
    cache: Path = typer.Option(
        None,
        help="Folder for the anchor corpus's bi-encoder vectors and BM25 index (default: "
        "$ELASTICIR_CACHE or ~/.cache/elasticir)",
    ),
    judged: str = typer.Option(
        None,
        help="Cross-validation over a benchmark's own judgements: a dataset with qrels (e.g. "
        "msmarco-dl19) whose queries are split into --folds folds; the judgements of every "
        "fold but --fold train the ranker, and the model records which queries it must only "
        "be evaluated on (benchmarks/rerank_cv.py)",
    ),
    folds: int = typer.Option(None, help="Folds of --judged (5)"),
    fold: int = typer.Option(None, help="The held-out fold of --judged, 0-based (0)"),
    init_from: Path = typer.Option(
        None,
        help="Fine-tune a trained ranker directory instead of starting from --model (its "
        "levels and exit heads are kept; the head kind must match)",
    ),
    seed: int = typer.Option(None, help="Seed of every random choice (13)"),
    checkpoint_every: int = typer.Option(None, help="Steps between checkpoints (100)"),
    threads: int = typer.Option(None, help="Torch threads (default: torch's)"),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Train ElasticRanker: a cross-encoder with a relevance head at every layer.

    Every exit is trained at once (listwise CE on labels, KL toward the training files'
    teacher scores, self-distillation from the deepest exit; COST-EFF gradient rescaling),
    over full, smallest and one random width per step; a small CALM exit classifier is then
    fitted on held-out training queries. Data: ../shared/data/train (never DL19 or nq-open
    judgements or questions), plus --anchor-queries, plus with --judged the judgements of
    every cross-validation fold but the held-out one. Seeded and resumable: rerun the same
    command after a kill.
    """
    from dataclasses import replace

    from elasticir.train.ranker import RankerTrainConfig, train_ranker

    overrides: dict[str, object] = {
        "output": output,
        "base_model": model,
        "data_root": data,
        "steps": steps,
        "batch_size": batch_size,
        "group_size": group_size,
        "max_length": max_length,
        "lr": lr,
        "head": head,
        "anchor_queries": anchor_queries,
        "anchor_corpus": anchor_corpus,
        "anchor_bm25_weight": anchor_bm25_weight,
        "cache": cache,
        "judged": judged,
        "judged_folds": folds,
        "judged_fold": fold,
        "init_from": init_from,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
        "threads": threads,
        "device": device,
    }
    if levels is not None:
        overrides["levels"] = tuple(lv.strip() for lv in levels.split(",") if lv.strip())
    given = {name: value for name, value in overrides.items() if value is not None}
    if config is not None:
        settings = replace(RankerTrainConfig.from_json(config), **given)
    elif "output" not in given:
        raise ValueError("say where to write the model: --output DIR (or output in --config)")
    else:
        settings = RankerTrainConfig(**given)  # type: ignore[arg-type]
    path = train_ranker(settings, progress=not quiet)
    typer.echo(f"model: {path}")


@app.command("interpolate")
@reports_errors
def interpolate(
    model: Path = typer.Argument(
        ...,
        help="A ranker directory written by `elasticir train ranker`",
        exists=True,
        file_okay=False,
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Ranker directory to write"),
    alpha: float = typer.Option(
        0.5, help="Weight of the trained ranker: 1 is the trained ranker, 0 its start net"
    ),
    data: Path = typer.Option(
        None,
        help="Data folder of the run (default: the run's setting, else $ELASTICIR_DATA or "
        "../shared/data)",
    ),
    cache: Path = typer.Option(None, help="The run's cache folder (default: the run's)"),
    threads: int = typer.Option(None, help="Torch threads (default: the run's)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Mix a trained ranker's weights with those its run started from (WiSE-FT).

    Every weight becomes (1 - alpha) * start + alpha * trained, at the ranker's cost: a
    fine-tuning run on few labels keeps part of what its start knew. The start is rebuilt
    from the run's recorded config and data (which must hash to the run's key), and the exit
    classifier is refitted on the run's held-out groups. The output records alpha and the
    trained ranker's fingerprint; cross-validated rankers keep their held-out queries.
    """
    from elasticir.train.ranker import interpolate_ranker

    path = interpolate_ranker(
        model, alpha, output, data_root=data, cache=cache, threads=threads, progress=not quiet
    )
    typer.echo(f"model: {path}")


@app.command("export")
@reports_errors
def export(
    model: Path = typer.Argument(
        ..., help="A trained model directory (denser, ranker or DiPair)", file_okay=False
    ),
    name: str = typer.Option(..., "--name", help="Short name it ships as (elastic-minilm)"),
    card: Path = typer.Option(
        ...,
        "--card",
        help="Card spec JSON: summary, trained_on, commands, device, wall_time (and "
        "never_saw); see configs/ship/",
        exists=True,
        dir_okay=False,
    ),
    evaluation: Path = typer.Option(
        None,
        help="Results JSON whose 'models' entry for NAME gives the card's evaluation rows",
        exists=True,
        dir_okay=False,
    ),
    calibration: list[str] = typer.Option(
        [], help="NAME=FILE: a calibration shipped with a ranker (repeatable)"
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Folder of shipped models (default: elasticir/shipped of this package)",
    ),
    data: Path = typer.Option(None, help="Data folder whose paths the card shows relative"),
) -> None:
    """Write a trained model as a compact shipped model: only the tensors that differ from
    the base model (large ones as float16), its small files, a card (JSON and Markdown),
    its calibrations and SHA256SUMS. The folder is rebuilt and checked before it replaces
    an earlier export of the same name."""
    import json

    from elasticir.data.datasets import data_root
    from elasticir.models.shipped import SHIPPED_ROOT
    from elasticir.train.card import build_card, card_markdown
    from elasticir.train.export import export_model

    if not (model / "elasticir.json").is_file():
        raise ValueError(f"{model}: not a finished model directory (no elasticir.json)")
    calibrations: dict[str, Path] = {}
    for item in calibration:
        key, sep, file = item.partition("=")
        if not sep or not key or not Path(file).is_file():
            raise ValueError(f"--calibration {item!r}: expected NAME=FILE with FILE existing")
        calibrations[key] = Path(file)
    spec = json.loads(card.read_text(encoding="utf-8"))
    results = None
    if evaluation is not None:
        found = json.loads(evaluation.read_text(encoding="utf-8")).get("models", {}).get(name)
        if found is None:
            raise ValueError(f"{evaluation}: no 'models' entry for {name}")
        results = {**found, "source": evaluation.as_posix()}
    cals = {k: json.loads(v.read_text(encoding="utf-8")) for k, v in calibrations.items()}
    built = build_card(model, name, spec, results, cals)
    root = output or SHIPPED_ROOT
    path = export_model(
        model,
        root / name,
        built,
        card_markdown(built),
        calibrations=calibrations,
        data_root=(data or data_root()).resolve(),
        repo_root=Path.cwd().resolve(),
    )
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    typer.echo(f"shipped model {name}: {path} ({size / 1e6:.1f} MB)")
