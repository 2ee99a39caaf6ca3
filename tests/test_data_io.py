"""Unit tests for the data readers and writers, on small files written per test."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from elasticir.data import (
    InputFormatError,
    MissingResourceError,
    Passage,
    QAPair,
    Query,
    TrecRunWriter,
    count_passages,
    data_root,
    get_dataset,
    iter_corpus,
    iter_remote_corpus,
    list_datasets,
    load_passages,
    read_qas,
    read_qrels,
    read_queries_any,
    read_remote_queries,
    read_run,
    read_topics,
    remote_source,
    sample_dataset,
    write_run,
)


def write(path: Path, content: str | bytes) -> Path:
    """Write ``content`` to ``path``, gzipped when the name ends in .gz."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def expect_format_error(
    call: Callable[[], object], path: Path, line: int | None, expected: str = ""
) -> InputFormatError:
    """Run ``call``; it must raise InputFormatError naming ``path`` and ``line``."""
    with pytest.raises(InputFormatError) as info:
        call()
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(err).startswith(f"{where}: expected "), str(err)
    assert expected in str(err)
    return err


def consume(path: Path) -> Callable[[], list[Passage]]:
    return lambda: list(iter_corpus(path))


# --- corpora -----------------------------------------------------------------------------


def test_pyserini_jsonl_with_optional_title(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.jsonl",
        jsonl(
            {"id": "a", "contents": "alpha text", "title": "Alpha"},
            {"id": "b", "contents": "beta text"},
            {"id": 7, "contents": "numeric id", "title": None},
        ),
    )
    assert list(iter_corpus(path)) == [
        Passage("a", "alpha text", "Alpha"),
        Passage("b", "beta text", ""),
        Passage("7", "numeric id", ""),
    ]


def test_beir_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path / "corpus.jsonl",
        jsonl(
            {"_id": "d1", "title": "T1", "text": "one", "metadata": {}},
            {"_id": "d2", "title": "", "text": "two"},
        ),
    )
    assert list(iter_corpus(path)) == [Passage("d1", "one", "T1"), Passage("d2", "two", "")]


def test_msmarco_tsv_and_title_column(tmp_path: Path) -> None:
    path = write(tmp_path / "collection.tsv", "0\tfirst passage\n\n1\tsecond\tA Title\r\n")
    assert list(iter_corpus(path)) == [
        Passage("0", "first passage"),
        Passage("1", "second", "A Title"),
    ]


def test_dpr_tsv_header_and_csv_quoting(tmp_path: Path) -> None:
    path = write(
        tmp_path / "psgs_w100.tsv",
        'id\ttext\ttitle\n1\t"Aaron ( or ; ""Aharon"") was a prophet"\tAaron\n'
        '2\tplain "quoted" words\tAaron\n',
    )
    assert list(iter_corpus(path)) == [
        Passage("1", 'Aaron ( or ; "Aharon") was a prophet', "Aaron"),
        Passage("2", 'plain "quoted" words', "Aaron"),
    ]
    assert count_passages(path) == 2


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.tsv.gz"])
def test_gzip_corpora(tmp_path: Path, name: str) -> None:
    if name.startswith("c.jsonl"):
        content = jsonl({"id": "x", "contents": "één"}, {"id": "y", "contents": "two"})
    else:
        content = "x\téén\ny\ttwo\n"
    path = write(tmp_path / name, content)
    assert [p.doc_id for p in iter_corpus(path)] == ["x", "y"]
    assert next(iter(iter_corpus(path))).text == "één"
    assert count_passages(path) == 2


