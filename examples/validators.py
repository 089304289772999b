"""Validators for examples/validation.yaml: each checks one thing and returns a report dict."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str
    qty: int = Field(ge=1)
    price: float = Field(ge=0)


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    items: list[Item] = Field(min_length=1)
    total: float


def _orders(path: str) -> list[dict[str, object]]:
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def check_schema(path: str) -> dict[str, object]:
    """Every order matches the Order schema."""
    errors = []
    for i, order in enumerate(_orders(path)):
        try:
            Order.model_validate(order)
        except ValidationError as exc:
            errors.append(f"order {i}: {exc.errors()[0]['msg']}")
    if errors:
        raise ValueError("; ".join(errors))
    return {"schema": "ok"}


def check_unique_ids(path: str) -> dict[str, object]:
    """No two orders share an id."""
    ids = [str(o["id"]) for o in _orders(path)]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate order ids: {', '.join(dupes)}")
    return {"unique_ids": len(ids)}


def check_totals(path: str) -> dict[str, object]:
    """Each order's total is the sum of its items."""
    wrong = []
    for order in _orders(path):
        items = order["items"]
        assert isinstance(items, list)
        expected = sum(i["qty"] * i["price"] for i in items)
        if abs(expected - float(order["total"])) > 1e-9:  # type: ignore[arg-type]
            wrong.append(f"{order['id']}: total {order['total']} != {expected}")
    if wrong:
        raise ValueError("; ".join(wrong))
    return {"totals": "ok"}
