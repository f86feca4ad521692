"""Uncertainty for every number the project reports: intervals, paired tests, claim verdicts.

Bottom layer: standard library only (no scipy), so every stage and the report can use it.
All levels are 95% unless a caller says otherwise.

- `wilson`: score interval of one rate k/n (good at 0% and 100%, unlike the normal one).
- `mcnemar`: two conditions on the same prompts: exact McNemar p (two-sided binomial on the
  discordant pairs) and the paired difference with Newcombe's hybrid-score interval
  (Newcombe 1998, "method 10"), which never leaves [-1, 1] and needs no bootstrap.
- `stratified_paired`: the same over several strata (seeds x prompts). The test is an exact
  sign-flip permutation test of the summed paired differences: under the null, the two
  outcomes of each (seed, prompt) pair are exchangeable, independently of every other pair.
  For 0/1 outcomes that distribution is exactly Binomial(discordant, 1/2), so the p-value is
  the exact McNemar p on the discordant pairs pooled over strata; for graded outcomes it is a
  seeded Monte Carlo sign-flip test. Its interval (Newcombe on the pooled pairs) is
  conditional on these worlds; `mean_ci` over the per-seed differences is the interval that
  also carries world-to-world (seed) variation, and the claims table uses that one.
- `mean_ci`: mean and Student-t interval across seeds.
- `verdict`: supported / contradicted / inconclusive: an interval that straddles the margin
  (zero by default) is inconclusive.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

LEVEL = 0.95
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(k: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of the rate k/n; (nan, nan) when n is 0.

    k may be fractional (a rate times n, e.g. an average over suites of the same prompts):
    any [0, 1] per-prompt outcome with mean p has variance <= p(1 - p), so the interval with
    n = number of prompts stays conservative."""
    if n <= 0:
        return math.nan, math.nan
    p, z = k / n, _z(level)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (doubling the smaller tail)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class Paired:
    """Condition B minus condition A on the same items (and strata)."""

    n: int  # pairs
    a_rate: float
    b_rate: float
    diff: float  # b_rate - a_rate
    ci_low: float
    ci_high: float
    p: float  # two-sided
    b_only: int  # pairs where only B is 1 (binary outcomes)
    a_only: int  # pairs where only A is 1
    strata: int = 1
    test: str = "exact McNemar"