def test_json_collection_directory(tmp_path: Path) -> None:
    root = tmp_path / "collection"
    write(root / "b.jsonl", jsonl({"id": "b1", "contents": "b one"}))
    write(root / "a.jsonl.gz", jsonl({"id": "a1", "contents": "a one"}))
    write(
        root / "sub" / "c.json",
        json.dumps([{"id": "c1", "contents": "c"}, {"id": "c2", "contents": "d"}]),
    )
    write(root / "d.json", json.dumps({"id": "d1", "contents": "pretty"}, indent=2))
    write(root / "corpus.jsonl", jsonl({"_id": "beir1", "text": "per-file layout"}))
    write(root / ".tmp-e.jsonl.123", "not read")
    write(root / ".hidden.jsonl", "not read either")
    write(root / "notes.txt", "ignored")
    ids = [p.doc_id for p in iter_corpus(root)]
    assert ids == ["a1", "b1", "beir1", "d1", "c1", "c2"]
    assert count_passages(root) == 6
    assert set(load_passages(root)) == set(ids)


def test_iter_corpus_streams(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.jsonl",
        jsonl({"id": "a", "contents": "ok"}) + "{broken\n",
    )
    passages = iter_corpus(path)
    assert iter(passages) is passages  # an iterator, not a list
    assert next(passages) == Passage("a", "ok")  # the bad line 2 has not been read yet
    expect_format_error(lambda: next(passages), path, 2, "a JSON object")


def test_count_passages_skips_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", "1\ta\n\n   \n2\tb\n3\tc")
    assert count_passages(path) == 3
    assert len(list(iter_corpus(path))) == 3


def test_load_passages_subset(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", "".join(f"{i}\ttext {i}\n" for i in range(10)))
    got = load_passages(path, doc_ids=["3", "7", "missing"])
    assert got == {"3": Passage("3", "text 3"), "7": Passage("7", "text 7")}
    assert load_passages(path, doc_ids=[]) == {}
    assert len(load_passages(path)) == 10


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ('{"id": "a", "contents": "x"}\n\n{"id": "b", "contents": \n', 3, "a JSON object"),
        ('{"id": "a", "contents": "x"}\n["a", "list"]\n', 2, "a JSON object"),
        ('{"id": "a", "contents": "x"}\n{"contents": "no id"}\n', 2, '"id" field'),
        ('{"id": "a", "contents": "x"}\n{"id": "b", "text": "y"}\n', 2, '"contents" field'),
        ('{"id": "a", "contents": null}\n', 1, 'a string in "contents"'),
        ('{"id": "a", "contents": 5}\n', 1, 'a string in "contents"'),
        ('{"_id": "a", "text": ["x"]}\n', 1, 'a string in "text"'),
        ('{"id": "a", "contents": "x", "title": 3}\n', 1, 'a string in "title"'),
        ('{"id": ["a"], "contents": "x"}\n', 1, 'a string in "id"'),
        ('{"id": "", "contents": "x"}\n', 1, "a non-empty doc id"),
        ('{"id": "a b", "contents": "x"}\n', 1, "without whitespace"),
        ('{"doc": "a", "body": "x"}\n', 1, "Pyserini JsonCollection"),
        ('{"_id": "a", "text": "x"}\n{"id": "b", "contents": "y"}\n', 2, '"_id" field'),
        (
            '{"id": "a", "contents": "x"}\n{"id": "b", "contents": "y"}\n'
            '{"id": "a", "contents": "z"}\n',
            3,
            "unique doc ids",
        ),
    ],
)
def test_jsonl_corpus_errors(tmp_path: Path, content: str, line: int, expected: str) -> None:
    path = write(tmp_path / "c.jsonl", content)
    expect_format_error(consume(path), path, line, expected)


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("1\tok\n2 no tab here\n", 2, "pid<TAB>text"),
        ("1\tok\n\ttext without id\n", 2, "a non-empty doc id"),
        ("1\tok\n2\ta\tb\tc\n", 2, "pid<TAB>text"),
        ("1\tok\n1\tagain\n", 2, "unique doc ids"),
    ],
)
def test_tsv_corpus_errors(tmp_path: Path, content: str, line: int, expected: str) -> None:
    path = write(tmp_path / "c.tsv", content)
    expect_format_error(consume(path), path, line, expected)


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.tsv", "c.tsv.gz"])
def test_corpus_non_utf8(tmp_path: Path, name: str) -> None:
    good = '{"id": "a", "contents": "x"}\n' if ".jsonl" in name else "a\tx\n"
    bad = b'{"id": "b", "contents": "caf\xe9"}\n' if ".jsonl" in name else b"b\tcaf\xe9\n"
    path = write(tmp_path / name, good.encode() + b"\n" + bad)
    expect_format_error(consume(path), path, 3, "UTF-8 text")


