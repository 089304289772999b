"""The schema and tools of examples/validators.yaml: a judge's verdict, an auditor's tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

ORDERS = Path(__file__).with_name("orders.json")


class Verdict(BaseModel):
    """A judge's verdict on a file of orders (``schema: validators_tools:Verdict``)."""

    verdict: Literal["pass", "fail"]
    reasons: list[str] = Field(default_factory=list)


def _order(order_id: str) -> dict[str, Any]:
    for order in json.loads(ORDERS.read_text()):
        if order["id"] == order_id:
            return order  # type: ignore[no-any-return]
    raise KeyError(f"no order {order_id!r}")


def stated_total(order_id: str) -> float:
    """The total an order states."""
    return float(_order(order_id)["total"])


def items_total(order_id: str) -> float:
    """The sum of an order's items: quantity times price, added up."""
    return float(sum(i["qty"] * i["price"] for i in _order(order_id)["items"]))
