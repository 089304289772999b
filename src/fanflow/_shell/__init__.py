"""Shell tasks: run a command in its own process group; nothing it starts outlives it.

* ``_run``       ``run_shell``: output spilled to disk past a buffer, TERM then KILL on stop.
* ``_signals``   the registry of live process groups and the fatal-signal handler.
* ``_watchdog``  a separate process that stops those groups if fanflow is killed (``kill -9``).
"""
