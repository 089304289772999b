"""FanInResult: confidence levels, raise_for_status, JSON reports."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
from pathlib import Path

import pytest

import fanflow as ff
from fanflow._core._jsonable import to_jsonable

from .conftest import ticks


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


@pytest.mark.parametrize(
    ("confidence", "level"),
    [(1.0, "high"), (0.8, "high"), (0.79, "medium"), (0.5, "medium"), (0.49, "low"), (0, "low")],
)
def test_confidence_level_thresholds(confidence: float, level: str) -> None:
    result = ff.FanInResult(None, [], True, "s", confidence, 0.0)
    assert result.confidence_level == level


def test_to_jsonable_converts_to_the_nearest_json_form() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    value = {
        "set": {3, 1, 2},
        "tuple": (1, "a"),
        "bytes": b"hi",
        "binary": b"\xff\x00",
        "point": Point(1, 2),
        "colour": Colour.RED,
        "when": datetime.date(2026, 11, 28),
        "nan": math.nan,
        "inf": -math.inf,
        "path": Path("/tmp/x"),
        "error": KeyError("k"),
        "opaque": Opaque(),
        "cycle": cycle,
        1: "int key",
        None: "none key",
    }
    out = to_jsonable(value)
    text = json.dumps(out, allow_nan=False)  # strict JSON
    back = json.loads(text)
    assert back["set"] == [1, 2, 3]
    assert back["tuple"] == [1, "a"]
    assert back["bytes"] == "hi" and back["binary"] == {"base64": "/wA="}
    assert back["point"] == {"x": 1, "y": 2}
    assert back["colour"] == "red" and back["when"] == "2026-11-28"
    assert back["nan"] == "NaN" and back["inf"] == "-Infinity"
    assert back["path"] == "/tmp/x"
    assert back["error"] == {"type": "KeyError", "message": "'k'"}
    assert back["opaque"] == "<Opaque thing>"
    assert back["cycle"] == ["<cycle: list>"]
    assert back["1"] == "int key" and back["null"] == "none key"


async def test_result_to_dict_is_json_and_describes_errors() -> None:
    tasks = [
        ff.Task("ok", ticks, args=(1, {1, 2})),
        ff.Task("bad", ticks, args=(2, None, True)),
    ]
    result = await ff.fan_out(tasks)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["ok"] is True and data["strategy"] == "BestEffort(min_success=1)"
    assert data["value"] == {"ok": [1, 2]}
    assert data["counts"] == {"ok": 1, "error": 1, "timeout": 0, "cancelled": 0, "skipped": 0}
    bad = data["results"][1]
    assert bad["status"] == "error"
    assert bad["error"] == {"type": "RuntimeError", "message": "failed after 2 ticks"}
    assert bad["history"][0]["status"] == "error"
    assert data["coverage"] == 0.5 and data["confidence_level"] == "medium"


async def test_vote_to_dict_has_votes_with_string_keys() -> None:
    tasks = [ff.Task(f"v{i}", ticks, args=(1, v)) for i, v in enumerate([1, 1, 2])]
    result = await ff.fan_out(tasks, strategy=ff.Vote(early_stop=False))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["votes"] == {"1": 2.0, "2": 1.0} and data["value"] == 1


async def test_result_lookup_by_name() -> None:
    result = await ff.fan_out([ff.Task("a", ticks, args=(1, "A"))])
    assert result["a"].value == "A"
    with pytest.raises(KeyError):
        result["zzz"]


async def test_strategy_failed_lists_failures_and_keeps_successes() -> None:
    tasks = [ff.Task(f"f{i}", ticks, args=(1, None, True)) for i in range(7)]
    tasks.append(ff.Task("good", ticks, args=(0, "g")))
    with pytest.raises(ff.StrategyFailed) as info:
        await ff.fan_out(tasks, strategy=ff.BestEffort(min_success=2))
    message = str(info.value)
    assert "1 of 8 tasks ok" in message and "and 2 more" in message
    assert info.value.result["good"].value == "g"
