"""What the training configs share: their JSON file form and the settings that key a run.

Each ``elasticir train ...`` command is decided by one frozen dataclass (e.g.
:class:`~elasticir.train.denser.DenserTrainConfig`) that mixes in :class:`TrainConfigFile`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from elasticir.checks import check_int
from elasticir.data.errors import InputFormatError
from elasticir.data.manifest import MODEL_MANIFEST

__all__ = [
    "DEFAULT_MODEL_NAME",
    "TrainConfigFile",
    "check_int",
    "check_levels",
    "check_names",
    "check_training_output",
    "read_config_file",
]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# What a training run puts in its output directory before it finishes (and after).
_RUN_MARKS = (MODEL_MANIFEST, "checkpoint", "cache", "training-log.jsonl")


def check_training_output(output: Path) -> None:
    """Refuse an output that a training run must not write into: a file, or a directory
    holding something other than a run's own files (a model it did not write, a project).

    Allowed: nothing there, an empty directory, or the output of a training run (finished
    or not), which the run resumes or returns at once.
    """
    output = Path(output)
    if not output.exists():
        return
    if not output.is_dir():
        raise ValueError(f"{output} is a file; a trained model is a directory: choose another")
    names = {p.name for p in output.iterdir()}
    if not names or names & set(_RUN_MARKS):
        return
    raise ValueError(
        f"{output} exists and is not a training run's directory (it holds "
        f"{', '.join(sorted(names)[:3])}{' ...' if len(names) > 3 else ''}); refusing to "
        "write a model into it: choose another output directory (nothing was written)"
    )


_Config = TypeVar("_Config", bound="TrainConfigFile")


class TrainConfigFile:
    """``to_json`` / ``from_json`` (and the dict forms) of a training config dataclass.

    ``_RUN_ONLY_FIELDS`` names the fields that do not change what is trained (where the run
    writes, how fast it runs): they may differ between a run and its resume, and are left out
    of :meth:`training_fields`, which keys checkpoints and caches.
    """

    _RUN_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ()
    # fields every training config has (declared here for the methods below)
    base_model: str | None
    seed: int

    def _settle_paths(self, *names: str) -> None:
        """In ``__post_init__``: require ``output``; make it and the named optional fields
        Paths, and ``base_model`` a string."""
        output = getattr(self, "output", None)
        if output is None or str(output) == "":
            raise ValueError("a training run needs an output directory (output=...)")
        object.__setattr__(self, "output", Path(output))
        for name in names:
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else Path(value))
        if getattr(self, "base_model", None) is not None:
            object.__setattr__(self, "base_model", str(self.base_model))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: paths as strings, tuples as lists."""
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[item.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls: type[_Config], values: dict[str, Any]) -> _Config:
        """The config of ``values`` (any subset of the fields); JSON lists of the tuple-typed
        fields become tuples. Raises ``ValueError`` naming unknown keys and the known ones."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        known = {item.name for item in fields}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values = dict(values)
        for item in fields:
            if str(item.type).startswith("tuple[") and isinstance(values.get(item.name), list):
                values[item.name] = tuple(values[item.name])
        return cls(**values)

    @classmethod
    def from_json(cls: type[_Config], path: str | Path) -> _Config:
        """Read a config file written by :meth:`to_json` (any subset of the fields).

        ``"extends": "other.json"`` (relative to this file) starts from that file's settings
        and overrides them with this one's, so a run that differs from another by one setting
        says only that. Relative paths inside are taken as written, i.e. relative to the
        working directory.
        """
        return cls.from_dict(read_config_file(path))

    def training_fields(self) -> dict[str, Any]:
        """The settings that decide the trained weights (not where or how fast it runs)."""
        values = self.to_dict()
        for name in self._RUN_ONLY_FIELDS:
            values.pop(name)
        return values

    def base_model_name(self) -> str:
        """How ``elasticir.json`` names the base model: a name or an absolute path."""
        if self.base_model is None:
            return DEFAULT_MODEL_NAME
        path = Path(self.base_model).expanduser()
        return str(path.resolve()) if path.exists() else self.base_model


def check_levels(levels: object) -> tuple[str, ...]:
    """A config's ``levels`` list as canonical level names, duplicates dropped, order kept."""
    from elasticir.compute.levels import Level

    if isinstance(levels, str):
        raise ValueError(f"levels is a list of levels, got the string {levels!r}")
    names = tuple(dict.fromkeys(str(Level(lv)) for lv in levels))  # type: ignore[attr-defined]
    if not names:
        raise ValueError("levels is empty: name at least one level, or None for defaults")
    return names


def check_names(field: str, values: object, known: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A config's list of names (e.g. training ``sources``): each known, duplicates dropped."""
    if isinstance(values, str):
        raise ValueError(f"{field} is a list of names, got the string {values!r}")
    names = tuple(dict.fromkeys(str(v) for v in values))  # type: ignore[attr-defined]
    unknown = [v for v in names if v not in known]
    if unknown or not names:
        raise ValueError(
            f"unknown training {field} {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(known)}"
        )
    return names


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of a config file, its ``"extends"`` chain resolved (later files win)."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise InputFormatError(path, None, "an extends chain without a loop", chain)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputFormatError(path, err.lineno, "a JSON object of settings", err.msg) from None
    if not isinstance(values, dict):
        raise InputFormatError(path, None, "a JSON object of settings", type(values).__name__)
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise InputFormatError(path, None, '"extends": the path of another config', repr(base))
    parent = path.parent / base
    if not parent.is_file():
        raise InputFormatError(path, None, f'"extends": an existing config ({parent})', base)
    return {**read_config_file(parent, (*_seen, path.resolve())), **values}
