"""Reading and writing the files that connect stages: corpora, topics, qrels, runs, datasets."""

from elasticir.data.corpus import count_passages, iter_corpus, load_passages
from elasticir.data.datasets import (
    Dataset,
    data_root,
    get_dataset,
    iter_remote_corpus,
    list_datasets,
    read_remote_qas,
    read_remote_queries,
    remote_source,
    sample_dataset,
)
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.records import Passage, QAPair, Qrels, Query, Run
from elasticir.data.topics import read_qas, read_queries_any, read_topics
from elasticir.data.trec import TrecRunWriter, read_qrels, read_run, write_run

__all__ = [
    "Dataset",
    "InputFormatError",
    "MissingResourceError",
    "Passage",
    "QAPair",
    "Qrels",
    "Query",
    "Run",
    "TrecRunWriter",
    "count_passages",
    "data_root",
    "get_dataset",
    "iter_corpus",
    "iter_remote_corpus",
    "list_datasets",
    "load_passages",
    "read_qas",
    "read_qrels",
    "read_queries_any",
    "read_remote_qas",
    "read_remote_queries",
    "read_run",
    "read_topics",
    "remote_source",
    "sample_dataset",
    "write_run",
]