def test_duplicate_id_across_collection_files(tmp_path: Path) -> None:
    write(tmp_path / "col" / "a.jsonl", jsonl({"id": "x", "contents": "1"}))
    second = write(
        tmp_path / "col" / "b.jsonl",
        jsonl({"id": "y", "contents": "2"}, {"id": "x", "contents": "3"}),
    )
    expect_format_error(consume(tmp_path / "col"), second, 2, "unique doc ids")


def test_json_array_errors_point_at_the_record(tmp_path: Path) -> None:
    path = write(
        tmp_path / "col" / "docs.json",
        '[\n  {"id": "a", "contents": "x"},\n  {"id": "b"}\n]\n',
    )
    expect_format_error(consume(tmp_path / "col"), path, 3, '"contents" field')
    broken = write(
        tmp_path / "col2" / "docs.json", '[\n  {"id": "a", "contents": "x"}\n  {"id": "b"}\n]'
    )
    expect_format_error(consume(tmp_path / "col2"), broken, 3, "',' or ']'")


def test_unknown_corpus_format(tmp_path: Path) -> None:
    path = write(tmp_path / "corpus.csv", "1,text\n")
    expect_format_error(lambda: iter_corpus(path), path, None, ".jsonl, .jsonl.gz, .tsv, .tsv.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_format_error(lambda: iter_corpus(empty), empty, None, "JsonCollection directory")
    with pytest.raises(FileNotFoundError):
        iter_corpus(tmp_path / "nope.jsonl")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl({"id": "a", "contents": "x"}).encode())[:-12])
    with pytest.raises(InputFormatError, match="gzip"):
        list(iter_corpus(path))


# --- topics and qas ----------------------------------------------------------------------


def test_read_topics(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", "1\tfirst query\r\n\n2\t leading space kept\n3\ttab\tinside\n")
    assert read_topics(path) == [
        Query("1", "first query"),
        Query("2", " leading space kept"),
        Query("3", "tab\tinside"),
    ]


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("1\tok\n2 no tab\n", 2, "qid<TAB>query text"),
        ("1\tok\n\tno id\n", 2, "a non-empty qid"),
        ("1\tok\n\n1\tagain\n", 3, "unique qids"),
        ("who wrote it\t['someone']\n", 1, "use read_qas"),
    ],
)
def test_topics_errors(tmp_path: Path, content: str, line: int, expected: str) -> None:
    path = write(tmp_path / "q.tsv", content)
    expect_format_error(lambda: read_topics(path), path, line, expected)


def test_topics_non_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", b"1\tok\n2\t\xff\xfe bad\n")
    expect_format_error(lambda: read_topics(path), path, 2, "UTF-8 text")


