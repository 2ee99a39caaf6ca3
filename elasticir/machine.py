"""What a run was measured on: the CPU and the instruction sets its speed depends on (every
speed table prints it; the profiler records it with the operating points)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

RELEVANT_FLAGS = (
    # x86: vector widths, fused multiply-add, half/bfloat16 and int8 dot products, AMX tiles.
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    # Arm (the ``Features`` line): NEON, its fp16 and dot products, SVE, bfloat16, int8 matmul.
    "asimd",
    "asimdhp",
    "asimddp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
    "sme",
)
"""The CPU flags that decide how fast fp32, bf16 and int8 inference run, in report order."""

_MODEL_KEYS = ("model name", "hardware", "processor", "cpu model")


def cpu_info(text: str | None = None) -> dict:
    """``{"model": ..., "flags": [...]}`` of this CPU from ``/proc/cpuinfo`` (or from ``text``,
    that file's content): the first core's model name and which of :data:`RELEVANT_FLAGS` it
    reports (x86 ``flags``, Arm ``Features``), in that order. Where the file cannot be read (not
    Linux), the model is :func:`platform.processor` or the architecture, and no flags."""
    if text is None:
        try:
            text = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key not in fields:  # the first core's line of each kind
            fields[key] = value.strip()
    names = (fields.get(key, "") for key in _MODEL_KEYS)
    # A number is a core index (Arm's "processor : 0"), not a model name.
    model = next((name for name in names if name and not name.isdigit()), "")
    present = set((fields.get("flags") or fields.get("features") or "").split())
    return {
        "model": model or platform.processor() or platform.machine(),
        "flags": [flag for flag in RELEVANT_FLAGS if flag in present],
    }


def machine() -> dict:
    """The machine a report was measured on: Python and torch versions, torch's thread count,
    the architecture (``cpu``), the core count, the CPU model and its relevant instruction-set
    flags (:func:`cpu_info`). Imports torch."""
    import torch

    cpu = cpu_info()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu_model": cpu["model"],
        "flags": cpu["flags"],
    }
