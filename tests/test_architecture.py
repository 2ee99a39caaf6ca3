"""The architecture as a test: imports go in one direction, and no private name crosses modules.

The layers, bottom to top (``docs/architecture.md`` says why each sits where it does)::

    0  checks, java, progress, data, compute   files and records; the JVM; levels, FLOPs,
                                               exit policies
    1  models, eval                          ElasticDenser, ElasticRanker, DiPair; measures
    2  index, retrieve                       stores, caches, FAISS; dense, BM25, fusion
    3  pipeline                              stages, >> and %, per-call compute
    4  rerank                                scorers, calibration, the factory
    5  schedule                              (the elastic schedule)
    6  serve, simulation, loadtest
    7  api, quickstart
    7.5 bench                                the benchmark scripts' shared helpers
    8  cli
    -  train, beside the stack: it may use layers 0-2 (its teachers and negatives come from
       the same models, stores and searches inference uses) and nothing above; only the api
       and the cli import it.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``. The old
paths kept for compatibility (``elasticir.encoders``, ``elasticir.rerank.pipeline``,
``elasticir.rerank.token_cache``) only re-export, and sit at the layer of what they re-export.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAIN = "train"
LAYERS = {
    "elasticir.checks": 0,
    "elasticir.java": 0,
    "elasticir.progress": 0,
    "elasticir.machine": 0,
    "elasticir.data": 0,
    "elasticir.compute": 0,
    "elasticir.models": 1,
    "elasticir.encoders": 1,
    "elasticir.eval": 1,
    "elasticir.index": 2,
    "elasticir.retrieve": 2,
    "elasticir.rerank.token_cache": 2,
    "elasticir.pipeline": 3,
    "elasticir.rerank.pipeline": 4,
    "elasticir.rerank": 4,
    "elasticir.schedule": 5,
    "elasticir.serve": 6,
    "elasticir.simulation": 6,
    "elasticir.loadtest": 6,
    "elasticir.api": 7,
    "elasticir.quickstart": 7,
    "elasticir.bench": 7.5,  # the benchmark scripts' helpers: anything but the CLI
    "elasticir.cli": 8,
    "elasticir.train": TRAIN,
}
TRAIN_MAY_USE = 2  # the highest layer training may import
IMPORTS_TRAIN = ("elasticir.api", "elasticir.cli")  # the only modules above training
COMPAT = {  # old import paths, kept as re-exports; their targets must stay where they are
    "elasticir.encoders": "elasticir.models",
    "elasticir.rerank.pipeline": "elasticir.pipeline",
    "elasticir.rerank.token_cache": "elasticir.index.token_cache",
    "elasticir.retrieve.java": "elasticir.java",
    "elasticir.rerank.policies": "elasticir.rerank.calibration",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "elasticir").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    for path in sorted((ROOT / "cli").glob("*.py")):
        name = "elasticir.cli" if path.stem == "__init__" else f"elasticir.cli.{path.stem}"
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names imported from it)`` for every elasticir import."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("elasticir"):
                continue
            plain = []
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:  # `from package import submodule`
                    out.append((sub, node.lineno, []))
                else:
                    plain.append(alias.name)
            if plain:
                out.append((node.module, node.lineno, plain))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names if a.name.startswith("elasticir")]
    return out


def _layer(module: str) -> int | str | None:
    best = max(
        (p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None
    )
    return None if best is None else LAYERS[best]


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if m != "elasticir" and _layer(m) is None]
    assert unplaced == [], f"give these a layer in LAYERS (and docs/architecture.md): {unplaced}"


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for module, imports in GRAPH.items():
        mine = _layer(module)
        for target, line, _ in imports:
            theirs = _layer(target)
            if module == "elasticir" or target == "elasticir" or theirs is None:
                continue
            if mine == TRAIN:
                ok = theirs == TRAIN or theirs <= TRAIN_MAY_USE
            elif theirs == TRAIN:
                ok = module.startswith(IMPORTS_TRAIN)
            else:
                ok = theirs <= mine
            if not ok:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} -> {target}")
    assert wrong == [], "upward imports:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = {
        m: {t for t, _, _ in imports if t in MODULES and t != m} for m, imports in GRAPH.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == [], f"import cycles: {cycles}"


def test_no_private_name_crosses_modules() -> None:
    crossing = [
        f"{MODULES[module].relative_to(ROOT)}:{line}: {name} from {target}"
        for module, imports in GRAPH.items()
        for target, line, names in imports
        for name in names
        if name.startswith("_") and target != module
    ]
    assert crossing == [], "private names imported across modules:\n" + "\n".join(crossing)


@pytest.mark.parametrize("old, new", sorted(COMPAT.items()))
def test_old_import_paths_still_work(old: str, new: str) -> None:
    before = importlib.import_module(old)
    after = importlib.import_module(new)
    shared = [name for name in getattr(before, "__all__", []) if hasattr(after, name)]
    assert shared, f"{old} re-exports nothing of {new}"
    for name in shared:
        assert getattr(before, name) is getattr(after, name), name


def test_importing_elasticir_is_cheap_and_silent() -> None:
    import subprocess
    import sys

    code = (
        "import sys, elasticir, elasticir.compute, elasticir.data, elasticir.models, "
        "elasticir.pipeline\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'jnius') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "" and done.stderr == "", (done.stdout, done.stderr)
