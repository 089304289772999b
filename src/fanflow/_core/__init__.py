"""The engine, as parts: the driver's hot path and the parts it is made of.

Layering: these modules import the standard library and fanflow's data
types (tasks, results, events, exceptions) only; policies (strategies,
retry, hedge, limits) reach them as objects, executors through the
:class:`fanflow.executors.Executor` protocol.

* ``_driver``    the loop: launch attempts, settle them, stop when told.
* ``_records``   one task's state and one attempt, with ``__slots__``.
* ``_admission`` what may start next: queues, capacity, rate-limit reservations.
* ``_hedging``   when to race a duplicate (O(log n) per decision).
* ``_retrying``  retry timers.
* ``_graph``     the ``needs`` graph (Kahn counting, no recursion).
* ``_sources``   where tasks come from and where results go.
"""
