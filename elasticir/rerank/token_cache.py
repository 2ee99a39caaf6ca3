"""Moved to :mod:`elasticir.index.token_cache`; kept so old imports keep working."""

from elasticir.index.token_cache import (
    CACHE_FORMAT,
    DEFAULT_SHARD_SIZE,
    MissingTokensError,
    TokenCache,
    TokenEncoder,
    build_token_cache,
    default_cache_dir,
    write_token_cache,
)

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_SHARD_SIZE",
    "MissingTokensError",
    "TokenCache",
    "TokenEncoder",
    "build_token_cache",
    "default_cache_dir",
    "write_token_cache",
]
