"""Which sub-network shape at about half the FLOPs stays closest to the full model untrained?

    python benchmarks/level_shapes.py            # writes results/level-shapes.md and .json

Plain truncation (importance-ranked and reordered as ``train denser`` does, no training) of
the base model at several shapes of (nearly) the same cost: fewer layers, or every layer with
fewer attention heads and/or FFN neurons. Each shape encodes unlabelled training queries
(a seeded sample of the distillation queries: MS MARCO dev / DPR NQ dev / TriviaQA dev
questions, never an evaluation query) and is compared with the full model on them:

* cosine of its query vector to the full model's (the alignment the training term pulls);
* top-10 agreement: the share of the full model's top-10 passages of the 20k-passage
  training pool that the shape also ranks in its top 10;
* KL of the full model's softmax over each query's 32 mined candidates (tau 0.05, the
  training temperature) to the shape's: what listwise distillation has to remove.

No labels and no evaluation data are read, so the shape chosen from this table can be used
for the benchmark without tuning on it. Needs the distillation cache that ``elasticir train
denser -c configs/denser-minilm-focus.json`` builds (built here when absent, ~10 min).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import log, machine, report_path  # noqa: E402
from elasticir.compute.levels import Level  # noqa: E402
from elasticir.models.elastic import flops_ratio  # noqa: E402
from elasticir.train.denser import (  # noqa: E402
    DenserTrainConfig,
    initial_student,
    prepare_distillation,
)

SHAPES = (
    "full",
    "L6-W75",
    "L6-W50",
    "L6-H100-F23",
    "L6-H75-F37",
    "L6-H25-F63",
    "L5-W60",
    "L4-W75",
    "L3",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/denser-minilm-focus.json"))
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--shape", action="append", help="a level to compare (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("results/level-shapes"))
    args = parser.parse_args()

    config = DenserTrainConfig.from_json(args.config)
    torch.set_num_threads(config.threads or 2)
    distillation = prepare_distillation(config)
    model, _ = initial_student(config, distillation)
    model.eval()
    rng = np.random.default_rng([config.seed, 907])
    rows = np.sort(rng.choice(len(distillation.queries), size=args.queries, replace=False))
    teacher = distillation.teacher_queries[torch.from_numpy(rows)]
    passages = distillation.passages
    teacher_scores = teacher @ passages.T
    teacher_top = teacher_scores.topk(10, dim=-1).indices
    candidates = torch.from_numpy(distillation.candidates[rows])
    tau = config.temperature

    report = {
        "machine": machine(),
        "config": str(args.config),
        "queries": len(rows),
        "layers": int(model.config.num_hidden_layers),
        "shapes": [],
    }
    for spec in args.shape or SHAPES:
        started = time.perf_counter()
        with torch.inference_mode():
            student = torch.cat(
                [
                    distillation.encode(model, rows[start : start + 128], spec)
                    for start in range(0, len(rows), 128)
                ]
            )
        scores = student @ passages.T
        top = scores.topk(10, dim=-1).indices
        overlap = (top[:, :, None] == teacher_top[:, None, :]).any(-1).float().mean().item()
        t_log = F.log_softmax(teacher_scores.gather(1, candidates) / tau, dim=-1)
        s_log = F.log_softmax(scores.gather(1, candidates) / tau, dim=-1)
        kl = max(F.kl_div(s_log, t_log, log_target=True, reduction="batchmean").item(), 0.0)
        cosine = F.cosine_similarity(student, teacher, dim=-1).mean().item()
        row = {
            "level": spec,
            "flops": flops_ratio(model.config, spec),
            "cosine": cosine,
            "top10_agreement": overlap,
            "kl": kl,
        }
        report["shapes"].append(row)
        log(f"{spec}: {row} ({time.perf_counter() - started:.0f} s)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Sub-network shapes before training (plain truncation of the base model)",
        "",
        f"Machine: {report['machine']}. {len(rows)} unlabelled training queries, 20k-passage "
        "training pool, compared with the full model. Regenerate: `python "
        "benchmarks/level_shapes.py`.",
        "",
        "| level | FLOPs | cosine to full | top-10 agreement | KL over 32 candidates |",
        "|---|---|---|---|---|",
    ]
    for row in report["shapes"]:
        lines.append(
            f"| {row['level']} | {row['flops']:.3f} | {row['cosine']:.4f} | "
            f"{row['top10_agreement']:.4f} | {row['kl']:.4f} |"
        )
    half = [row for row in report["shapes"] if row["flops"] <= 0.5]
    if half:
        agree = max(half, key=lambda row: row["top10_agreement"])
        close = min(half, key=lambda row: row["kl"])
        lines += [
            "",
            f"Closest to full at <= 50% of the FLOPs: {agree['level']} by top-10 agreement "
            f"({agree['top10_agreement']:.4f}), {close['level']} by KL ({close['kl']:.4f}).",
        ]
        layers = depth_note(report, half)
        if layers:
            lines[-1] += " " + layers
    report_path(args.out, ".md").write_text("\n".join(lines) + "\n")
    log(f"wrote {report_path(args.out, '.md')}")


def depth_note(report: dict, half: list[dict]) -> str:
    """A sentence on depth against width among the <= 50% shapes, from their numbers."""
    shallow = [r for r in half if Level(r["level"]).depth not in (None, report["layers"])]
    deep = [r for r in half if r not in shallow]
    if not shallow or not deep:
        return ""
    best_shallow = max(r["top10_agreement"] for r in shallow)
    best_deep, worst_deep = (f(r["top10_agreement"] for r in deep) for f in (max, min))
    return (
        f"Shapes with fewer layers agree with full on at most {best_shallow:.4f} of its "
        f"top 10, the full-depth shapes on {worst_deep:.4f} to {best_deep:.4f}."
    )


if __name__ == "__main__":
    main()
