"""elasticir: dense retrieval and reranking with compute-elastic models.

Importing the package is cheap and silent: torch, FAISS and the JVM load on first use.
The Python API is in :mod:`elasticir.api`; the building blocks in the sub-packages
``data``, ``encoders``, ``index``, ``retrieve`` and ``eval``.
"""

__version__ = "0.1.0"
