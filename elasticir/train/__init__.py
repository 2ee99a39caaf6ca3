"""Training: data for self-distillation, and the elastic optimization of encoders.

The trainers, one per model: :mod:`~elasticir.train.denser` (ElasticDenser's query levels),
:mod:`~elasticir.train.ranker` (ElasticRanker's exits and widths), :mod:`~elasticir.train.dipair`
(the DiPair head) and :mod:`~elasticir.train.projection` (the learned projections). What they
share: :mod:`~elasticir.train.config` (config files), :mod:`~elasticir.train.core` (device,
threads, optimiser step, schedule, batches, progress, output checks),
:mod:`~elasticir.train.checkpoint` (resumable state), :mod:`~elasticir.train.keys` (run and
cache keys), :mod:`~elasticir.train.losses` (the losses), :mod:`~elasticir.train.data` (the
training files and texts), :mod:`~elasticir.train.groups` (ranking groups),
:mod:`~elasticir.train.mining` (candidate mining), :mod:`~elasticir.train.corpora` (corpora
encoded by a teacher), and the extra ranking groups of :mod:`~elasticir.train.anchor` and
:mod:`~elasticir.train.judged`.
"""
