"""Train ElasticDenser configs on a lent GPU machine, and bring the models back compactly.

The GPU machine sees only the repository (64 MiB at most) and sends back at most 64 MiB, so
the base model and the data travel in a packed form and the trained models come back without
the parts training never changes. Three steps:

``pack`` (here)::

    python benchmarks/denser_gpu.py pack            # -> .gpu/ (git-ignored): ~50 MB

writes the base model's weights in fp16 (45 MB instead of 91 MB) with its tokenizer, and the
data folder as one tarball.

``run`` (on the GPU machine, ``.gpu`` carried)::

    python benchmarks/denser_gpu.py run --budget 420 --out $OUT CONFIG.json ...
    python benchmarks/denser_gpu.py run --steps 1850 --out $OUT CONFIG.json ...  # pinned

unpacks the data, turns the fp16 base back into an fp32 model (the teacher and the student's
start are therefore the base model rounded to fp16: their weights differ from the shipped ones
by < 0.05% relative), prepares every config's teacher data, times a few training steps of the
first config, sets ``steps`` so that all configs, trained side by side on the one GPU, end
inside ``--budget`` seconds (at most ``--max-steps``), trains them, and writes to ``--out``
each model's trained tensors (fp16, without the frozen word embeddings and the unused pooler)
in two files, and one tarball of the configs, manifests and training logs.

``unpack`` (here)::

    python benchmarks/denser_gpu.py unpack --from DIR   # -> models/<config output name>

rebuilds each model directory: the shipped fp32 base model with the returned tensors in place
(cast to fp32), the base tokenizer, and ``elasticir.json`` whose passage encoder is the shipped
base model (the space the model was trained into, up to that fp16 rounding); the manifest's
``"gpu"`` entry says all of this.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / ".gpu"
DATA_PARTS = ("topics", "train", "msmarco-dl19", "nq-open")
FROZEN = ("embeddings.word_embeddings.weight",)  # never trained (train_word_embeddings=False)
UNUSED = ("pooler.",)  # no gradient reaches the pooler: mean pooling
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def base_model_dir() -> Path:
    from elasticir.models.loading import resolve_model_path

    return Path(resolve_model_path(None))


# --------------------------------------------------------------------------- pack (here)


def pack(data_root: Path) -> None:
    base = base_model_dir()
    target = PACK / "base"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    state = load_file(str(base / "model.safetensors"))
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, target / "w.st")
    for name in ("config.json", *TOKENIZER_FILES, "modules.json", "sentence_bert_config.json"):
        if (base / name).is_file():
            shutil.copy(base / name, target / name)
    pooling = base / "1_Pooling"
    if pooling.is_dir():
        shutil.copytree(pooling, target / "1_Pooling")
    with tarfile.open(PACK / "data.tar.gz", "w:gz") as tar:
        for part in DATA_PARTS:
            tar.add(data_root / part, arcname=f"data/{part}")
    size = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    print(f"packed {PACK}: {size / 1e6:.1f} MB")


# --------------------------------------------------------------------------- run (GPU machine)


def _unpacked(work: Path) -> tuple[Path, Path]:
    """The data folder and an fp32 base model directory built from the pack."""
    if not (PACK / "data.tar.gz").is_file() or not (PACK / "base").is_dir():
        sys.exit(f"{PACK} is missing or incomplete: run `pack` first and carry .gpu")
    data = work / "data"
    if not data.is_dir():
        with tarfile.open(PACK / "data.tar.gz") as tar:
            tar.extractall(work, filter="data")
    base = work / "base"
    if not (base / "model.safetensors").is_file():
        shutil.copytree(PACK / "base", base, dirs_exist_ok=True)
        state = load_file(str(base / "w.st"))
        save_file({k: v.float().contiguous() for k, v in state.items()}, base / "model.safetensors")
        (base / "w.st").unlink()
    return data, base


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _probe(config) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of one training step of ``config`` (weights thrown away)."""
    from elasticir.train.denser import (
        denser_optimizer,
        initial_student,
        level_menu,
        level_plan,
        prepare_distillation,
    )

    distillation = prepare_distillation(config, progress=False)
    model, _ = initial_student(config, distillation)
    model.train(False)
    optimizer = denser_optimizer(model, config)
    plan = level_plan(config, level_menu(model.config, config.levels))
    times = []
    for step in range(1, 26):
        _sync()
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for level in plan(step):
            distillation.losses(model, distillation.batch(step), level).total.backward()
        optimizer.step()
        _sync()
        times.append(time.perf_counter() - started)
    del model, optimizer
    return sorted(times[5:])[len(times[5:]) // 2]


class _OutOfTime(Exception):
    pass


def _train_one(config, deadline: float, log) -> bool:  # type: ignore[no-untyped-def]
    """Trains ``config``; False when the deadline stopped it first."""
    from elasticir.train.denser import train_denser

    started = time.time()

    def on_step(step: int, losses: dict[str, dict[str, float]]) -> None:
        if step % 250 == 0 or step == config.steps:
            text = " ".join(f"{lv}={v['total']:.4f}" for lv, v in losses.items())
            print(
                f"{config.output.name} step {step}/{config.steps} "
                f"{time.time() - started:.0f}s {text}",
                file=log,
                flush=True,
            )
        if time.time() > deadline:
            raise _OutOfTime

    try:
        train_denser(config, progress=False, on_step=on_step)
    except _OutOfTime:
        print(f"{config.output.name}: out of time, not finished", file=log, flush=True)
        return False
    return True


def export(model_dir: Path, base: Path, out: Path) -> list[Path]:
    """The trained tensors of ``model_dir`` in fp16, in two files; checks the frozen ones."""
    state = load_file(str(model_dir / "model.safetensors"))
    reference = load_file(str(base / "model.safetensors"))
    for name in FROZEN:
        if not torch.equal(state[name], reference[name]):
            raise RuntimeError(f"{model_dir}: {name} changed in training; it cannot be left out")
    kept = {
        k: v.to(torch.float16).contiguous()
        for k, v in state.items()
        if k not in FROZEN and not k.startswith(UNUSED)
    }
    names = sorted(kept)
    half, total, first = sum(v.numel() for v in kept.values()) // 2, 0, []
    for name in names:
        if total < half:
            first.append(name)
            total += kept[name].numel()
    paths = []
    for part, group in enumerate((first, [n for n in names if n not in first])):
        path = out / f"{model_dir.name}.part{part}.safetensors"
        save_file({n: kept[n] for n in group}, path)
        paths.append(path)
    return paths


def bundle(tar: tarfile.TarFile, model_dir: Path, record: dict) -> None:
    """Adds what ``unpack`` needs beside the weights: config, manifest, log and ``record``."""
    for file in ("config.json", "elasticir.json", "training-log.jsonl"):
        tar.add(model_dir / file, arcname=f"{model_dir.name}/{file}")
    info = tarfile.TarInfo(f"{model_dir.name}/probe.json")
    payload = json.dumps(record).encode()
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def run(
    configs: list[Path],
    out: Path,
    budget: float,
    max_steps: int,
    work: Path,
    fixed_steps: int | None = None,
) -> None:
    from elasticir.train.denser import DenserTrainConfig, prepare_distillation

    deadline = time.time() + budget
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    data, base = _unpacked(work)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}", flush=True)
    settled = []
    for path in configs:
        config = DenserTrainConfig.from_json(path)
        settled.append(
            replace(
                config,
                output=work / "models" / config.output.name,
                cache=work / "cache",
                data_root=data,
                base_model=str(base),
                device=device,
                threads=8 if device == "cuda" else config.threads,
            )
        )
    started = time.time()
    for config in settled:  # teacher vectors and candidates, cached for the trainings
        prepare_distillation(config, progress=False)
    print(f"teacher data for {len(settled)} configs: {time.time() - started:.0f}s", flush=True)
    if fixed_steps is not None:
        per_step, steps = None, fixed_steps
    else:
        per_step = _probe(settled[0])
        # the configs train one after the other; the first (the probed one) is the dearest
        # per step, so n times its step time, plus 15% and 20 s per export, keeps in budget
        left = deadline - time.time() - 20 * len(settled)
        steps = max(50, min(max_steps, int(left / (per_step * 1.15 * len(settled)))))
        steps -= steps % 50
    timed = f"probe: {per_step * 1000:.1f} ms/step; " if per_step is not None else ""
    print(f"{timed}{steps} steps each", flush=True)
    settled = [replace(c, steps=steps, checkpoint_every=max(50, steps // 4)) for c in settled]
    log_path = out / "train.log"
    tar = tarfile.open(out / "manifests.tar.gz", "w:gz")
    with open(log_path, "a", encoding="utf-8") as log:
        for config in settled:
            if not _train_one(config, deadline - 30, log):
                continue
            model_dir = config.output
            for path in export(model_dir, base, out):
                print(f"exported {path.name} ({path.stat().st_size / 1e6:.1f} MB)", file=log)
            bundle(tar, model_dir, {"probe_seconds_per_step": per_step, "device": name})
            log.flush()
    tar.close()
    print(log_path.read_text(encoding="utf-8"), flush=True)


# --------------------------------------------------------------------------- unpack (here)


def unpack(source: Path, models: Path) -> None:
    from elasticir.models.denser import ElasticDenser

    base = base_model_dir()
    reference = load_file(str(base / "model.safetensors"))
    passage_fingerprint = ElasticDenser(str(base)).fingerprint
    with tarfile.open(source / "manifests.tar.gz") as tar:
        names = sorted({Path(m.name).parts[0] for m in tar.getmembers()})
        staging = models / ".gpu-unpack"
        shutil.rmtree(staging, ignore_errors=True)
        tar.extractall(staging, filter="data")
    for name in names:
        parts = sorted(source.glob(f"{name}.part*.safetensors"))
        if len(parts) != 2:
            raise FileNotFoundError(f"{source}: expected 2 weight parts of {name}, found {parts}")
        state = {k: v.clone() for k, v in reference.items()}
        returned = {}
        for part in parts:
            returned.update(load_file(str(part)))
        unknown = sorted(set(returned) - set(state))
        if unknown:
            raise ValueError(f"{name}: returned tensors not in the base model: {unknown[:3]}")
        for key, value in returned.items():
            state[key] = value.float()
        target = models / name
        if target.exists():
            raise FileExistsError(f"{target} exists; move it away first")
        target.mkdir(parents=True)
        save_file(state, target / "model.safetensors", metadata={"format": "pt"})
        for file in TOKENIZER_FILES:
            if (base / file).is_file():
                shutil.copy(base / file, target / file)
        shutil.copy(staging / name / "config.json", target / "config.json")
        shutil.copy(staging / name / "training-log.jsonl", target / "training-log.jsonl")
        manifest = json.loads((staging / name / "elasticir.json").read_text(encoding="utf-8"))
        probe = json.loads((staging / name / "probe.json").read_text(encoding="utf-8"))
        trained_against = manifest["passage_encoder"]
        manifest["passage_encoder"] = {
            "model": "all-MiniLM-L6-v2",
            "fingerprint": passage_fingerprint,
        }
        manifest["elastic"]["source_model"] = "all-MiniLM-L6-v2"
        manifest["gpu"] = {
            "trained_on": f"{probe.get('device', 'a GPU')} (benchmarks/denser_gpu.py run)",
            "teacher_and_start": "all-MiniLM-L6-v2 with its weights rounded to fp16, run in fp32",
            "teacher_fingerprint_there": trained_against["fingerprint"],
            "returned": "trained tensors in fp16, cast to fp32 here; word embeddings (frozen) "
            "and pooler (unused) are the shipped model's",
            **probe,
        }
        (target / "elasticir.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        print(f"rebuilt {target}")
    shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- compare (here)

LEVELS = ("full", "L6-W75", "L4", "L6-W50", "L3-W50", "L2-W50")


def compare(runs: list[tuple[str, Path]], pairs: list[tuple[str, str]], out: Path) -> None:
    """One table of ``benchmarks/denser.py`` reports (DL19 nDCG@10 and NQ top-1 per level and
    of the static L6-W50 model, with each model's training record), and paired-bootstrap
    intervals of the DL19 differences at L6-W50 between the named ``pairs``."""
    from elasticir.bench import paired_bootstrap

    reports = {label: json.loads(path.read_text(encoding="utf-8")) for label, path in runs}

    def cell(entry: dict, dim: str = "384") -> str:
        scores = entry["scores"][dim]
        return f"{scores['dl19']['nDCG@10']:.4f} / {scores['nq+dl19']['Top1']:.4f}"

    lines = [
        "# ElasticDenser trained on a GPU: more data and steps against the CPU runs",
        "",
        "Each cell: DL19 nDCG@10 / NQ (with the DL19 distractors) top-1, 384-d; every model "
        "searched against the same index of the base model's passage vectors. Written by "
        "`python benchmarks/denser_gpu.py compare` from the `benchmarks/denser.py` reports "
        f"named in the first column ({', '.join(f'`{p}`' for _, p in runs)}).",
        "",
        "| model | steps x batch | pool / queries (pseudo) | "
        + " | ".join(LEVELS)
        + " | full 128-d | static L6-W50 | static L2-W50 |",
        "|---|---|---|" + "---|" * (len(LEVELS) + 3),
    ]
    for label, report in reports.items():
        card, levels = report["model"], report["levels"]
        data, config = card.get("data") or {}, card.get("config") or {}
        statics = [report["baselines"].get(f"static trained, {lv}") for lv in ("L6-W50", "L2-W50")]
        where = "H200" if card.get("gpu") else "CPU"
        lines.append(
            f"| {label} | {card['steps']:,} x {config.get('batch_size')} ({where}) | "
            f"{data.get('passage_pool', 0):,} / {data.get('queries_used', 0):,} "
            f"({data.get('pseudo_queries') or 0:,}) | "
            + " | ".join(cell(levels[lv]) if lv in levels else "-" for lv in LEVELS)
            + f" | {cell(levels['full'], '128')} | "
            + " | ".join(cell(st) if st else "-" for st in statics)
            + " |"
        )
    lines += [
        "",
        "DL19 nDCG@10 differences, points, with the 95% paired-bootstrap interval "
        "over the 43 queries:",
        "",
    ]
    key = "dl19 nDCG@10 per query"
    for a, b in pairs:
        for level in ("L6-W50", "full"):
            before = reports[a]["levels"][level]["scores"]["384"]
            after = reports[b]["levels"][level]["scores"]["384"]
            low, high = paired_bootstrap(before[key], after[key])
            gap = 100 * (after["dl19"]["nDCG@10"] - before["dl19"]["nDCG@10"])
            lines.append(f"- {level}, {b} minus {a}: {gap:+.2f} ({low:+.2f} to {high:+.2f})")
    for label, report in reports.items():
        levels = report["levels"]
        full = levels["full"]["scores"]["384"]
        for name, entry in (
            ("L6-W50", levels["L6-W50"]),
            ("static L6-W50", report["baselines"].get("static trained, L6-W50")),
        ):
            if entry is None:
                continue
            low, high = paired_bootstrap(full[key], entry["scores"]["384"][key])
            gap = 100 * (entry["scores"]["384"]["dl19"]["nDCG@10"] - full["dl19"]["nDCG@10"])
            lines.append(
                f"- {label}: {name} minus its full level: {gap:+.2f} ({low:+.2f} to {high:+.2f})"
            )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: write .gpu/ (fp16 base model + data tarball)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data folder (default: ELASTICIR_DATA or ../shared/data)",
    )
    r = sub.add_parser("run", help="on the GPU machine: train the configs, export to --out")
    r.add_argument("configs", type=Path, nargs="+")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--budget", type=float, default=420.0, help="seconds for everything")
    r.add_argument("--max-steps", type=int, default=8000)
    r.add_argument("--work", type=Path, default=Path("/tmp/elasticir-gpu"))
    r.add_argument(
        "--steps", type=int, default=None, help="train this many steps (no probe, no budget fit)"
    )
    r.add_argument("--allow-cpu", action="store_true", help="rehearse on the CPU")
    u = sub.add_parser("unpack", help="here: rebuild the model directories from run's files")
    u.add_argument("--from", dest="source", type=Path, required=True)
    u.add_argument("--models", type=Path, default=ROOT / "models")
    c = sub.add_parser("compare", help="here: one table of benchmarks/denser.py reports")
    c.add_argument("runs", nargs="+", help="LABEL=REPORT.json")
    c.add_argument("--pair", action="append", default=[], help="A:B, a difference B - A")
    c.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "compare":
        runs = [(r.partition("=")[0], Path(r.partition("=")[2])) for r in args.runs]
        compare(runs, [tuple(p.split(":", 1)) for p in args.pair], args.out)  # type: ignore[misc]
    elif args.command == "pack":
        from elasticir.data.datasets import data_root

        pack(args.data if args.data is not None else data_root())
    elif args.command == "run":
        if not torch.cuda.is_available() and not args.allow_cpu:
            sys.exit("run needs a CUDA GPU (--allow-cpu rehearses it on the CPU)")
        run(args.configs, args.out, args.budget, args.max_steps, args.work, args.steps)
    else:
        unpack(args.source, args.models)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
