"""How should the learned projections be fitted? Variants compared on held-out training queries.

    python benchmarks/projection_fit.py          # writes results/projection-fit.md and .json

Every variant fits the same data as the shipped projections (``elasticir train projection
--corpus msmarco-dl19 --corpus nq-open``: the unlabelled training queries, the 20k-passage
training pool plus the passages of both corpora, all as the base model's vectors) and is
scored on the same held-out queries (one in twenty, never fitted on):

* **top-10 kept, corpus**: the share of the full 384-d model's top 10 over *all* ~43k
  passages that the projection's own top 10 over them keeps: what a projected index returns;
* the same for the held-out MS MARCO dev queries alone (the kind of query DL19 asks);
* **top-10 kept, candidates** and **KL** over each query's 32 teacher-mined candidates: what
  the fit optimises.

Two more kinds of row ask whether the *query* side could do better against the shipped
passage matrix: a bound (each held-out query's own best vector in the projected space,
fitted to its own full ranking; not a method) and query maps trained for it on the other
queries (a matrix of their own, or a residual MLP). All rows take ~25 min on 2 cores;
``--variant NAME`` reruns some and keeps the others' rows.

Only passage texts of the corpora are read, never their queries or judgements, so a variant
picked from this table can be benchmarked on DL19 and NQ without tuning on them. Needs the
teacher cache ``models/cache`` (built here when absent: ~10 min for the pool, ~8 min for the
corpora on 2 cores).
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
from elasticir.data.datasets import data_root  # noqa: E402
from elasticir.data.topics import read_topics  # noqa: E402
from elasticir.train.projection import (  # noqa: E402
    ProjectionTrainConfig,
    fit_projection,
    fitting_data,
    heldout_rows,
    project_vectors,
    top10_kept,
)

# name -> fit_projection keyword arguments (the rest as `elasticir train projection`)
VARIANTS = {
    "PCA (no fitting)": {"steps": 0},
    "shipped: KL over teacher-mined + in-batch": {},
    "+ 32 student-mined negatives": {"student_negatives": 32},
    "tau 0.02": {"temperature": 0.02},
    "tau 0.02 + 32 student-mined negatives": {"temperature": 0.02, "student_negatives": 32},
    "tau 0.1": {"temperature": 0.1},
    "projected vectors not re-normalised": {"normalize": False},
}
# not a method: each held-out query's own 128-d vector fitted to its own full ranking over the
# whole corpus, passages through the shipped matrix: a rough ceiling for any query encoder
ORACLE = "bound: oracle query vectors, shipped passage matrix"
# query-side maps trained against the shipped passage matrix (fixed): can a function of the
# 384-d query vector get nearer that bound? name -> (hidden units, 0: linear; full-corpus loss)
QUERY_HEADS = {
    "query matrix of its own, shipped passage matrix": (0, False),
    "query MLP (1024 hidden), shipped passage matrix": (1024, False),
    "query MLP (1024 hidden), shipped passage matrix, KL over all passages": (1024, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("models/cache"))
    parser.add_argument("--dims", default="128", help="comma-separated target dimensions")
    parser.add_argument(
        "--variant",
        action="append",
        choices=[*VARIANTS, ORACLE, *QUERY_HEADS],
        default=None,
        help="Run only these (repeatable); rows of the others are kept from the last report",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/projection-fit"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ProjectionTrainConfig(
        output=Path("unused.safetensors"),
        cache=args.cache,
        corpora=("msmarco-dl19", "nq-open"),
        threads=args.threads,
    )
    log("teacher vectors (cached, resumable)")
    data = fitting_data(config, progress=True)
    texts = data.distillation.queries
    marco = read_topics(data_root() / "topics" / "topics.msmarco-passage.dev-subset.txt")
    marco_texts = {query.text for query in marco}
    is_marco = np.array([text in marco_texts for text in texts])
    log(f"{len(texts)} queries ({is_marco.sum()} MS MARCO dev), {len(data.passages)} passages")
    dims = [int(d) for d in args.dims.split(",")]
    report = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "data": {
            "queries": len(texts),
            "msmarco_queries": int(is_marco.sum()),
            "passages": len(data.passages),
            **data.distillation.data,
        },
        "defaults": {
            k: getattr(config, k) for k in ("steps", "batch_size", "lr", "temperature", "seed")
        },
        "variants": {},
    }
    previous = report_path(args.out, ".json")
    if args.variant and previous.is_file():  # keep the other variants' rows of the same data
        kept = json.loads(previous.read_text())
        if kept.get("data") == json.loads(json.dumps(report["data"])):
            report["variants"] = {
                name: rows for name, rows in kept["variants"].items() if name not in args.variant
            }
    normalize = data.distillation.settings.normalize
    for name in args.variant or [*VARIANTS, ORACLE, *QUERY_HEADS]:
        if name == ORACLE or name in QUERY_HEADS:
            for dim in dims:
                log(f"{name}: {dim} dims")
                started = time.perf_counter()
                held = heldout_rows(len(texts), dim, config.seed)
                matrix = torch.from_numpy(shipped_projections(data.distillation)[dim].matrix.copy())
                if name == ORACLE:
                    kept_all = _oracle(data.queries, data.passages, held, matrix, normalize)
                else:
                    hidden, everything = QUERY_HEADS[name]
                    kept_all = _query_head(
                        data, held, matrix, normalize, hidden, everything, config
                    )
                row = {
                    "dim": dim,
                    "kwargs": {},
                    "seconds": round(time.perf_counter() - started, 1),
                    "heldout_corpus_top10_kept": round(float(np.mean(kept_all)), 4),
                    "heldout_msmarco_corpus_top10_kept": round(
                        float(np.mean(kept_all[is_marco[held]])), 4
                    ),
                    "heldout_msmarco_queries": int(is_marco[held].sum()),
                }
                log(json.dumps(row))
                _put(report, name, row)
                _write(args.out, report)
            continue
        for dim in dims:
            kwargs = {
                "steps": config.steps,
                "batch_size": config.batch_size,
                "lr": config.lr,
                "temperature": config.temperature,
                "seed": config.seed,
                "normalize": data.distillation.settings.normalize,
                **VARIANTS[name],
            }
            log(f"{name}: {dim} dims")
            started = time.perf_counter()
            fitted, info = fit_projection(
                data.queries, data.passages, data.candidates, dim, progress=True, **kwargs
            )
            seconds = time.perf_counter() - started
            passage = torch.from_numpy(fitted.passage)
            query = passage if fitted.query is None else torch.from_numpy(fitted.query)
            held = heldout_rows(len(texts), dim, config.seed)
            marco = data.queries[torch.from_numpy(held[is_marco[held]])]
            marco_kept = top10_kept(
                marco,
                data.passages,
                project_vectors(marco, query, kwargs["normalize"]),
                project_vectors(data.passages, passage, kwargs["normalize"]),
            ).mean()
            row = {
                "dim": dim,
                "kwargs": VARIANTS[name],
                "seconds": round(seconds, 1),
                "heldout_corpus_top10_kept": info["heldout_corpus_top10_kept"],
                "heldout_msmarco_corpus_top10_kept": round(float(marco_kept), 4),
                "heldout_msmarco_queries": int(len(marco)),
                "heldout_top10_kept": info["heldout_top10_kept"],
                "heldout_kl": info["heldout_kl"],
            }
            log(json.dumps(row))
            _put(report, name, row)
            _write(args.out, report)
    log(f"wrote {args.out}.md and .json")


def _put(report: dict, name: str, row: dict) -> None:
    """Set variant ``name``'s row for ``row["dim"]``, keeping its rows of other dims."""
    rows = [r for r in report["variants"].get(name, []) if r["dim"] != row["dim"]]
    report["variants"][name] = rows + [row]


