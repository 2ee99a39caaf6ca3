"""Foundation benchmark: BM25, dense and hybrid on DL19 and NQ, against sentence-transformers.

    python benchmarks/foundation.py            # writes results/foundation.md and .json

Measured in one run on this machine, with the peer (sentence-transformers, the same
all-MiniLM-L6-v2 weights) timed interleaved with ours so machine noise hits both alike:

* quality: nDCG@10 / RR@10 / R@100 (rel >= 2) on msmarco-dl19; Top-1/5/20 and RR@10 on
  nq-open, alone and with the DL19 passages as distractors; BM25, dense, hybrids, the
  shipped full-collection BM25 run, and the peer's dense run;
* speed: passage-encoding throughput ratios (ours / peer), cosine agreement, bf16 autocast;
* indexes: single-query latency (encode + search), bytes per passage, recall@100 against flat.

Embedding stores are cached under indexes/bench/ (resumable), so a rerun skips encoding.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from elasticir.bench import (  # noqa: E402
    DL_MEASURES,
    NQ_MEASURES,
    WORK,
    encode,
    log,
    machine,
    report_path,
)
from elasticir.data import get_dataset, iter_corpus, load_passages, read_qrels, read_run  # noqa: E402
from elasticir.data.topics import read_qas, read_topics  # noqa: E402
from elasticir.eval.measures import evaluate  # noqa: E402
from elasticir.eval.qa import answer_accuracy, passage_texts  # noqa: E402
from elasticir.index.faiss_index import IndexSpec, build_index, load_index  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.retrieve.bm25 import BM25Searcher, build_bm25_index  # noqa: E402
from elasticir.retrieve.dense import DenseSearcher  # noqa: E402
from elasticir.retrieve.fusion import interpolate, reciprocal_rank_fusion  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/foundation"))
    parser.add_argument("--speed-passages", type=int, default=400)
    parser.add_argument("--speed-rounds", type=int, default=7)
    parser.add_argument(
        "--only-speed", action="store_true", help="Re-measure throughput only; keep the rest"
    )
    args = parser.parse_args()
    if args.only_speed:
        report = json.loads(report_path(args.out, ".json").read_text())
        ours = ElasticDenser()
        peer = load_peer(ours.model_path)
        dl = get_dataset("msmarco-dl19")
        report["speed"] = encoding_speed(
            ours, peer, dl.corpus, args.speed_passages, args.speed_rounds
        )
        report["speed_measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
        report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
        report_path(args.out, ".md").write_text(render(report))
        print(render(report))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    dl, nq = get_dataset("msmarco-dl19"), get_dataset("nq-open")
    ours = ElasticDenser()
    peer = load_peer(ours.model_path)
    report: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    log("encoding corpora (cached, resumable)")
    stores = {name: encode(ours, ds.corpus, name) for name, ds in (("dl19", dl), ("nq", nq))}
    peer_vectors = {
        name: peer_encode(peer, ds.corpus, name) for name, ds in (("dl19", dl), ("nq", nq))
    }

    log("indexes: flat / hnsw / ivfpq over dl19")
    report["indexes"] = index_table(ours, stores["dl19"], dl, nq)

    log("quality: msmarco-dl19")
    report["dl19"] = dl19_quality(ours, peer, dl, stores["dl19"], peer_vectors["dl19"])
    log("quality: nq-open, alone and with DL19 distractors")
    report["nq"] = nq_quality(ours, peer, nq, dl, stores, peer_vectors, distractors=False)
    report["nq+dl19"] = nq_quality(ours, peer, nq, dl, stores, peer_vectors, distractors=True)
    log("speed: passage encoding, ours vs sentence-transformers, interleaved")
    report["speed"] = encoding_speed(ours, peer, dl.corpus, args.speed_passages, args.speed_rounds)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


# -- peer ------------------------------------------------------------------------------------
def load_peer(model_path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


def peer_encode(peer, corpus: Path, name: str) -> tuple[list[str], np.ndarray]:
    cache = WORK / f"peer-{name}.npy"
    passages = list(iter_corpus(corpus))
    ids = [p.doc_id for p in passages]
    if cache.exists():
        return ids, np.load(cache)
    vectors = peer.encode(
        [p.encoder_text() for p in passages],
        batch_size=32,
        normalize_embeddings=True,
        show_progress_bar=True,
    ).astype(np.float32)
    np.save(cache, vectors)
    return ids, vectors


# -- speed -----------------------------------------------------------------------------------
def encoding_speed(ours: ElasticDenser, peer, corpus: Path, n: int, rounds: int) -> dict:
    texts = [p.encoder_text() for p, _ in zip(iter_corpus(corpus), range(n))]
    bf16_texts = texts[: max(50, n // 8)]
    ref = mine = None  # bf16 is slow without native support: fewer texts
    bf16 = ElasticDenser(precision="bf16")
    ours.encode_passages(texts[:64]), peer.encode(texts[:64]), bf16.encode_passages(texts[:16])
    rows = {"peer_fp32": [], "ours_fp32": [], "peer_fp32_small": [], "ours_bf16_small": []}

    def peer_fp32():
        return peer.encode(texts, batch_size=32, normalize_embeddings=True)

    def peer_small():
        return peer.encode(bf16_texts, batch_size=32, normalize_embeddings=True)

    for round_number in range(rounds):
        # Alternate who goes first, so drift in machine load does not favour either side.
        pair = [
            ("peer_fp32", peer_fp32, texts),
            ("ours_fp32", lambda: ours.encode_passages(texts), texts),
        ]
        if round_number % 2:
            pair.reverse()
        for key, fn, items in pair:
            t, value = timed(fn)
            rows[key].append(len(items) / t)
            if key == "peer_fp32":
                ref = value
            else:
                mine = value
        t, _ = timed(peer_small)
        rows["peer_fp32_small"].append(len(bf16_texts) / t)
        t, mine_bf16 = timed(lambda: bf16.encode_passages(bf16_texts))
        rows["ours_bf16_small"].append(len(bf16_texts) / t)
    ratio = [o / p for o, p in zip(rows["ours_fp32"], rows["peer_fp32"])]
    ratio_bf16 = [o / p for o, p in zip(rows["ours_bf16_small"], rows["peer_fp32_small"])]
    cos = (mine * ref).sum(1)
    cos_bf16 = (mine_bf16 * mine[: len(bf16_texts)]).sum(1)
    return {
        "passages": len(texts),
        "rounds": rounds,
        "peer_fp32_per_s": statistics.median(rows["peer_fp32"]),
        "ours_fp32_per_s": statistics.median(rows["ours_fp32"]),
        "ratio_fp32": statistics.median(ratio),
        "ratio_fp32_all": ratio,
        "ratio_bf16_vs_peer_fp32": statistics.median(ratio_bf16),
        "bf16_passages": len(bf16_texts),
        "cosine_ours_vs_peer_min": float(cos.min()),
        "cosine_ours_vs_peer_mean": float(cos.mean()),
        "cosine_bf16_vs_fp32_min": float(cos_bf16.min()),
        "cosine_bf16_vs_fp32_mean": float(cos_bf16.mean()),
        "batch_size_ours": ours.batch_size,
        "batch_size_peer": 32,
    }


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# -- indexes ---------------------------------------------------------------------------------
def index_table(encoder: ElasticDenser, store: Path, dl, nq) -> dict:
    queries = read_topics(dl.queries) + read_topics(nq.queries)[:457]  # 500 queries in all
    vectors = encoder.encode_queries([q.text for q in queries])
    flat_rows = None
    table = {}
    for kind in ("flat", "hnsw", "ivfpq"):
        path = build_index(store, WORK / f"dl19-{kind}", IndexSpec(kind=kind), progress=False)
        index = load_index(path)
        _, rows = index.search(vectors, 100)
        if kind == "flat":
            flat_rows = rows
        recall = float(np.mean([len(set(a) & set(b)) / 100 for a, b in zip(rows, flat_rows)]))
        searcher = DenseSearcher(path, encoder)
        latencies = []
        for q in queries[:100]:
            start = time.perf_counter()
            searcher.search([q], k=100)
            latencies.append((time.perf_counter() - start) * 1000)
        meta = index.meta
        table[kind] = {
            "recall@100_vs_flat": recall,
            "latency_ms_median": statistics.median(latencies),
            "latency_ms_p90": float(np.percentile(latencies, 90)),
            "bytes_per_passage": meta["bytes_per_passage"],
            "build_seconds": meta["build_seconds"],
            "params": {k: v for k, v in meta["params"].items() if k in _PARAMS[kind]},
        }
    return table


_PARAMS = {
    "flat": (),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
    "ivfpq": ("nlist", "nprobe", "pq_m", "pq_bits"),
}


# -- quality ---------------------------------------------------------------------------------
def dense_run(ids, vectors, queries, encoder_or_peer, k=100, peer=False) -> dict:
    import faiss

    texts = [q.text for q in queries]
    if peer:
        qv = encoder_or_peer.encode(texts, batch_size=64, normalize_embeddings=True)
    else:
        qv = encoder_or_peer.encode_queries(texts)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, rows = index.search(np.asarray(qv, dtype=np.float32), k)
    return {
        q.query_id: {ids[r]: float(s) for s, r in zip(ss, rr) if r >= 0}
        for q, ss, rr in zip(queries, scores, rows)
    }


def bm25_run(corpus_paths: list[Path], name: str, queries, k=100) -> dict:
    index_dir = WORK / f"{name}-bm25"
    if not (index_dir / "meta.json").exists():
        if len(corpus_paths) == 1:
            build_bm25_index(corpus_paths[0], index_dir)
        else:
            combined = WORK / f"{name}-corpus.jsonl"
            with open(combined, "w", encoding="utf-8") as out:
                for path in corpus_paths:
                    for p in iter_corpus(path):
                        out.write(
                            json.dumps({"id": p.doc_id, "title": p.title, "contents": p.text})
                            + "\n"
                        )
            build_bm25_index(combined, index_dir)
    with BM25Searcher(index_dir) as searcher:
        return searcher.search(queries, k=k)


def systems(bm25: dict, dense: dict, peer: dict) -> dict[str, dict]:
    return {
        "BM25 (pooled corpus)": bm25,
        "dense (elasticir)": dense,
        "dense (sentence-transformers)": peer,
        "hybrid RRF (dense+BM25)": reciprocal_rank_fusion([dense, bm25], depth=100),
        "hybrid interp. a=0.5 (minmax)": interpolate(dense, bm25, alpha=0.5, depth=100),
    }


def dl19_quality(ours, peer, dl, store: Path, peer_vectors) -> dict:
    queries, qrels = read_topics(dl.queries), read_qrels(dl.qrels)
    ids, vectors = EmbeddingStore(store).load()
    runs = systems(
        bm25_run([dl.corpus], "dl19", queries),
        dense_run(ids, vectors, queries, ours),
        dense_run(*peer_vectors, queries, peer, peer=True),
    )
    runs["BM25 full collection (shipped run)"] = read_run(dl.runs["bm25"])
    return {name: evaluate(run, qrels, DL_MEASURES) for name, run in runs.items()}


def nq_quality(ours, peer, nq, dl, stores, peer_vectors, distractors: bool) -> dict:
    queries, qrels, qas = read_topics(nq.queries), read_qrels(nq.qrels), read_qas(nq.qas)
    ids, vectors = EmbeddingStore(stores["nq"]).load()
    pids, pvectors = peer_vectors["nq"]
    corpora = [nq.corpus]
    if distractors:
        d_ids, d_vectors = EmbeddingStore(stores["dl19"]).load()
        ids, vectors = ids + d_ids, np.concatenate([vectors, d_vectors])
        pd_ids, pd_vectors = peer_vectors["dl19"]
        pids, pvectors = pids + pd_ids, np.concatenate([pvectors, pd_vectors])
        corpora.append(dl.corpus)
    runs = systems(
        bm25_run(corpora, "nq+dl19" if distractors else "nq", queries),
        dense_run(ids, vectors, queries, ours),
        dense_run(pids, pvectors, queries, peer, peer=True),
    )
    texts = {}
    for path in corpora:
        texts.update(passage_texts(load_passages(path).values()))
    table = {}
    for name, run in runs.items():
        row = answer_accuracy(run, qas, texts, ks=(1, 5, 20), topics=queries)
        row.update(evaluate(run, qrels, NQ_MEASURES))
        table[name] = row
    return table


# -- report ----------------------------------------------------------------------------------
def render(report: dict) -> str:
    s = report["speed"]
    lines = [
        "# Foundation benchmark",
        "",
        f"Produced by `python benchmarks/foundation.py` on {report['started']} "
        f"({report['machine']['cores']} cores, torch {report['machine']['torch']}, "
        f"{report['machine']['threads']} threads{_cpu(report['machine'])}). Peer: "
        "sentence-transformers with the same "
        "all-MiniLM-L6-v2 weights, measured in the same run.",
        "",
        "## Passage encoding throughput (interleaved rounds, medians)",
        "",
        f"Measured {report.get('speed_measured', report['started'])}; rounds alternate which "
        "side goes first.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| passages per round | {s['passages']} DL19 passages x {s['rounds']} rounds |",
        f"| peer fp32 (batch 32) | {s['peer_fp32_per_s']:.1f} passages/s |",
        f"| elasticir fp32 (batch {s['batch_size_ours']}) | "
        f"{s['ours_fp32_per_s']:.1f} passages/s |",
        f"| **ratio elasticir / peer (fp32)** | **{s['ratio_fp32']:.2f}x** "
        f"(rounds: {', '.join(f'{r:.2f}' for r in s['ratio_fp32_all'])}) |",
        f"| cosine elasticir vs peer (min / mean) | {s['cosine_ours_vs_peer_min']:.6f} / "
        f"{s['cosine_ours_vs_peer_mean']:.6f} |",
        f"| ratio elasticir bf16 autocast / peer fp32 ({s['bf16_passages']} passages) | "
        f"{s['ratio_bf16_vs_peer_fp32']:.2f}x |",
        f"| cosine bf16 vs fp32 (min / mean) | {s['cosine_bf16_vs_fp32_min']:.5f} / "
        f"{s['cosine_bf16_vs_fp32_mean']:.5f} |",
        "",
        "## Index types over msmarco-dl19 (20,152 passages; 500 DL19+NQ queries)",
        "",
        "| index | params | recall@100 vs flat | query latency ms (median / p90, encode+search) "
        "| bytes/passage | build s |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in report["indexes"].items():
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "-"
        lines.append(
            f"| {kind} | {params} | {row['recall@100_vs_flat']:.4f} | "
            f"{row['latency_ms_median']:.1f} / {row['latency_ms_p90']:.1f} | "
            f"{row['bytes_per_passage']:.0f} | {row['build_seconds']:.1f} |"
        )
    for key, title in (
        ("dl19", "msmarco-dl19 (43 queries, rel >= 2 for RR and R)"),
        ("nq", "nq-open (2,000 questions, 2,600 gold passages)"),
        ("nq+dl19", "nq-open with the 20,152 DL19 passages as distractors"),
    ):
        table = report[key]
        measures = list(next(iter(table.values())))
        lines += [
            "",
            f"## {title}",
            "",
            "| system | " + " | ".join(measures) + " |",
            "|---" * (len(measures) + 1) + "|",
        ]
        for name, row in table.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in measures) + " |")
    lines += ["", *NOTES[:5], _bf16_note(report), *NOTES[5:]]
    return "\n".join(lines) + "\n"


def _cpu(machine: dict) -> str:
    """``; CPU <model>, flags <relevant flags>`` where the report records them (reports
    measured before the CPU was recorded render as they did)."""
    if "cpu_model" not in machine:
        return ""
    return f"; CPU {machine['cpu_model']}, flags: {', '.join(machine['flags']) or 'none'}"


def _bf16_note(report: dict) -> str:
    """The bf16 line, derived from what the run measured and the CPU it recorded."""
    ratio = report["speed"]["ratio_bf16_vs_peer_fp32"]
    flags = report["machine"].get("flags")
    native = [f for f in flags or () if "bf16" in f or f.startswith("amx")]
    if flags is None:
        cpu = "the CPU's flags were not recorded by this run"
    elif native:
        cpu = f"this CPU has native bf16 ({', '.join(native)})"
    else:
        cpu = "this CPU has no native bf16 flag, so autocast only adds conversions"
    speed = "slower than" if ratio < 1 else "faster than"
    return f"- bf16 autocast ran {speed} the fp32 peer here ({ratio:.2f}x); {cpu}."


NOTES = [
    "## Reading the numbers",
    "",
    "- Dense quality is the same computation as the peer: identical nDCG@10 on DL19 and "
    "top-k on NQ (RR@10 can differ in the 4th decimal where float ties break differently).",
    "- The throughput gain is batching, not arithmetic: texts are tokenized once and sorted "
    "by token length, so a batch pads only to its own longest text; the peer sorts by "
    "character length. Same fp32 kernels, same vectors (cosine 1.000000).",
    "- BM25 over the pooled 20k-passage DL19 corpus (0.453) is below the full-collection "
    "run (0.506, shipped): pooling makes the query terms common and lowers their IDF.",
    "- On nq-open alone every passage is a gold passage, so top-20 saturates; top-1 and "
    "RR@10 are the discriminating figures, and the DL19 distractors lower them.",
    "- IVF-PQ (48 bytes of codes/passage) trades recall for a 13x smaller index; its "
    "codebooks are trained on only 20k vectors here.",
    "- Timings are from a shared 2-core machine: read ratios measured in the same run, "
    "not absolute times.",
]


if __name__ == "__main__":
    main()
