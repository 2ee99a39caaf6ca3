"""The shape of a DiPair model, and its defaults resolved against an encoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elasticir.checks import check_int

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["DiPairConfig", "check_lengths", "resolve_config"]


@dataclass(frozen=True)
class DiPairConfig:
    """The shape of a DiPair model.

    ``k`` passage tokens and ``query_tokens`` query tokens are kept (first ones, [CLS]
    included), projected to ``dim``; the head has ``layers`` pre-norm Transformer layers of
    width ``dim`` with ``heads`` attention heads and a feed-forward size of ``ffn``
    (``None``: ``4 * dim``). ``query_max_length`` / ``passage_max_length`` are how many tokens
    the encoder reads before its outputs are truncated (``None``: the encoder's own passage
    length, resolved when a model is created). ``residual`` adds the bi-encoder's similarity
    to the head's score (see :mod:`elasticir.models.dipair.head`).
    """

    k: int = 32
    query_tokens: int = 16
    dim: int = 64
    layers: int = 2
    heads: int = 4
    ffn: int | None = None
    dropout: float = 0.1
    query_max_length: int = 64
    passage_max_length: int | None = None
    residual: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual must be true or false, got {self.residual!r}")
        for name in ("k", "query_tokens", "dim", "layers", "heads", "query_max_length"):
            check_int(name, getattr(self, name))
        for name in ("ffn", "passage_max_length"):
            check_int(name, getattr(self, name), optional=True)
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.query_tokens > self.query_max_length:
            raise ValueError(
                f"query_tokens ({self.query_tokens}) cannot exceed query_max_length "
                f"({self.query_max_length})"
            )
        if self.passage_max_length is not None and self.k > self.passage_max_length:
            raise ValueError(
                f"k ({self.k}) cannot exceed passage_max_length ({self.passage_max_length})"
            )

    @property
    def ffn_size(self) -> int:
        return self.ffn if self.ffn is not None else 4 * self.dim

    def head_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "heads": self.heads,
            "ffn": self.ffn_size,
            "dropout": self.dropout,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What fingerprints and training keys hash: :meth:`to_dict` without ``residual``
        when it is off, so plain models keep the fingerprints they had before it existed."""
        values = self.to_dict()
        if not values["residual"]:
            del values["residual"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DiPairConfig:
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DiPair setting(s) {', '.join(unknown)}")
        return cls(**values)


def resolve_config(config: DiPairConfig, encoder: ElasticDenser) -> DiPairConfig:
    """``config`` with every default resolved: ``passage_max_length`` from the encoder, and
    ``ffn`` to its size (so equal models have equal configs, and equal fingerprints)."""
    length = config.passage_max_length
    return dataclasses.replace(
        config,
        ffn=config.ffn_size,
        passage_max_length=int(encoder.passage_max_length) if length is None else length,
    )


def check_lengths(encoder: ElasticDenser, config: DiPairConfig) -> None:
    """Raises ``ValueError`` when ``config`` reads more tokens than ``encoder`` has
    positions for."""
    longest = max(config.query_max_length, int(config.passage_max_length or 0))
    positions = getattr(encoder.model.config, "max_position_embeddings", None)
    if positions is not None and longest > int(positions):
        raise ValueError(f"the encoder reads at most {positions} tokens; asked for {longest}")
