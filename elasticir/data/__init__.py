"""Reading and writing the files that connect stages: corpora, topics, qrels, runs, datasets."""
