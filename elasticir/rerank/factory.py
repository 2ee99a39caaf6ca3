"""Rerankers by name: what ``elasticir rerank --ranker KIND[:MODEL]`` builds."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elasticir.pipeline import Scorer

RERANKERS = ("elastic", "dipair", "biencoder")
# The shipped model each kind uses when the stage names none (``elasticir models`` lists them).
DEFAULT_SHIPPED = {"elastic": "ranker-minilm", "dipair": "dipair-minilm"}


@dataclass(frozen=True)
class RerankStageSpec:
    """One reranking stage of a cascade: ``KIND[:MODEL][%K]`` on the command line."""

    kind: str  # elastic | dipair | biencoder
    model: str | None = None  # default: the kind's default model
    k: int | None = None  # keep the top k for the next stage; None: keep all

    def __str__(self) -> str:
        text = self.kind + (f":{self.model}" if self.model else "")
        return text + (f"%{self.k}" if self.k else "")


def parse_rerank_stage(spec: str) -> RerankStageSpec:
    """``"dipair:models/dipair%100"`` -> ``RerankStageSpec("dipair", "models/dipair", 100)``."""
    text, k = spec.strip(), None
    if "%" in text:
        text, _, cut = text.rpartition("%")
        if not cut.isdigit() or int(cut) < 1:
            raise ValueError(f"rerank stage {spec!r}: expected %K with K a positive integer")
        k = int(cut)
    kind, _, model = text.partition(":")
    if kind not in RERANKERS:
        raise ValueError(
            f"rerank stage {spec!r}: unknown kind {kind!r}; expected one of {', '.join(RERANKERS)}"
        )
    return RerankStageSpec(kind, model or None, k)


def make_scorer(
    spec: RerankStageSpec,
    *,
    level: str = "full",
    policy: str | None = None,
    batch: int = 32,
    corpus: Path | None = None,
    token_cache: Path | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> Scorer:
    """The scorer of one cascade stage; ``level``/``policy`` apply to the elastic ranker,
    ``precision`` (fp32, or bf16 autocast) to the elastic ranker and the bi-encoder.

    A DiPair stage reads passage tokens from ``token_cache`` (built there from ``corpus``
    first when absent or unfinished: resumable), or encodes passages on the fly without one.
    """
    if spec.kind == "biencoder":
        from elasticir.models.denser import ElasticDenser
        from elasticir.rerank.biencoder import BiEncoderScorer

        if policy is not None:
            raise ValueError("--policy applies to the elastic ranker, not to the bi-encoder")
        return BiEncoderScorer(ElasticDenser(spec.model, precision=precision), level=level)
    if spec.kind == "elastic":
        from elasticir.rerank.ranker import ElasticRanker, RankerScorer, UntrainedExitsWarning

        model = spec.model or DEFAULT_SHIPPED["elastic"]
        calibration = shipped_calibration(model, policy)
        level, policy = resolve_policy(level, calibration or policy, precision)
        with warnings.catch_warnings():
            # Refused just below, with what to do: the warning would only repeat it.
            warnings.simplefilter("ignore", UntrainedExitsWarning)
            ranker = ElasticRanker(model, batch_size=batch, precision=precision)
        check_calibrated_model(calibration or policy, ranker.fingerprint, model)
        if not ranker.heads_trained:
            raise ValueError(
                f"{spec.model}: not a trained ElasticRanker (no trained exit heads); its scores "
                "would mean nothing. Train one with `elasticir train ranker` and pass its "
                "directory"
            )
        return RankerScorer(ranker, level, policy)
    if spec.kind == "dipair":
        from elasticir.rerank.dipair import DiPair, DiPairScorer

        if policy is not None:
            raise ValueError("--policy applies to the elastic ranker, not to DiPair")
        if precision != "fp32":
            raise ValueError(
                f"--precision {precision} applies to the elastic and biencoder stages; DiPair "
                "runs in fp32 (it is already ~90x the cross-encoder's pairs/s)"
            )
        dipair = DiPair.load(spec.model or DEFAULT_SHIPPED["dipair"])
        if token_cache is not None:
            if corpus is None:
                raise ValueError("building a token cache needs the corpus")
            dipair.build_cache(corpus, token_cache, progress=progress)
        return DiPairScorer(dipair, token_cache)
    raise ValueError(f"the {spec.kind} reranker is not available yet")


def resolve_policy(
    level: str, policy: str | None, precision: str = "fp32"
) -> tuple[str, str | None]:
    """``calibrated:FILE.json`` (written by calibration) -> the level and policy it chose;
    any other spec passes through (see ``elasticir.rerank.policies.parse_policy``).

    A calibration holds for the precision it was made at (files without one are fp32): asking
    for another raises ``ValueError``."""
    from elasticir.data.manifest import read_json_object

    if policy is None or not policy.startswith("calibrated:"):
        return level, policy
    path = Path(policy.split(":", 1)[1])
    if not path.is_file():
        raise ValueError(f"{path}: calibration file not found")
    chosen = read_json_object(
        path, {"level": str, "policy": str}, optional={"precision": str}, what="a calibration"
    )
    level, policy = chosen["level"], chosen["policy"]
    made_at = chosen.get("precision", "fp32")
    if made_at != precision:
        raise ValueError(
            f"{path} was calibrated at {made_at} precision; its guarantee does not carry over "
            f"to {precision} scores: rerank with --precision {made_at}, or calibrate again "
            f"with --precision {precision}"
        )
    return level, policy


def shipped_calibration(model: str, policy: str | None) -> str | None:
    """``calibrated:NAME`` with NAME a calibration shipped with the shipped ranker ``model``
    (``calibrated:rank``) -> ``calibrated:<its file>``; None for anything else."""
    from elasticir.models.shipped import get_shipped, is_shipped_name

    if policy is None or not policy.startswith("calibrated:"):
        return None
    name = policy.split(":", 1)[1]
    if Path(name).suffix or "/" in name or not is_shipped_name(model):
        return None
    shipped = get_shipped(model).calibrations()
    if name not in shipped:
        known = ", ".join(shipped) or "none"
        raise ValueError(f"{model} ships no calibration {name!r} (it ships: {known})")
    return f"calibrated:{shipped[name]}"


def check_calibrated_model(policy: str | None, fingerprint: str, model: str) -> None:
    """A calibration that records the ranker it was made for (``"model": {"fingerprint"}``)
    holds for that ranker only: another one raises ``ValueError``."""
    from elasticir.data.manifest import read_json_object

    if policy is None or not policy.startswith("calibrated:"):
        return
    path = Path(policy.split(":", 1)[1])
    made_for = read_json_object(path, optional={"model": dict}).get("model") or {}
    expected = made_for.get("fingerprint")
    if expected is not None and expected != fingerprint:
        raise ValueError(
            f"{path} was calibrated for the ranker with fingerprint {expected} "
            f"({made_for.get('name', '?')}), not for {model} (fingerprint {fingerprint}): its "
            "guarantee does not carry over; calibrate this ranker with `elasticir calibrate`"
        )


def ranker_teacher(model: str) -> Scorer:
    """An ElasticRanker at full compute as a distillation teacher (e.g. for DiPair)."""
    from elasticir.rerank.ranker import ElasticRanker, RankerScorer

    return RankerScorer(ElasticRanker(model))
