"""The fault-injection seam: WHARF_FAULT parsing, and every named point placed in the code exactly once."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from shared import faults

ROOT = Path(__file__).resolve().parents[2]


def test_a_point_dies_at_its_nth_hit_only() -> None:
    armed = faults.parse("landing.after_send:3")
    assert armed is not None
    assert [armed.hit("landing.after_send") for _ in range(4)] == [False, False, True, False]
    assert not armed.hit("landing.after_claim")
    first = faults.parse(" create_jobs.after_events ")
    assert first is not None and (first.point, first.nth) == ("create_jobs.after_events", 1)


def test_unset_or_empty_arms_nothing() -> None:
    assert faults.parse("") is None and faults.parse("  ") is None


@pytest.mark.parametrize("value", ["landing.after_everything", "landing.after_send:0", "landing.after_send:x"])
def test_a_bad_value_is_refused_with_the_known_points(value: str) -> None:
    with pytest.raises(ValueError, match="WHARF_FAULT") as info:
        faults.parse(value)
    if "everything" in value:
        assert "landing.after_claim" in str(info.value)


def test_every_named_point_is_placed_in_the_code_and_every_placed_one_is_named() -> None:
    placed = Counter(name for path in (ROOT / "shared").rglob("*.py") if path.name != "faults.py"
                     for name in re.findall(r'fault_point\("([^"]+)"\)', path.read_text()))
    assert set(placed) == set(faults.POINTS)


def test_the_process_dies_with_137_at_the_point() -> None:
    code = ("from shared.faults import fault_point\n"
            "for i in range(3):\n"
            "    print(i, flush=True)\n"
            "    fault_point('landing.after_ledger')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "WHARF_FAULT": "landing.after_ledger:2"}, check=False)
    assert (run.returncode, run.stdout.split()) == (faults.EXIT_CODE, ["0", "1"])
    assert run.stderr.strip() == "WHARF_FAULT: killed at landing.after_ledger (hit 2)"
