"""The server's wire protocol: what a ``POST /search`` body may hold, and what comes back.

Request (JSON object, at most :data:`MAX_BODY` bytes)::

    {"query": "text", "k": 10, "id": "q1"}                 one query
    {"queries": ["a", "b"], "k": 10, "ids": ["x", "y"]}    several, answered together

``k`` (default 10) is an integer in ``1..k_max``; ``id`` / ``ids`` (strings or integers) are
echoed back, by default ``"0"``, ``"1"``, ... Response 200::

    {"results": [{"id": "q1", "hits": [{"doc_id": "p7", "score": 0.81, "rank": 1}, ...],
                  "choice": "full>ranker%20", "late": false,
                  "timings": {"queue_ms": 1.2, "service_ms": 8.4, "total_ms": 9.7,
                              "batch_size": 3, "queue_length": 2}}]}

Any refusal is ``{"error": "what is wrong"}`` with a 4xx or 5xx status; 503s add
``"reason"`` (``queue full``, ``shed``, ``stopping``) and a ``Retry-After`` header. A list is
answered whole: it is queued only if the queue has room for all of it, and if any of its
queries is shed the request gets the 503.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from elasticir.serve.scheduled import Answer

__all__ = ["MAX_BODY", "BadRequest", "SearchRequest", "parse_search", "results_json"]

MAX_BODY = 64 * 1024
DEFAULT_K = 10
_FIELDS = ("query", "queries", "k", "id", "ids")
_EXAMPLE = '{"query": "who wrote hamlet", "k": 10}'


class BadRequest(ValueError):
    """A request the server refuses: ``status`` (400, 413...) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SearchRequest:
    queries: tuple[str, ...]
    ids: tuple[str | int, ...]
    k: int


def parse_search(body: bytes, *, k_max: int, max_queries: int) -> SearchRequest:
    """The search a body asks for; :class:`BadRequest` saying what is wrong otherwise."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(400, "the body is not UTF-8 text; send JSON such as " + _EXAMPLE) from None
    except json.JSONDecodeError as error:
        raise BadRequest(400, f"malformed JSON ({error}); send e.g. {_EXAMPLE}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, f"the body must be a JSON object such as {_EXAMPLE}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise BadRequest(
            400, f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(_FIELDS)}"
        )
    if "query" in data and "queries" in data:
        raise BadRequest(400, 'give either "query" (one text) or "queries" (a list), not both')
    if "query" in data:
        if "ids" in data:
            raise BadRequest(400, '"ids" goes with "queries"; with "query" give "id"')
        queries = (_text(data["query"], '"query"'),)
        ids: tuple[str | int, ...] = (_id(data.get("id", "0"), '"id"'),)
    elif "queries" in data:
        if "id" in data:
            raise BadRequest(400, '"id" goes with "query"; with "queries" give "ids"')
        given = data["queries"]
        if not isinstance(given, list):
            raise BadRequest(400, '"queries" must be a list of strings')
        if not given:
            raise BadRequest(400, '"queries" is an empty list')
        if len(given) > max_queries:
            raise BadRequest(
                413, f"too many queries: {len(given)} in one request, at most {max_queries}"
            )
        queries = tuple(_text(q, f'"queries"[{i}]') for i, q in enumerate(given))
        ids = tuple(str(i) for i in range(len(queries)))
        if "ids" in data:
            if not isinstance(data["ids"], list) or len(data["ids"]) != len(queries):
                raise BadRequest(400, f'"ids" must be a list of {len(queries)} ids, one a query')
            ids = tuple(_id(v, f'"ids"[{i}]') for i, v in enumerate(data["ids"]))
    else:
        raise BadRequest(400, f'missing "query" (one text) or "queries" (a list); e.g. {_EXAMPLE}')
    k = data.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int):
        raise BadRequest(400, f'"k" must be an integer, got {json.dumps(k)}')
    if not 1 <= k <= k_max:
        raise BadRequest(400, f'"k" must be between 1 and {k_max}, got {k}')
    return SearchRequest(queries, ids, k)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(400, f"{what} must be a string, got {json.dumps(value)[:40]}")
    if not value.strip():
        raise BadRequest(400, f"{what} is empty")
    return value


def _id(value: Any, what: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(400, f"{what} must be a string or an integer")
    return value


def results_json(ids: Sequence[str | int], answers: Sequence[Answer]) -> dict[str, Any]:
    """The 200 body: one result per query, in the order asked."""
    return {
        "results": [
            {
                "id": qid,
                "hits": [{"doc_id": h.doc_id, "score": h.score, "rank": h.rank} for h in a.hits],
                "choice": str(a.choice),
                "late": a.late,
                "timings": {
                    "queue_ms": round(a.queue_seconds * 1000, 3),
                    "service_ms": round(a.service_seconds * 1000, 3),
                    "total_ms": round(a.total_seconds * 1000, 3),
                    "batch_size": a.batch_size,
                    "queue_length": a.queue_length,
                },
            }
            for qid, a in zip(ids, answers)
        ]
    }