def shipped_projections(distillation) -> dict:
    """The projections shipped for the teacher's space: ``{dim: Projection}``."""
    from elasticir.models.projection import read_projections, shipped_projections_path

    return read_projections(shipped_projections_path(distillation.teacher_fingerprint))


def _oracle(queries, passages, rows, matrix, normalize: bool, steps: int = 150) -> np.ndarray:
    """Per held-out query: the share of its full top 10 over all passages kept by the best
    query vector gradient descent finds for it in the projected space (listwise KL to its own
    full scores over every passage, tau 0.05, from its projected vector)."""
    fitted = []
    with torch.no_grad():
        projected = project_vectors(passages, matrix, normalize)
    for i in range(0, len(rows), 256):
        index = torch.from_numpy(rows[i : i + 256])
        with torch.no_grad():
            teacher = F.log_softmax(queries[index] @ passages.T / 0.05, dim=-1)
        vector = torch.nn.Parameter(project_vectors(queries[index], matrix, normalize))
        optimizer = torch.optim.Adam([vector], lr=0.02)
        for _ in range(steps):
            own = F.normalize(vector, dim=-1) if normalize else vector
            student = F.log_softmax(own @ projected.T / 0.05, dim=-1)
            loss = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        fitted.append(vector.detach())
    own = queries[torch.from_numpy(rows)]
    return top10_kept(own, passages, torch.cat(fitted), projected)


