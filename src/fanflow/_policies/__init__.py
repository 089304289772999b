"""Policies: what the engine consults, each a small object of its own.

* ``_strategies``, ``_vote``  completion policies and aggregates (when to stop, what to return).
* ``_retry``                  when and how long to wait before another attempt.
* ``_hedge``                  when to race a duplicate against a slow attempt.
* ``_limits``                 rate limits and adaptive concurrency.
* ``_audit``                  the independence audit (before a fan-out runs, and while).

They import the core below them (``fanflow._core``), never the features above.
"""
