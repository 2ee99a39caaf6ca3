"""``elasticir calibrate``: Learn-then-Test thresholds for the elastic ranker's early exit."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


@reports_errors
def main(
    model: str = typer.Option(..., "--model", help="Trained ElasticRanker directory"),
    run: Path = typer.Option(..., "--run", "-r", help="First-stage TREC run (candidates)"),
    topics: Path = typer.Option(..., "--topics", help="Calibration queries (qid<TAB>text)"),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus holding the run's documents"),
    family: str = typer.Option(
        "margin",
        help="Exit signal: entropy, margin, saturation, classifier, or rank (an exit "
        "classifier that also reads the candidate's first-stage rank, fitted on every third "
        "calibration query and tested on the others; exited candidates are pruned); or "
        "cutoff: no early exit, rerank only the first stage's top R (R calibrated from 1000 "
        "down to 10; the others keep their order below)",
    ),
    delta: float = typer.Option(
        0.02, help="Tolerated mean nDCG@10 drop against the ranker without early exit"
    ),
    epsilon: float = typer.Option(0.1, help="Allowed probability that the drop exceeds delta"),
    level: str = typer.Option("full", help="Width and deepest layer the policy runs at"),
    depth: int = typer.Option(100, help="Candidates per query"),
    min_layer: int = typer.Option(1, help="First layer allowed to exit"),
    qrels: Path = typer.Option(
        None, help="Judge the drop with these qrels instead of consistency with the ranker"
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Calibration JSON to write (use: --policy calibrated:FILE)"
    ),
    precision: str = typer.Option(
        "fp32", help="fp32, or bf16 autocast: the precision the policy will be used at"
    ),
    first_stage: str = typer.Option(
        None,
        "--first-stage",
        help="What made the run (e.g. 'elastic-minilm full, top-100 of the DL21 pool'), "
        "recorded in the file: a rank-aware policy holds for that kind of first stage only",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
) -> None:
    """Pick the most aggressive early-exit threshold whose nDCG@10 drop stays within delta.

    The ranker scores every candidate once, recording every layer's score and exit signal;
    each threshold is then simulated, tested with a Hoeffding-Bentkus p-value, and the
    thresholds are walked from safest to most aggressive (fixed-sequence testing): with
    probability at least 1 - epsilon over the calibration queries, the chosen policy's mean
    drop on new queries like them is at most delta.
    """
    from elasticir import api
    from elasticir.data.files import atomic_file
    from elasticir.data.trec import read_qrels, read_run
    from elasticir.rerank.calibration import PolicyFamily, calibrate, calibration_queries
    from elasticir.rerank.pipeline import PassageLookup
    from elasticir.rerank.ranker import ElasticRanker

    # Everything that can be wrong is found before the ranker scores a single pair.
    if not 0 < delta < 1:
        raise ValueError(f"--delta must be in (0, 1) (a drop of nDCG@10), got {delta}")
    if not 0 < epsilon < 1:
        raise ValueError(f"--epsilon must be in (0, 1) (a probability), got {epsilon}")
    if depth < 1 or min_layer < 1:
        raise ValueError(f"--depth and --min-layer must be >= 1, got {depth} and {min_layer}")
    check_calibration_output(output)
    PolicyFamily(family, min_layer)  # an unknown family fails here
    candidates = read_run(run)
    if not candidates:
        raise ValueError(f"{run}: the run holds no rankings; nothing to calibrate on")
    queries = {q.query_id: q.text for q in api.load_queries(topics)}
    wanted = {d for qid, docs in candidates.items() if qid in queries for d in docs}
    found = PassageLookup(corpus).fetch(wanted)
    missing = wanted - found.keys()
    if missing:
        raise ValueError(
            f"{len(missing)} candidate document(s) are not in {corpus} (e.g. "
            f"{sorted(missing)[:3]}): calibrate with the corpus the run was made from"
        )
    texts = {d: p.encoder_text() for d, p in found.items()}
    judged = read_qrels(qrels) if qrels is not None else None
    data = calibration_queries(candidates, queries, texts, judged, depth=depth)
    ranker = ElasticRanker(model, precision=precision)
    result = calibrate(
        ranker,
        data,
        PolicyFamily(family, min_layer),
        delta,
        epsilon,
        level=level,
        loss="qrels" if judged is not None else "consistency",
        progress=not quiet,
    )
    with atomic_file(output) as tmp:
        written = {
            **result.to_dict(),
            "precision": precision,
            "model": {"name": Path(model).name, "fingerprint": ranker.fingerprint},
            "first_stage": first_stage or f"the run {run.name}",
            # the depth the lists really had: a top-20 run calibrates for top-20 lists
            "depth": min(depth, max((len(docs) for docs in candidates.values()), default=depth)),
        }
        tmp.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    fitted = f" (exit weights fitted on {result.fit_queries} others)" if result.fit_queries else ""
    spec = result.policy.spec if len(result.policy.spec) <= 60 else result.policy.spec[:57] + "..."
    typer.echo(
        f"policy {spec} at {result.level}: risk {result.risk:.4f} <= delta {delta} on "
        f"{result.n_queries} queries{fitted}, speedup {result.speedup:.2f}x; written {output}"
    )


def check_calibration_output(path: Path) -> None:
    """Only a calibration file (or nothing) may be replaced by one, and only where writable."""
    from elasticir.data.errors import InputFormatError
    from elasticir.data.files import check_writable
    from elasticir.data.manifest import read_json_object

    if path.is_file():
        try:
            existing = read_json_object(path)
        except InputFormatError:
            existing = None
        if not (existing and {"level", "policy"} <= existing.keys()):
            raise ValueError(
                f"{path} exists and is not a calibration file; refusing to replace it: choose "
                "another --output (nothing was written)"
            )
    check_writable(path, "calibration")
