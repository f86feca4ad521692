"""A row's time over all its attempts: a row killed and resumed from its checkpoint (SLURM
requeue, an interrupted plan) would otherwise report only its last attempt's seconds, and a
study's CPU-hours would read low. Each attempt keeps a heartbeat in the row dir (`elapsed.json`,
not part of the exported result); the next attempt starts from it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from ssah.io import atomic_write_text

FILE = "elapsed.json"


class AttemptClock:
    """Seconds of this row's earlier attempts (as far as their last heartbeat) plus this one's."""

    def __init__(self, out_dir: Path, every_s: float = 30.0) -> None:
        self.path = out_dir / FILE
        self.every_s = every_s
        earlier = _read(self.path)
        self.earlier = float(earlier.get("earlier", 0.0)) + float(earlier.get("this", 0.0))
        self.attempts = int(earlier.get("attempts", 0)) + 1
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="ssah-row-clock", daemon=True)
        self._thread.start()

    def this(self) -> float:
        return time.perf_counter() - self.t0

    def total(self) -> float:
        return self.earlier + self.this()

    def stop(self) -> float:
        """Stop the heartbeat (the row is done); its total seconds."""
        self._stop.set()
        self._thread.join()
        self._beat()
        return self.total()

    def _beat(self) -> None:
        state = {"earlier": round(self.earlier, 1), "this": round(self.this(), 1),
                 "attempts": self.attempts}  # fmt: skip
        atomic_write_text(self.path, json.dumps(state) + "\n")

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._beat()


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
