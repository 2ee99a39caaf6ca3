"""Scoring a padded batch one layer at a time: early exit, every exit recorded, and the cost.

Scoring runs one layer at a time (:func:`elasticir.models.elastic.layer_step`, through
:meth:`RankerNet.step <elasticir.models.ranker.net.RankerNet.step>`). Without a policy every
pair runs to the level's depth and only the last exit head is computed. With an exit policy
(:mod:`elasticir.compute.exits`) the exit head and the policy's signal are computed after each
layer from ``policy.min_layer`` on for the rows still running; rows that exit are finalised and
*removed from the batch* (``index_select`` of the hidden states and mask, then trailing
all-padding columns are cut), so no compute is spent on them afterwards
(:func:`score_batch`). ``RankerOutput.flops`` counts what each pair really cost: exit layer x
one layer's FLOPs at the level's width for the pair's own token count (:func:`layer_costs`;
exit heads, embeddings and padding excluded, as in
:func:`elasticir.models.elastic.level_flops`). :func:`record_batch` runs every layer instead,
keeping every exit's score and signals: what calibration simulates policies from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.compute.exits import PRUNE_GAP, ExitPolicy
from elasticir.compute.levels import Level
from elasticir.models.elastic import layer_flops
from elasticir.models.ranker.net import RankerNet

__all__ = ["layer_costs", "record_batch", "score_batch"]


def score_batch(
    net: RankerNet,
    input_ids: torch.Tensor,
    token_types: torch.Tensor,
    mask: torch.Tensor,
    level: Level,
    depth: int,
    policy: ExitPolicy | None,
    ranks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``(rows,)`` and 1-based exit layers ``(rows,)`` of a padded batch at ``level``
    (``depth`` layers), each row leaving the batch when ``policy`` exits it (None: every row
    runs to ``depth``); ``ranks``: the rows' first-stage ranks, for a rank policy."""
    rows = input_ids.shape[0]
    out_scores = torch.empty(rows, device=input_ids.device)
    out_exits = torch.full((rows,), depth, dtype=torch.long, device=input_ids.device)
    active = torch.arange(rows, device=input_ids.device)
    hidden, masks = net.start(input_ids, token_types, mask)
    saturation = policy is not None and policy.uses_saturation
    previous = net.state(hidden, masks) if saturation else None
    for i in range(depth):
        hidden = net.step(i, hidden, masks, level)
        layer = i + 1
        last = layer == depth
        if not last and (policy is None or layer < policy.min_layer):
            if saturation:
                previous = net.state(hidden, masks)
            continue
        cls = net.state(hidden, masks)
        scores = net.heads(i, cls)
        if last:
            out_scores[active] = scores.float()
            break
        assert policy is not None
        cosine = F.cosine_similarity(cls, previous, dim=-1) if saturation else None
        probability = (
            torch.sigmoid(net.classifier(i, cls, scores)) if policy.uses_classifier else None
        )
        done = policy.exits(layer, scores, cosine, probability, ranks)
        if bool(done.any()):
            exited = scores[done].float()
            if policy.prunes:  # below every candidate that goes deeper
                exited = exited - PRUNE_GAP * (depth - layer)
            out_scores[active[done]] = exited
            out_exits[active[done]] = layer
            if bool(done.all()):
                break
            keep = torch.nonzero(~done).squeeze(1)
            if ranks is not None:
                ranks = ranks.index_select(0, keep)
            hidden = hidden.index_select(0, keep)
            masks = masks.select(keep)
            active = active.index_select(0, keep)
            cls = cls.index_select(0, keep)
            longest = int(masks.mask.sum(dim=1).max())
            if longest < masks.mask.shape[1]:  # columns of padding in every remaining row
                hidden, masks = hidden[:, :longest], masks.trim(longest)
        if saturation:
            previous = cls
    return out_scores, out_exits


def record_batch(
    net: RankerNet,
    input_ids: torch.Tensor,
    token_types: torch.Tensor,
    mask: torch.Tensor,
    level: Level,
    classifier: bool,
    keep_states: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Every exit of ``level`` for a padded batch, no exit taken: ``(scores, saturation,
    probabilities, states)`` as float32 arrays ``(rows, depth)`` -- the exit classifier's
    ``probabilities`` only with ``classifier``, else None -- and with ``keep_states`` the exit
    states ``(rows, depth + 1, hidden)`` (else None). Call it under inference mode."""
    layer_scores, states = net.exit_outputs(input_ids, token_types, mask, level)
    depth = layer_scores.shape[1]
    cosines = [F.cosine_similarity(states[i + 1], states[i], dim=-1) for i in range(depth)]
    scores = layer_scores.float().cpu().numpy()
    saturation = torch.stack(cosines, 1).float().cpu().numpy()
    probabilities = None
    if classifier:
        probs = [
            torch.sigmoid(net.classifier(i, states[i + 1], layer_scores[:, i]))
            for i in range(depth)
        ]
        probabilities = torch.stack(probs, 1).float().cpu().numpy()
    kept = torch.stack(states, 1).float().cpu().numpy() if keep_states else None
    return scores, saturation, probabilities, kept


def layer_costs(config: Any, lengths: np.ndarray, width: int) -> np.ndarray:
    """One layer's FLOPs at ``width`` for pairs of ``lengths`` tokens, ``(n,)`` int64."""
    level = Level(depth=1, width=width)
    costs = {int(t): layer_flops(config, level, int(t)) for t in np.unique(lengths)}
    return np.fromiter((costs[int(t)] for t in lengths), dtype=np.int64, count=len(lengths))
