"""What building the pooled ranker's attention bias in one pass gained, measured in one run.

    python benchmarks/pooled_bias.py --ranker models/ranker-minilm-anchor

The pooled ElasticRanker adds a per-head gate to every attention logit between a query token
and a passage token. That bias is a ``(rows, heads, tokens, tokens)`` tensor, rebuilt at every
layer. Until commit 3c6e437 it was built in two elementwise passes in fp32
(``cross * gate + pad``), which under bf16 autocast was then cast again; it is now one
``addcmul`` pass, in the autocast dtype. This script runs both ways on the same pairs (the old
one restored here only for the measurement) in interleaved rounds, at fp32 and bf16, checks
that the fp32 scores are identical, and prints pairs/s with ratios taken within a round.
Speed ratios that were measured against the full ranker before that commit
(``results/rerank-dipair.md``'s DiPair speedups, for one) used the two-pass ranker.
Writes ``results/pooled-bias.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import (  # noqa: E402
    cut_run,
    interleaved_rates,
    load_corpora,
    machine,
    median_rates,
    report_path,
)
from elasticir.data import get_dataset, read_run  # noqa: E402
from elasticir.data.topics import read_topics  # noqa: E402
from elasticir.models.elastic import layer_step, sub_network  # noqa: E402
from elasticir.rerank.ranker import (  # noqa: E402
    ElasticRanker,
    PairMasks,
    RankerNet,
    RankerScorer,
)

OLD = "two passes (before 3c6e437)"


def _two_pass_step(self, index, hidden, masks, level):
    """RankerNet.step as it was before 3c6e437: the bias in two passes, in fp32."""
    bias = None
    if self.gates is not None and masks.cross is not None and masks.pad is not None:
        heads = sub_network(self.config, level).heads
        gate = self.gates[index, :heads].to(hidden.dtype).view(1, heads, 1, 1)
        bias = masks.cross * gate + masks.pad
    return layer_step(self.encoder, index, hidden, masks.mask, level, attention_bias=bias)


def _fp32_masks_start(original):
    """RankerNet.start as it was before 3c6e437: the masks in the hidden states' dtype."""

    def start(self, input_ids, token_types, mask):
        hidden, masks = original(self, input_ids, token_types, mask)
        if masks.cross is None or masks.pad is None:
            return hidden, masks
        cross, pad = masks.cross.to(hidden.dtype), masks.pad.to(hidden.dtype)
        return hidden, PairMasks(masks.mask, masks.query, masks.passage, cross, pad)

    return start


class _Scorer:
    """A scorer that runs ``inner`` with the two-pass step swapped in."""

    def __init__(self, inner: RankerScorer) -> None:
        self.inner = inner

    def score(self, query, passages):
        with _two_pass():
            return self.inner.score(query, passages)


@contextmanager
def _two_pass():
    step, start = RankerNet.step, RankerNet.start
    RankerNet.step, RankerNet.start = _two_pass_step, _fp32_masks_start(start)
    try:
        yield
    finally:
        RankerNet.step, RankerNet.start = step, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranker", required=True, help="A pooled ElasticRanker directory")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("results/pooled-bias"))
    args = parser.parse_args()

    dl = get_dataset("msmarco-dl19")
    texts = {q.query_id: q.text for q in read_topics(dl.queries)}
    first = cut_run(read_run(dl.runs["bm25"]), 100, set(texts))
    passages = load_corpora([dl.corpus])
    chosen = sorted(first)[: args.queries]
    work = [(texts[q], [passages[d] for d in first[q]]) for q in chosen]
    rankers = {p: ElasticRanker(args.ranker, precision=p) for p in ("fp32", "bf16")}
    if not rankers["fp32"].net.pooled:
        raise SystemExit(f"{args.ranker} has a [CLS] head: it builds no gated bias")
    scorers = {}
    for p, ranker in rankers.items():
        scorers[f"one pass, {p}"] = RankerScorer(ranker)
        scorers[f"{OLD}, {p}"] = _Scorer(RankerScorer(ranker))
    text, docs = work[0]
    new = scorers["one pass, fp32"].score(text, docs)
    identical = bool(np.array_equal(new, scorers[f"{OLD}, fp32"].score(text, docs)))
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rates = interleaved_rates(scorers, work, args.rounds, args.min_seconds)
    report = {
        "machine": machine(),
        "started": started,
        "ranker": args.ranker,
        "command": "python benchmarks/pooled_bias.py " + " ".join(sys.argv[1:]),
        "setup": {"queries": len(work), "rounds": args.rounds, "min_seconds": args.min_seconds},
        "fp32_scores_identical": identical,
        "speed": median_rates(
            rates, lambda label: f"{OLD}, {label.rsplit(', ', 1)[1]}", "vs_two_pass"
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


def render(report: dict) -> str:
    setup = report["setup"]
    lines = [
        "# Pooled ranker: the gated attention bias in one pass",
        "",
        f"Machine: {report['machine']}. Ranker `{report['ranker']}`, measured "
        f"{report['started']}: {setup['rounds']} interleaved rounds over {setup['queries']} DL19 "
        f"queries x their BM25 top-100, each scorer repeating its passes for at least "
        f"{setup['min_seconds']:g} s per round; medians over rounds, ratios within a round. "
        f"fp32 scores identical both ways: {report['fp32_scores_identical']}. Regenerate: "
        f"`{report['command']}`.",
        "",
        "| ranker | pairs/s | vs two passes at the same precision |",
        "|---|---|---|",
    ]
    for label, row in report["speed"].items():
        lines.append(f"| {label} | {row['pairs_per_s']} | {row['vs_two_pass']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
