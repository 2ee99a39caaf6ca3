"""Moved to :mod:`elasticir.java`; kept so old imports keep working."""

from elasticir.java import anserini_jar, import_pyserini, java_executable, start_jvm

__all__ = ["anserini_jar", "import_pyserini", "java_executable", "start_jvm"]
