"""Moved to :mod:`elasticir.models.loading`; kept so old imports keep working."""

from elasticir.models.loading import (  # noqa: F401
    DEFAULT_MODEL,
    EncoderSettings,
    PassageEncoderSpec,
    model_fingerprint,
    quiet_loading,
    read_levels,
    read_passage_encoder,
    read_settings,
    resolve_model_path,
)

__all__ = [
    "DEFAULT_MODEL",
    "EncoderSettings",
    "PassageEncoderSpec",
    "model_fingerprint",
    "quiet_loading",
    "read_levels",
    "read_passage_encoder",
    "read_settings",
    "resolve_model_path",
]
