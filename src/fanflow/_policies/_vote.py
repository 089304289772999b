"""Voting / consensus: ensemble answers, majority wins, with early stopping."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from .._core._result import TaskResult
from .._core._task import Task
from .._core._validate import check_callable, check_choice, check_instance, check_number
from ._strategies import Strategy, Verdict, _check_weights

__all__ = ["BetaStop", "Vote", "default_key"]


def default_key(value: Any) -> Hashable:
    """Normalise an answer for counting.

    Strings are stripped, case-folded and their inner whitespace collapsed
    (``"  The  Answer "`` counts as ``"the answer"``); other hashable values
    count as they are; unhashable ones (lists, dicts) by their canonical JSON.
    """
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    return value  # type: ignore[no-any-return]


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction of the incomplete beta function, evaluated by the
    # modified Lentz method (Numerical Recipes, 3rd ed., section 6.4).
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


class BetaStop:
    """A statistical stopping rule for :class:`Vote`, after Adaptive-Consistency.

    Adaptive-Consistency (Aggarwal et al., 2023) stops sampling once the
    leading answer is probably the majority: with ``v1`` votes for the
    leader and ``v2`` for the runner-up, the posterior of the leader's share
    among the two is Beta(v1 + 1, v2 + 1), and sampling stops when
    P(share > 0.5) >= ``confidence``. Four unanimous votes reach 0.97.

    This trades exactness for fewer calls: the full count could have given
    another answer, and a result stopped this way says so in its ``reason``.
    With a ``quorum``, the rule also waits until the leader meets it.

    Args:
        confidence: the posterior probability required, in (0.5, 1).

    Raises:
        TypeError: ``confidence`` is not a number.
        ValueError: ``confidence`` is outside (0.5, 1).
    """

    def __init__(self, confidence: float = 0.95) -> None:
        check_number(confidence, "BetaStop(confidence=...)", above=0.5, below=1.0)
        self.confidence = float(confidence)

    def __repr__(self) -> str:
        return f"BetaStop(confidence={self.confidence:g})"

    def probability(self, leader: float, runner_up: float) -> float:
        """P(the leader's true share beats the runner-up's), given their vote weights."""
        return 1.0 - betainc(leader + 1.0, runner_up + 1.0, 0.5)


TieBreak = str | Callable[[list[Hashable]], Hashable]


class Vote(Strategy):
    """Voting / consensus over redundant tasks: the most-weighted answer wins.

    Args:
        key: ``key(value) -> hashable`` normalises answers before counting;
            by default :func:`default_key` (strings stripped, case-folded,
            whitespace collapsed).
        quorum: ``None`` is plurality among the votes cast; ``q`` in (0, 1]
            requires the winner's weight to exceed ``q`` x the total weight
            of all tasks (``0.5`` is "majority wins").
        weights: ``{task name: weight}``; tasks not named use ``Task.weight``.
        early_stop: ``True`` stops as soon as the result can no longer
            change (the leader's lead exceeds the weight still outstanding,
            and the quorum is settled either way), so the answer is exactly
            the full count's at lower cost. A :class:`BetaStop` also stops
            when the leader is statistically safe. ``False`` counts every vote.
        tie_break: ``"first"`` picks the tied answer that reached the tied
            weight first; ``"error"`` fails the fan-out; a callable receives
            the tied keys (in the order they reached the tie) and returns one.

    ``value`` is the winning answer as first returned (the raw value, not
    the key); ``FanInResult.votes`` maps each key to its weight;
    ``confidence`` is the winner's weight / the weight of all votes cast.
    Failed tasks cast no vote.

    Raises:
        ValueError, TypeError: an invalid option; at the start of a fan-out,
            no tasks, or ``weights`` naming an unknown task.
    """

    def __init__(
        self,
        key: Callable[[Any], Hashable] | None = None,
        quorum: float | None = None,
        weights: Mapping[str, float] | None = None,
        early_stop: bool | BetaStop = True,
        tie_break: TieBreak = "first",
    ) -> None:
        check_callable(key, "Vote(key=...)", allow_none=True)
        check_number(quorum, "Vote(quorum=...)", above=0, maximum=1, allow_none=True)
        check_instance(
            early_stop, "Vote(early_stop=...)", (bool, BetaStop), "True, False or ff.BetaStop(...)"
        )
        check_choice(tie_break, "Vote(tie_break=...)", ("first", "error"), or_callable=True)
        self.key = key or default_key
        self.quorum = quorum
        self.weights = _check_weights(weights, "Vote")
        self.early_stop = early_stop
        self.tie_break = tie_break

    def __repr__(self) -> str:
        args = []
        if self.quorum is not None:
            args.append(f"quorum={self.quorum:g}")
        if self.early_stop is not True:
            args.append(f"early_stop={self.early_stop!r}")
        if self.tie_break != "first":
            args.append(f"tie_break={self.tie_break!r}")
        return f"Vote({', '.join(args)})"

    def start(self, tasks: Sequence[Task]) -> None:
        super().start(tasks)
        if not tasks:
            raise ValueError(f"{self!r} needs at least one task; got an empty task list")
        names = {t.name for t in tasks}
        unknown = sorted(set(self.weights) - names)
        if unknown:
            raise ValueError(f"Vote(weights=...) names unknown tasks: {', '.join(unknown)}")
        self._w = {t.name: self.weights.get(t.name, t.weight) for t in tasks}
        self._total = sum(self._w.values())
        self._outstanding = self._total
        self._tally: dict[Hashable, float] = {}
        self._reached: dict[Hashable, int] = {}
        self._raw: dict[Hashable, Any] = {}
        self._cast = 0.0
        self._seq = 0
        self._note = ""

    def _need(self) -> float:
        return -math.inf if self.quorum is None else self.quorum * self._total

    def _ranked(self) -> list[Hashable]:
        # Highest weight first; among equals, the one that got there first.
        return sorted(self._tally, key=lambda k: (-self._tally[k], self._reached[k]))

    def observe(self, result: TaskResult) -> bool:
        weight = self._w[result.name]
        self._outstanding -= weight
        if result.ok:
            k = self.key(result.value)
            self._seq += 1
            self._tally[k] = self._tally.get(k, 0.0) + weight
            self._reached[k] = self._seq
            self._raw.setdefault(k, result.value)
            self._cast += weight
        if self.early_stop is False:
            return False
        return self._decided()

    def _decided(self) -> bool:
        left = self._outstanding
        if left <= 1e-12:
            return False  # nothing outstanding: the fan-out ends by itself
        ranked = self._ranked()
        need = self._need()
        if not ranked:
            if left <= need:
                self._note = "stopped early: no answer can reach the quorum any more"
                return True
            return False
        lead_w = self._tally[ranked[0]]
        runner_w = self._tally[ranked[1]] if len(ranked) > 1 else 0.0
        if lead_w + left <= need:
            # Nobody can reach the quorum: the leader's best case fails it.
            self._note = "stopped early: no answer can reach the quorum any more"
            return True
        margin = lead_w - runner_w
        # With tie_break="first" a late tie still loses to the leader, who got
        # there first, so a lead equal to what is outstanding already decides.
        settled = margin >= left if self.tie_break == "first" else margin > left
        if settled and lead_w > need:
            self._note = "stopped early: no outstanding vote could change the winner (exact)"
            return True
        rule = self.early_stop
        if isinstance(rule, BetaStop) and lead_w > need:
            p = rule.probability(lead_w, runner_w)
            if p >= rule.confidence:
                self._note = (
                    f"stopped early by {rule!r}: P(leader is the majority) = {p:.3f}; "
                    "statistical, so the full count could differ"
                )
                return True
        return False

    def finish(self, results: Sequence[TaskResult]) -> Verdict:
        votes = {k: self._tally[k] for k in self._ranked()}
        note = f"; {self._note}" if self._note else ""
        if not votes:
            return Verdict(False, None, 0.0, "no votes were cast: every task failed" + note, votes)
        ranked = list(votes)
        top = votes[ranked[0]]
        tied = [k for k in ranked if votes[k] == top]
        winner = ranked[0]
        if len(tied) > 1:
            if self.tie_break == "error":
                reason = f"tie between {', '.join(map(repr, tied))} at weight {top:g}"
                return Verdict(False, None, top / self._cast, reason + note, votes)
            if callable(self.tie_break):
                winner = self.tie_break(list(tied))
                if winner not in tied:
                    reason = (
                        f"tie_break returned {winner!r}, which is not one of the tied "
                        f"answers {', '.join(map(repr, tied))}"
                    )
                    return Verdict(False, None, top / self._cast, reason + note, votes)
        confidence = votes[winner] / self._cast if self._cast > 0 else 0.0
        if self.quorum is not None and not votes[winner] > self.quorum * self._total:
            reason = (
                f"quorum not met: {winner!r} has weight {votes[winner]:g}, not more than "
                f"{self.quorum:g} x total weight {self._total:g}"
            )
            return Verdict(False, None, confidence, reason + note, votes)
        reason = f"{winner!r} won with weight {votes[winner]:g} of {self._cast:g} cast"
        return Verdict(True, self._raw[winner], confidence, reason + note, votes)