def test_read_qas_dpr_format(tmp_path: Path) -> None:
    path = write(
        tmp_path / "qas.csv",
        "who wrote hamlet\t['William Shakespeare', 'Shakespeare']\n"
        "\n"
        '"""Heroes"" was sung by whom?"\t"[""David Bowie"", \'Bowie\']"\n'
        "what is 2+2\t[]\n",
    )
    assert read_qas(path) == [
        QAPair("0", "who wrote hamlet", ("William Shakespeare", "Shakespeare")),
        QAPair("1", '"Heroes" was sung by whom?', ("David Bowie", "Bowie")),
        QAPair("2", "what is 2+2", ()),
    ]


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("q one\t['a']\nno tab at all\n", 2, "question<TAB>"),
        ("q one\t['a']\nq two\tParis\n", 2, "list literal of answer strings"),
        ("q one\t['a']\nq two\t[1, 2]\n", 2, "list literal of answer strings"),
        ("q one\t['a']\nq two\t('a',)\n", 2, "list literal of answer strings"),
        ("q one\t['a']\nq two\t['unclosed'\n", 2, "list literal of answer strings"),
        ("q one\t['a']\nq\t['a']\textra\n", 2, "question<TAB>"),
    ],
)
def test_qas_errors(tmp_path: Path, content: str, line: int, expected: str) -> None:
    path = write(tmp_path / "qas.tsv", content)
    expect_format_error(lambda: read_qas(path), path, line, expected)


def test_read_queries_any(tmp_path: Path) -> None:
    qas = write(tmp_path / "qas.tsv", "first question\t['a']\nsecond question\t['b']\n")
    topics = write(tmp_path / "topics.tsv", "q1\tfirst question\nq2\t[not a list\n")
    assert read_queries_any(qas) == [Query("0", "first question"), Query("1", "second question")]
    assert read_queries_any(topics) == [Query("q1", "first question"), Query("q2", "[not a list")]


# --- qrels and runs ----------------------------------------------------------------------


def test_read_qrels(tmp_path: Path) -> None:
    path = write(tmp_path / "qrels.txt", "1 0 d1 1\n1 0 d2 0\n\n2 Q0 d1 -1\r\n2 0 d1 -1\n")
    assert read_qrels(path) == {"1": {"d1": 1, "d2": 0}, "2": {"d1": -1}}
    gz = write(tmp_path / "qrels.txt.gz", "1 0 d1 2\n")
    assert read_qrels(gz) == {"1": {"d1": 2}}


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("1 0 d1 1\n1 0 d2\n", 2, "4 columns"),
        ("1 0 d1 1\n1 0 d2 1 extra\n", 2, "4 columns"),
        ("1 0 d1 1\n1 0 d2 1.5\n", 2, "an integer relevance"),
        ("1 0 d1 1\n1 0 d2 high\n", 2, "an integer relevance"),
        ("1 0 d1 1\n1 0 d1 2\n", 2, "one relevance per query and document"),
    ],
)
def test_qrels_errors(tmp_path: Path, content: str, line: int, expected: str) -> None:
    path = write(tmp_path / "qrels.txt", content)
    expect_format_error(lambda: read_qrels(path), path, line, expected)


def test_qrels_non_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "qrels.txt", b"1 0 d1 1\n1 0 d\xe92 1\n")
    expect_format_error(lambda: read_qrels(path), path, 2, "UTF-8 text")


def test_read_run(tmp_path: Path) -> None:
    path = write(tmp_path / "run.trec", "1 Q0 d1 1 2.5 tag\n1 Q0 d2 2 -1e-3 tag\n2 Q0 d1 1 0 tag\n")
    assert read_run(path) == {"1": {"d1": 2.5, "d2": -0.001}, "2": {"d1": 0.0}}


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("1 Q0 d1 1 2.5 t\n1 Q0 d2 2 2.0\n", 2, "6 columns"),
        ("1 Q0 d1 1 2.5 t\n1 Q0 d2 two 2.0 t\n", 2, "an integer rank"),
        ("1 Q0 d1 1 2.5 t\n1 Q0 d2 2 high t\n", 2, "a numeric score"),
        ("1 Q0 d1 1 2.5 t\n1 Q0 d2 2 nan t\n", 2, "a numeric score"),
        ("1 Q0 d1 1 2.5 t\n1 Q0 d1 2 2.0 t\n", 2, "each document once per query"),
    ],
)
def test_run_errors(tmp_path: Path, content: str, line: int, expected: str) -> None:
    path = write(tmp_path / "run.trec", content)
    expect_format_error(lambda: read_run(path), path, line, expected)