def newcombe_paired(
    both: int, b_only: int, a_only: int, neither: int, level: float = LEVEL
) -> tuple[float, float]:
    """Newcombe's hybrid-score interval of p_B - p_A for paired 0/1 outcomes."""
    n = both + b_only + a_only + neither
    if n == 0:
        return math.nan, math.nan
    pb, pa = (both + b_only) / n, (both + a_only) / n
    lb, ub = wilson(both + b_only, n, level)
    la, ua = wilson(both + a_only, n, level)
    den = (both + b_only) * (a_only + neither) * (both + a_only) * (b_only + neither)
    phi = (both * neither - b_only * a_only) / math.sqrt(den) if den > 0 else 0.0
    d = pb - pa
    lo = math.sqrt(max((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0.0))
    hi = math.sqrt(max((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2, 0.0))
    return max(-1.0, d - lo), min(1.0, d + hi)


def newcombe_unpaired(
    p1: float, n1: int, p2: float, n2: int, level: float = LEVEL
) -> tuple[float, float]:
    """Newcombe's hybrid-score interval of p1 - p2 for independent samples (method 10)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan
    l1, u1 = wilson(p1 * n1, n1, level)
    l2, u2 = wilson(p2 * n2, n2, level)
    d = p1 - p2
    return (
        max(-1.0, d - math.hypot(p1 - l1, u2 - p2)),
        min(1.0, d + math.hypot(u1 - p1, p2 - l2)),
    )


def _binary(xs: Sequence[float]) -> bool:
    return all(x in (0, 1) for x in xs)


def mcnemar(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Paired:
    """Paired 0/1 outcomes of conditions A and B on the same items (same order)."""
    return stratified_paired([(a, b)], level=level)


def stratified_paired(
    strata: Sequence[tuple[Sequence[float], Sequence[float]]],
    level: float = LEVEL,
    resamples: int = 20000,
    seed: int = 0,
) -> Paired:
    """Paired test of B vs A over strata (one (a, b) pair of equal-length lists per seed).

    0/1 outcomes: exact (pooled discordant pairs, Binomial(., 1/2)), Newcombe interval on the
    pooled 2x2 table. Outcomes in [0, 1] (e.g. averaged samples): seeded Monte Carlo
    sign-flip p and a normal interval of the mean paired difference."""
    pairs: list[tuple[float, float]] = []
    for a, b in strata:
        if len(a) != len(b):
            raise ValueError(f"paired outcomes differ in length ({len(a)} vs {len(b)})")
        pairs += [(float(x), float(y)) for x, y in zip(a, b, strict=True)]
    n = len(pairs)
    if n == 0:
        raise ValueError("no paired outcomes")
    a_rate = sum(x for x, _ in pairs) / n
    b_rate = sum(y for _, y in pairs) / n
    diffs = [y - x for x, y in pairs]
    if _binary([v for p in pairs for v in p]):
        both = sum(1 for x, y in pairs if x and y)
        b_only = sum(1 for x, y in pairs if y and not x)
        a_only = sum(1 for x, y in pairs if x and not y)
        lo, hi = newcombe_paired(both, b_only, a_only, n - both - b_only - a_only, level)
        test = "exact McNemar" if len(strata) == 1 else "exact stratified sign-flip (McNemar)"
        p = binom_two_sided(b_only, b_only + a_only)
        return Paired(n, a_rate, b_rate, b_rate - a_rate, lo, hi, p, b_only, a_only,
                      len(strata), test)  # fmt: skip
    nz = [d for d in diffs if d != 0]
    obs = abs(sum(nz))
    rng = random.Random(seed)
    hits = sum(
        abs(sum(d if rng.random() < 0.5 else -d for d in nz)) >= obs - 1e-12
        for _ in range(resamples)
    )
    p = (hits + 1) / (resamples + 1)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else math.nan
    half = _z(level) * sd / math.sqrt(n)
    return Paired(n, a_rate, b_rate, mean, max(-1.0, mean - half), min(1.0, mean + half), p,
                  sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), len(strata),
                  "Monte Carlo stratified sign-flip")  # fmt: skip


# ---------------------------------------------------------------- across seeds


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer df (closed form, Abramowitz & Stegun 26.7)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        term, acc = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):  # 1 + 2/3 c2 + (2*4)/(3*5) c2^2 ...
            term *= c2 * (2 * k) / (2 * k + 1)
            acc += term
        inside = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * acc)
    else:
        term, acc = 1.0, 1.0
        for k in range(1, df // 2):  # 1 + 1/2 c2 + (1*3)/(2*4) c2^2 ...
            term *= c2 * (2 * k - 1) / (2 * k)
            acc += term
        inside = math.sin(theta) * acc
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(q: float, df: int) -> float:
    """Inverse of `t_cdf` by bisection (60 halvings: far below any printed digit)."""
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Summary:
    """Mean of per-seed values with its Student-t interval (nan interval for one seed)."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    sd: float


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Summary:
    """Mean and t-interval across seeds: the spread of whole runs (worlds, seeds)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0, math.nan)
    m = sum(xs) / n
    if n == 1:
        return Summary(m, math.nan, math.nan, 1, math.nan)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Summary(m, m - half, m + half, n, sd)


# ---------------------------------------------------------------- verdicts


def verdict(ci_low: float, ci_high: float, direction: int = 1, margin: float = 0.0) -> str:
    """Claim "effect > margin" (direction +1), "effect < margin" (-1) or "|effect| < margin"
    (0, "similar"; margin > 0).

    Supported when the whole interval lies on the claimed side of the margin (for 0: inside
    (-margin, margin)), contradicted when it lies wholly on the other side (for 0: wholly
    outside), inconclusive when it straddles it or is unknown (nan: one seed, no interval)."""
    if direction not in (1, 0, -1):
        raise ValueError("direction must be +1, 0 or -1")
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return INCONCLUSIVE
    if direction == 0:
        if margin <= 0:
            raise ValueError("a 'similar' claim (direction 0) needs a margin > 0")
        if -margin < ci_low and ci_high < margin:
            return SUPPORTED
        if ci_low > margin or ci_high < -margin:
            return CONTRADICTED
        return INCONCLUSIVE
    lo, hi = (ci_low - margin, ci_high - margin)
    if direction == -1:
        lo, hi = -hi, -lo
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def fmt_ci(value: float, low: float, high: float, scale: float = 100.0, digits: int = 1) -> str:
    """`23.4 [14.8, 35.0]` (scale 100: fractions as percentages); `-` when value is unknown."""
    if value is None or not math.isfinite(value):
        return "-"
    v = f"{value * scale:.{digits}f}"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return v
    return f"{v} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
