"""The one rate formatter of reports: `12.3 [8.1, 18.2] n=200` from a metrics dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ssah.stats import fmt_ci


def rate(m: Mapping[str, Any], key: str) -> str:
    """A rate (fraction) in %, with its 95% interval and n when the metrics carry them."""
    v = m.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "-"
    text = fmt_ci(float(v), m.get(f"{key}/ci_low"), m.get(f"{key}/ci_high"), 100.0, 1)
    n = m.get(f"{key}/n")
    return text + (f" n={int(n)}" if isinstance(n, int | float) else "")
