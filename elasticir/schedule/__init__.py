"""The elastic schedule: which compute serves each batch, decided from the live request stream.

``choices`` (what a batch spends), ``points`` (what each choice costs here and is worth),
``profile`` (measuring them), ``policies`` (static, queue, deadline), ``scheduler`` (the
queue, batching and shedding, with no clock of its own), ``executor`` (running a batch at a
choice), ``traces`` (arrivals), ``quality`` and ``report`` (per-request outcomes shared by the
load generator and the simulator). Design notes: ``docs/schedule.md``.
"""
