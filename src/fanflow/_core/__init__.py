"""The core: fanflow's data types and the engine, as parts (standard library only).

Layering: these modules import the standard library, each other and the
executor protocol (``fanflow.executors._base``) only — a test checks it.
Policies (``fanflow._policies``: strategies, retry, hedge, limits, audit)
reach the engine as objects; executors through the
:class:`fanflow.executors.Executor` protocol; features (LLM patterns, bulk,
workflows, the CLI) sit above and use the public API.

The data types:

* ``_task``, ``_result``, ``_events``, ``_types``  tasks (with ``needs``/``Ref``), results, events.
* ``_exceptions``, ``_validate``  every exception (the tree is in its docstring), the checks.
* ``_usage``, ``_threads``, ``_jsonable``  token ledgers, daemon worker threads, JSON forms.

The engine:

* ``_driver``    the loop: launch attempts, settle them, stop when told.
* ``_records``   one task's state and one attempt, with ``__slots__``.
* ``_admission`` what may start next: queues, capacity, rate-limit reservations.
* ``_hedging``   when to race a duplicate (O(log n) per decision).
* ``_retrying``  retry timers.
* ``_graph``     the ``needs`` graph (Kahn counting, no recursion).
* ``_sources``   where tasks come from and where results go.
"""
