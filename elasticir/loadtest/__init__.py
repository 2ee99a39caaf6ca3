"""``elasticir loadtest``: measure a running ``elasticir serve`` under an arrival trace.

:mod:`~elasticir.loadtest.http` is the small keep-alive HTTP/1.1 client,
:mod:`~elasticir.loadtest.generator` sends open-loop (at the trace's times) or closed-loop
(C clients) load and records every request, :mod:`~elasticir.loadtest.closed` summarizes a
closed loop per concurrency, and :mod:`~elasticir.loadtest.runner` checks a config, runs it,
scores the answers and writes the run folder of :mod:`elasticir.schedule.report`.
"""

from elasticir.loadtest.generator import LoadRun, Progress, run_closed, run_open
from elasticir.loadtest.http import ConnectionPool, ServerAddress
from elasticir.loadtest.runner import LoadTestConfig, LoadTestResult, check, run_loadtest

__all__ = [
    "ConnectionPool",
    "LoadRun",
    "LoadTestConfig",
    "LoadTestResult",
    "Progress",
    "ServerAddress",
    "check",
    "run_closed",
    "run_loadtest",
    "run_open",
]
