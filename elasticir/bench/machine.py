"""What a benchmark ran on: :mod:`elasticir.machine` (below the schedule, which records it
with operating points), under the name the benchmark scripts import."""

from elasticir.machine import CPUINFO, RELEVANT_FLAGS, cpu_info, machine

__all__ = ["CPUINFO", "RELEVANT_FLAGS", "cpu_info", "machine"]