def test_writer_format_ties_and_cutoff(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    with TrecRunWriter(path, tag="mine", k=3) as writer:
        writer.write("q2", {"b": 1.0, "a": 1.0, "c": 2.0, "d": 0.5})
        writer.write("q1", [("x", -0.0), ("y", 0.25)])
    assert path.read_text() == (
        "q2 Q0 c 1 2.000000 mine\n"
        "q2 Q0 a 2 1.000000 mine\n"  # tie with b: broken by doc id
        "q2 Q0 b 3 1.000000 mine\n"
        "q1 Q0 y 1 0.250000 mine\n"
        "q1 Q0 x 2 0.000000 mine\n"
    )


def test_writer_inputs_agree_and_output_is_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    doc_ids = np.array([f"d{i}" for i in range(200)])
    scores = rng.integers(0, 20, size=200).astype(np.float32)  # many ties
    outputs = []
    for variant in range(4):
        path = tmp_path / f"run{variant}.trec"
        with TrecRunWriter(path, k=50) as writer:
            if variant == 0:
                writer.write_arrays("q", doc_ids, scores)
            elif variant == 1:
                writer.write("q", dict(zip(doc_ids.tolist(), scores.tolist(), strict=True)))
            elif variant == 2:
                order = rng.permutation(200)  # input order must not matter
                writer.write(
                    "q", list(zip(doc_ids[order].tolist(), scores[order].tolist(), strict=True))
                )
            else:
                writer.write_arrays("q", list(doc_ids), list(scores))
        outputs.append(path.read_bytes())
    assert len(set(outputs)) == 1
    lines = outputs[0].decode().splitlines()
    assert len(lines) == 50
    assert [int(line.split()[3]) for line in lines] == list(range(1, 51))


def test_writer_numpy_integer_ids(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    with TrecRunWriter(path) as writer:
        writer.write_arrays("7", np.array([10, 2]), np.array([0.1, 0.9]))
    assert path.read_text() == "7 Q0 2 1 0.900000 elasticir\n7 Q0 10 2 0.100000 elasticir\n"


@pytest.mark.parametrize(
    "bad_write",
    [
        lambda w: (w.write("q", {"a": 1.0}), w.write("q", {"b": 1.0})),
        lambda w: w.write("q", [("a", 1.0), ("a", 2.0)]),
        lambda w: w.write("q", {"a": float("nan")}),
        lambda w: w.write("q", {"a b": 1.0}),
        lambda w: w.write("q q", {"a": 1.0}),
        lambda w: w.write_arrays("q", ["a", "b"], [1.0]),
    ],
)
def test_writer_errors_leave_no_file(tmp_path: Path, bad_write: Callable) -> None:
    path = tmp_path / "run.trec"
    with pytest.raises(ValueError):
        with TrecRunWriter(path) as writer:
            bad_write(writer)
    assert list(tmp_path.iterdir()) == []


def test_writer_exception_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q0 Q0 old 1 1.000000 before\n")
    with pytest.raises(RuntimeError, match="boom"):
        with TrecRunWriter(path) as writer:
            writer.write("q", {"a": 1.0})
            raise RuntimeError("boom")
    assert path.read_text() == "q0 Q0 old 1 1.000000 before\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]


def test_writer_never_replaces_a_file_that_is_not_a_run(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "d1", "contents": "text"}\n')
    with pytest.raises(ValueError, match="not a TREC run"):
        with TrecRunWriter(path) as writer:
            writer.write("q", {"a": 1.0})
    assert path.read_text() == '{"id": "d1", "contents": "text"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.jsonl"]


def test_writer_misuse(tmp_path: Path) -> None:
    writer = TrecRunWriter(tmp_path / "run.trec")
    with pytest.raises(RuntimeError):
        writer.write("q", {"a": 1.0})
    with writer:
        pass
    assert (tmp_path / "run.trec").read_text() == ""
    with pytest.raises(RuntimeError):
        writer.__enter__()
    with pytest.raises(ValueError):
        TrecRunWriter(tmp_path / "x", k=0)
    with pytest.raises(ValueError):
        TrecRunWriter(tmp_path / "x", tag="two words")


def test_write_run_read_run_round_trip(tmp_path: Path) -> None:
    run = {
        "q10": {"d1": 0.5, "d2": 1.25, "d3": -3.0},
        "q2": {"d9": 7.0},
        "q1": {f"d{i}": i / 7 for i in range(20)},
    }
    path = tmp_path / "run.trec"
    write_run(path, run, tag="rt")
    again = read_run(path)
    assert again.keys() == run.keys()
    for qid, scores in run.items():
        assert again[qid] == pytest.approx({d: round(s, 6) for d, s in scores.items()}, abs=1e-9)
    qids_in_file = list(dict.fromkeys(line.split()[0] for line in path.read_text().splitlines()))
    assert qids_in_file == ["q1", "q10", "q2"]
    first = path.read_bytes()
    write_run(path, dict(reversed(list(run.items()))), tag="rt")
    assert path.read_bytes() == first
    write_run(path, run, tag="rt", k=2)
    assert {len(v) for v in read_run(path).values()} == {1, 2}


# --- datasets ----------------------------------------------------------------------------


def test_sample_dataset_is_consistent() -> None:
    ds = sample_dataset()
    passages = load_passages(ds.corpus)
    assert len(passages) == 40 and all(p.title for p in passages.values())
    queries = read_topics(ds.queries)
    qas = read_qas(ds.qas)
    qrels = read_qrels(ds.qrels)
    assert [q.text for q in queries] == [qa.question for qa in qas]
    assert set(qrels) == {q.query_id for q in queries}
    for query, qa in zip(queries, qas, strict=True):
        relevant = [passages[d] for d, rel in qrels[query.query_id].items() if rel > 0]
        assert relevant
        for answer in qa.answers:
            assert any(answer.lower() in p.text.lower() for p in relevant), answer
    assert get_dataset("sample") == ds
    assert "sample" in list_datasets()


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(ValueError, match="msmarco-dl19") as info:
        get_dataset("no-such-set")
    for name in list_datasets():
        assert name in str(info.value)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="ELASTICIR_DATA.*--data-dir"):
        get_dataset("msmarco-dl19", root=tmp_path)


def test_dpr_test_sets_are_user_supplied(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="dpr-nq-test/qas.tsv") as info:
        get_dataset("dpr-nq-test", root=tmp_path)
    assert "read_remote_queries" in str(info.value)
    write(tmp_path / "dpr-trivia-test" / "qas.tsv", "q\t['a']\n")
    ds = get_dataset("dpr-trivia-test", root=tmp_path)
    assert ds.qas == tmp_path / "dpr-trivia-test" / "qas.tsv" and ds.corpus is None
    write(tmp_path / "dpr-trivia-test" / "corpus.jsonl", jsonl({"id": "1", "contents": "x"}))
    assert get_dataset("dpr-trivia-test", root=tmp_path).corpus is not None


def test_data_root_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICIR_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("ELASTICIR_DATA", str(tmp_path / "missing"))
    with pytest.raises(MissingResourceError, match="ELASTICIR_DATA"):
        data_root()


def test_remote_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    assert remote_source("msmarco-dl19") == "msmarco-passage/trec-dl-2019/judged"
    assert remote_source("dpr-trivia-test") == "dpr-w100/trivia-qa/test"
    with pytest.raises(ValueError, match="no online source"):
        remote_source("sample")
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"elasticir\[hub\]"):
        iter_remote_corpus("dpr-nq-test")
    with pytest.raises(ImportError, match=r"elasticir\[hub\]"):
        read_remote_queries("msmarco-dev-subset")


def test_import_is_light() -> None:
    code = (
        "import sys, elasticir.data; "
        "print(sorted({'torch', 'ir_datasets', 'transformers', 'faiss'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
