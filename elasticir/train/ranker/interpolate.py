"""WiSE-FT for a trained ranker: :func:`interpolate_ranker` (``elasticir train interpolate``).

After training, the weights can be mixed with the run's start net, ``(1 - alpha) * start +
alpha * trained``, at no extra cost per pair. With few labels this keeps part of what the start
knew (for the pooled head, the bi-encoder's ranking); the start is rebuilt from the run's own
record.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from elasticir.data.manifest import MODEL_MANIFEST
from elasticir.models.ranker import write_ranker
from elasticir.train.core import torch_threads
from elasticir.train.ranker.config import RankerTrainConfig
from elasticir.train.ranker.data import load_groups
from elasticir.train.ranker.exit_classifier import fit_exit_classifier
from elasticir.train.ranker.net import start_net

__all__ = ["INTERPOLATION_FORMAT", "interpolate_ranker"]

INTERPOLATION_FORMAT = "wise-ft"


def interpolate_ranker(
    model: str | Path,
    alpha: float,
    output: str | Path,
    *,
    data_root: str | Path | None = None,
    cache: str | Path | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> Path:
    """Weight-space ensemble of a trained ranker with the net its run started from (WiSE-FT,
    Wortsman et al. 2022): every trunk, exit-head and gate weight becomes
    ``(1 - alpha) * start + alpha * trained``; ``alpha=1`` is the trained ranker, ``alpha=0``
    its start (for the pooled head from the base model: the bi-encoder's ranking).

    The start is rebuilt from the run's recorded config: its training groups are loaded again
    (they decide the importance order of heads and neurons) and must hash to the run's key, so
    the two nets are aligned weight for weight. The exit classifier, fitted to the trained
    exits, is refitted on the run's held-out groups from the start's seeded init. The output
    is an ordinary ranker directory whose ``training`` record is the run's, plus an
    ``interpolation`` entry (alpha, the trained ranker's path and fingerprint); a ranker
    trained by cross-validation keeps its held-out queries, so ``benchmarks/rerank_cv.py``
    accepts it. Returns at once when ``output`` already holds this very interpolation, and
    refuses an output that holds any other model (the trained one included).
    """
    from elasticir.models.ranker import ElasticRanker, read_manifest

    alpha = float(alpha)
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    source, out = Path(model), Path(output)
    if out.resolve() == source.resolve():
        raise ValueError(f"output {out} is the model itself: write the interpolation elsewhere")
    manifest = read_manifest(str(source))
    training = manifest.get("training")
    if not isinstance(training, dict) or not isinstance(training.get("config"), dict):
        raise ValueError(
            f"{source} has no training record (elasticir.json 'training.config'): only a ranker "
            "trained by `elasticir train ranker` can be interpolated with its start"
        )
    if "interpolation" in training:
        raise ValueError(f"{source} is already an interpolation; interpolate the trained ranker")
    values = dict(training["config"], output=str(out))
    if data_root is not None:
        values["data_root"] = str(data_root)
    if cache is not None:
        values["cache"] = str(cache)
    config = RankerTrainConfig.from_dict(values)
    trained = ElasticRanker(source, device="cpu")
    if (out / MODEL_MANIFEST).is_file():
        done = read_manifest(str(out)).get("training", {}).get("interpolation") or {}
        if done.get("alpha") == alpha and done.get("trained_fingerprint") == trained.fingerprint:
            return out  # already written by the same request
        raise ValueError(
            f"{out} already holds another model; use another output directory (or delete it)"
        )
    with torch_threads(threads if threads is not None else config.threads):
        groups = load_groups(config, progress=progress)
        if groups.key != training.get("key"):
            raise ValueError(
                f"the training data of {source} no longer hashes to its run's key "
                f"({groups.key} != {training.get('key')}): the data folder or cache differs from "
                "the run's, so its start net cannot be rebuilt exactly"
            )
        start, tokenizer, _, _ = start_net(config, groups, "cpu")
        mixed = _mix_states(start.state_dict(), trained.net.state_dict(), alpha, source)
        start.load_state_dict(mixed)
        widths = [int(w) for w in training.get("widths", [100])]
        stats = None
        if trained.has_classifier and config.exit_holdout and groups.holdout:
            stats = fit_exit_classifier(start, tokenizer, groups, widths, config, "cpu")
    record = dict(training)
    record["interpolation"] = {
        "format": INTERPOLATION_FORMAT,
        "alpha": alpha,
        "trained": str(source.resolve()),
        "trained_fingerprint": trained.fingerprint,
        "start": "the run's start net, rebuilt from its config and data (key checked)",
        "exit_classifier": "refitted on the run's held-out groups" if stats else None,
    }
    if stats is not None:
        record["exit_classifier"] = stats
    return write_ranker(
        out,
        start.eval(),
        tokenizer,
        levels=trained.levels,
        max_length=trained.max_length,
        classifier=stats is not None,
        training=record,
        source_model=manifest.get("source_model"),
    )


def _mix_states(
    start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], alpha: float, where: Path
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * trained`` for every floating tensor but the exit
    classifier's (kept from ``start``, to be refitted) and those the run left unchanged (kept
    bit for bit); integer buffers must be equal."""
    if start.keys() != trained.keys():
        missing = sorted(set(start) ^ set(trained))[:5]
        raise ValueError(f"{where} does not match its run's start net (differing keys: {missing})")
    mixed: dict[str, torch.Tensor] = {}
    for name, first in start.items():
        last = trained[name].to(first.device)
        if first.shape != last.shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(last.shape)}, its start {tuple(first.shape)}"
            )
        if name.startswith("classifier."):
            mixed[name] = first
        elif torch.equal(first, last):  # frozen (word embeddings): bit for bit, signed zeros too
            mixed[name] = last
        elif torch.is_floating_point(first):
            mixed[name] = torch.lerp(first.float(), last.float(), alpha).to(first.dtype)
        elif not torch.equal(first, last):
            raise ValueError(f"{where}: buffer {name} differs from its start's")
        else:
            mixed[name] = first
    return mixed
