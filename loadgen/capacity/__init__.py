"""Capacity search: configuration (:mod:`~loadgen.capacity.config`), SLO judgement of one
step (:mod:`~loadgen.capacity.judgement`), the chargers search
(:mod:`~loadgen.capacity.search`) and the connect-rate search
(:mod:`~loadgen.capacity.rate`); :mod:`~loadgen.capacity.measure` turns two views of the
merged metrics into the step a search judges.

The question answered: the largest number of concurrent chargers the CSMS holds while its
answers stay within SLOs. The search steps the chargers up from ``start`` (a factor such as
``x1.5`` or an increment such as ``+100``) until the first step that fails its SLOs or
``max_chargers``, then bisects between the last good and the first bad step until they are
at most ``max(1, resolution, resolution_ratio * good)`` apart. A step where the load
generator itself was saturated (schedule-lag p99 over the guard, or CPU over its guard)
stops the search with "limited by the load generator (add workers)" and no CSMS figure.

The searches and the judgement do no I/O and import neither Locust nor gevent (only
:mod:`~loadgen.capacity.measure` reads the metrics); the caller drives the state machine.
How a Locust ``LoadTestShape`` would drive it::

    search = CapacitySearch(config)
    # tick(): at the start of each hold
    target = search.next_target()          # None: finished -> report search.result()
    metrics.set_target(target)             # and return (target, spawn_rate) from tick()
    # ... wait until the chargers are connected, then hold config.hold_seconds (at least one
    # full heartbeat / meter cycle), remembering the merged histograms / counters at the
    # start of the hold ...
    # at the end of the hold: the differences over the hold become one StepMeasurement
    #   (measure(before, after, ...)):
    #   per-action p50/p95/p99: bucket_percentile() over call_duration_seconds{action}
    #   call_errors: CALLs not answered with a CALLRESULT; connect attempts / failures;
    #   unexpected disconnects; messages/s; schedule-lag p99 (the worst worker); CPU
    search.record(measurement)
    # finished: result = search.result(); metrics.set_capacity(result.max_chargers) when it
    # is not None; result.summary() for the console; result.to_dict() for the reports

Calling :meth:`~search.CapacitySearch.next_target` again before its ``record()``
returns the same target, so a shape may ask on every tick.
"""
