"""What the repository's own committed files promise: no machine paths, docs that link."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# An absolute path of some machine: a user's home, a scratch or work folder.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users|mnt)/[\w.-]+")
COMMITTED = ("README.md", "docs", "results", "configs", "examples")


def _files() -> list[Path]:
    found = []
    for name in COMMITTED:
        path = ROOT / name
        found += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return found


def test_no_committed_file_holds_a_machine_path() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {match.group(0)}"
        for path in _files()
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        for match in [MACHINE_PATH.search(line)]
        if match
    ]
    assert hits == [], "machine paths in committed files:\n" + "\n".join(hits)


def test_links_in_the_readme_and_docs_resolve() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == [], broken


def test_every_package_is_installed() -> None:
    """pyproject lists packages by name (the CLI folder maps into the namespace): a package
    missing from the list would be absent from a built wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "elasticir").rglob("__init__.py")
    } | {"elasticir.cli"}
    assert on_disk - listed == set(), f"add to pyproject's packages: {sorted(on_disk - listed)}"
    assert listed - on_disk == set(), f"listed but not on disk: {sorted(listed - on_disk)}"
