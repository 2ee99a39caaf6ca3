"""The training losses, one module per family.

* :mod:`~elasticir.train.losses.listwise`: listwise distillation of a fixed teacher's scores
  (``KL`` of the softmax over ``score / tau``) and query alignment, what ElasticDenser's query
  levels and the learned projections are fitted with;
* :mod:`~elasticir.train.losses.ranker`: ElasticRanker's per-exit losses over a group
  (labels, teacher, self-distillation, pointwise);
* :mod:`~elasticir.train.losses.dipair`: DiPair's cross-entropy and teacher distillation.
"""
