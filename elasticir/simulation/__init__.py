"""The online simulation: a schedule policy against operating points, with N parallel servers.

    >>> from elasticir.simulation import simulate
    >>> records = simulate(points, parse_schedule("deadline"), arrivals, query_ids, slo=0.1)

A discrete-event simulation of the server's dispatch loop: the same
:class:`~elasticir.schedule.scheduler.Scheduler` and policy objects the server runs, with
service times drawn from each choice's cost model and its measured spread, and each answer's
quality the profiled per-query value of its choice. The records are the load generator's
(:class:`~elasticir.schedule.report.RequestRecord`), so one report serves both.
"""

from elasticir.simulation.engine import SimulationResult, simulate

__all__ = ["SimulationResult", "simulate"]
