"""Decisions on the reference district before and after the multi-link snapping fix (issue 12).

``tests/data/reference_decisions.json`` was written by ``reference_decisions.py`` from the code
before the fix. Joining a point to every link within the snapping tolerance only adds ways onto
and off the roads, so a travel time can only stay or get shorter: a decision may change only
where a time changed, and then every time of that incident is no longer and one is shorter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from reference_decisions import decisions

BEFORE = Path(__file__).parent / "data" / "reference_decisions.json"
TOL = 1e-6


@pytest.fixture(scope="module")
def compared() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    before = json.loads(BEFORE.read_text())
    after = decisions()
    assert [r["incident_id"] for r in after] == [r["incident_id"] for r in before]
    return list(zip(before, after, strict=True))


def _by_kind(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["kind"]: a for a in record.get("assignments", [])}


def test_same_incidents_are_refused(compared: list[tuple[dict, dict]]) -> None:
    assert [old.get("error") for old, _ in compared] == [new.get("error") for _, new in compared]


def test_a_decision_changes_only_where_a_time_got_shorter(
    compared: list[tuple[dict, dict]],
) -> None:
    changed = 0
    for old, new in compared:
        if "error" in old:
            continue
        a, b = _by_kind(old), _by_kind(new)
        assert set(a) <= set(b), (old, new)  # a kind filled before is filled still
        same = new["level"] == old["level"] and all(
            b[k]["unit_id"] == a[k]["unit_id"]
            and b[k]["level"] == a[k]["level"]
            and b[k]["time_s"] == pytest.approx(a[k]["time_s"], abs=TOL)
            for k in a
        )
        if same:
            continue
        changed += 1
        # Every time is no longer than before, and at least one is shorter.
        assert all(b[k]["time_s"] <= a[k]["time_s"] + TOL for k in a), (old, new)
        assert any(b[k]["time_s"] < a[k]["time_s"] - TOL for k in a), (old, new)
    # The fix matters on the reference roads too, but leaves most decisions alone.
    assert changed < len(compared) // 2
