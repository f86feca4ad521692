"""A row's seconds count every attempt: a row killed and resumed from its checkpoint reports
the time of all its attempts (ssah/plan/clock.py), so a study's CPU-hours are not read low."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ssah.plan.clock import FILE, AttemptClock


def test_a_fresh_row_counts_only_its_own_attempt(tmp_path: Path) -> None:
    clock = AttemptClock(tmp_path, every_s=60)
    time.sleep(0.05)
    total = clock.stop()
    assert clock.attempts == 1
    assert 0.05 <= total < 5
    saved = json.loads((tmp_path / FILE).read_text())
    assert saved["attempts"] == 1 and saved["earlier"] == 0.0 and saved["this"] >= 0.0


def test_a_resumed_row_adds_the_earlier_attempts_up_to_their_last_heartbeat(tmp_path: Path) -> None:
    (tmp_path / FILE).write_text(json.dumps({"earlier": 100.0, "this": 20.5, "attempts": 2}))
    clock = AttemptClock(tmp_path, every_s=60)
    total = clock.stop()
    assert clock.attempts == 3
    assert 120.5 <= total < 125.5


def test_the_heartbeat_keeps_the_time_of_an_attempt_that_is_killed(tmp_path: Path) -> None:
    clock = AttemptClock(tmp_path, every_s=0.02)
    time.sleep(0.2)  # several beats; a killed process writes nothing after its last beat
    beat = json.loads((tmp_path / FILE).read_text())
    clock.stop()
    assert beat["this"] >= 0.1
    again = AttemptClock(tmp_path, every_s=60)
    assert again.earlier >= 0.1 and again.attempts == 2
    again.stop()


def test_a_damaged_heartbeat_starts_the_count_afresh(tmp_path: Path) -> None:
    (tmp_path / FILE).write_text("{not json")
    clock = AttemptClock(tmp_path, every_s=60)
    assert clock.earlier == 0.0 and clock.attempts == 1
    clock.stop()
