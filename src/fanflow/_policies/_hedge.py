"""Hedged requests: race a duplicate attempt against a straggler.

After Dean & Barroso, "The Tail at Scale" (CACM, 2013): send a second copy
of a request once the first has been outstanding longer than the 95th
percentile of recent latencies, use whichever answers first, and cancel the
other. That cuts the tail for about 5 % extra requests.
"""

from __future__ import annotations

import math
import re

from .._core._validate import check_number

__all__ = ["Hedge"]

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


class Hedge:
    """Launch one duplicate attempt of a slow task; the first to finish wins.

    Args:
        after: seconds into an attempt before its hedge is launched, or a
            percentile such as ``"p95"`` (also ``"p90"``, ``"p99"``...): an
            attempt is hedged once it has run longer than 95 % of this
            fan-out's attempts — the finished ones by their duration (the
            last 1,000 successes), the running ones by their time so far.
            Counting running attempts matters at a cold start, when only the
            fast attempts have finished: their p95 alone would send hedges
            after ordinary tasks instead of the straggler. No percentile
            hedge fires before ``min_samples`` attempts have succeeded; a
            fan-out with a hedge budget that ends with fewer successes warns
            once (``RuntimeWarning``) rather than silently never hedging. An
            original cancelled because its hedge won counts among the
            finished attempts by its time so far (a lower bound, as for
            running ones), so the stragglers stay in the percentile.
        max_extra: at most ``floor(max_extra * number of tasks)`` hedges per
            fan-out (0.1 = 10 % extra attempts). With fewer than
            ``1 / max_extra`` tasks that is none: raise it for small fan-outs.
        min_samples: successful attempts needed before a percentile is trusted.

    Only tasks with ``idempotent=True`` are hedged. A hedge counts against
    ``max_concurrency`` (it waits for a free slot) and in
    ``TaskResult.attempts``; ``TaskResult.hedged`` says whether the hedge
    produced the result. The losing attempt is cancelled and awaited.

    Raises:
        ValueError, TypeError: an invalid option.
    """

    def __init__(
        self, after: float | str = "p95", max_extra: float = 0.1, min_samples: int = 20
    ) -> None:
        self.percentile: float | None = None
        self.after: float | None = None
        if isinstance(after, str):
            match = _PERCENTILE.match(after)
            if not match or not 0 < float(match.group(1)) < 100:
                raise ValueError(
                    f"Hedge(after=...) must be seconds or a percentile like 'p95'; got {after!r}"
                )
            self.percentile = float(match.group(1))
        elif isinstance(after, bool) or not isinstance(after, int | float):
            raise TypeError(f"Hedge(after=...) must be seconds or 'pNN'; got {after!r}")
        elif not (math.isfinite(after) and after > 0):
            raise ValueError(f"Hedge(after=...) must be > 0 seconds; got {after!r}")
        else:
            self.after = float(after)
        check_number(max_extra, "Hedge(max_extra=...)", minimum=0, maximum=1)
        check_number(min_samples, "Hedge(min_samples=...)", minimum=1, integer=True)
        self.max_extra = float(max_extra)
        self.min_samples = min_samples
        self._spec = after

    def __repr__(self) -> str:
        return f"Hedge(after={self._spec!r}, max_extra={self.max_extra:g})"

    def budget(self, n_tasks: int) -> int:
        """How many hedges a fan-out of ``n_tasks`` may launch."""
        return math.floor(self.max_extra * n_tasks + 1e-9)