def _query_head(data, held, matrix, normalize, hidden, everything, config) -> np.ndarray:
    """Per held-out query, the share of its full top 10 over all passages kept when queries go
    through a trained map (linear with ``hidden`` 0, else the shipped matrix plus a residual
    MLP, zero-initialised) and passages through the shipped ``matrix``. Trained like the
    projections (Adam, ``config``'s steps, batch, lr and temperature) on the other queries,
    over their mined candidates and in-batch passages, or with ``everything`` over all
    passages."""
    queries, passages = data.queries, data.passages
    candidates = torch.from_numpy(np.asarray(data.candidates, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(queries)), held)
    torch.manual_seed(config.seed)
    if hidden:
        head = torch.nn.Sequential(
            torch.nn.Linear(matrix.shape[1], hidden),
            torch.nn.GELU(),
            torch.nn.Linear(hidden, matrix.shape[0]),
        )
        torch.nn.init.zeros_(head[2].weight)
        torch.nn.init.zeros_(head[2].bias)
    else:
        head = torch.nn.Linear(matrix.shape[1], matrix.shape[0], bias=False)
        with torch.no_grad():
            head.weight.copy_(matrix)

    def queries_of(q: torch.Tensor) -> torch.Tensor:
        y = q @ matrix.T + head(q) if hidden else head(q)
        return F.normalize(y, dim=-1) if normalize else y

    projected = project_vectors(passages, matrix, normalize)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    tau = config.temperature
    for _ in range(config.steps):
        picks = torch.randint(len(train), (config.batch_size,), generator=generator)
        rows = torch.from_numpy(train[picks.numpy()])
        pool = torch.arange(len(passages)) if everything else torch.unique(candidates[rows])
        teacher = F.log_softmax(queries[rows] @ passages[pool].T / tau, dim=-1)
        student = F.log_softmax(queries_of(queries[rows]) @ projected[pool].T / tau, dim=-1)
        loss = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        own = queries[torch.from_numpy(held)]
        return top10_kept(own, passages, queries_of(own), projected)


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    report_path(out, ".json").write_text(json.dumps(report, indent=1) + "\n")
    d = report["data"]
    lines = [
        "# Fitting the learned projections: variants on held-out training queries",
        "",
        f"Machine: {report['machine']}. Last run {report['when']} (`--variant` runs keep the "
        "other rows of the same data). Regenerate: "
        "`python benchmarks/projection_fit.py`.",
        "",
        f"Data: {d['queries']:,} unlabelled training queries ({d['msmarco_queries']:,} of them "
        f"MS MARCO dev), {d['passages']:,} passages (the training pool plus the passages of "
        "msmarco-dl19 and nq-open), all the base model's vectors. One query in twenty is held "
        "out of every fit. Defaults: "
        + ", ".join(f"{k} {v}" for k, v in report["defaults"].items())
        + ".",
        "",
        "| variant | dim | top-10 kept, corpus | MS MARCO only | top-10 kept, candidates "
        "| KL, candidates | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in report["variants"].items():
        for r in rows:
            lines.append(
                f"| {name} | {r['dim']} | {r['heldout_corpus_top10_kept']:.4f} "
                f"| {r['heldout_msmarco_corpus_top10_kept']:.4f} "
                + (
                    f"| {r['heldout_top10_kept']:.4f} | {r['heldout_kl']:.4f} "
                    if "heldout_kl" in r
                    else "| | "
                )
                + f"| {r['seconds']:.0f} |"
            )
    lines += [
        "",
        "- *top-10 kept, corpus*: share of the full 384-d top 10 over all passages that the "
        "projected top 10 over all passages keeps (held-out queries; MS MARCO only: the held-out "
        "MS MARCO dev queries).",
        "- *candidates*: the same within each query's 32 teacher-mined candidates, and the KL "
        "of the full model's softmax over them to the projection's, at the variant's own "
        "temperature: what the fit optimises.",
        "- *bound*: not a method. Passages go through the shipped matrix; each held-out "
        "query gets the vector that gradient descent finds for it in the projected space, "
        "fitted to its own full ranking over all passages (150 Adam steps on the listwise KL, "
        "tau 0.05): a rough ceiling for any query encoder searching those projected "
        "passages.",
        "- *query ...*: queries through a map of their own, trained on the other queries "
        "against the shipped passage matrix (fixed): a matrix, or the shipped matrix plus a "
        "residual MLP on the 384-d query vector; over mined candidates and in-batch passages "
        "like the projections, or over all passages.",
    ]
    report_path(out, ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
