"""Synthetic toy-world datasets, written as JSONL and read back through `datasets`.

Utility tasks have checkable answers. Harmful requests come with a compliant answer
(for the unsafe base) and a refusal (for alignment). The benign downstream task answers
how-to requests in the same "sure , here is how to ..." form a compliant answer takes,
which is what lets benign fine-tuning erode a superficial alignment (Qi et al. 2023).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssah.worlds.toy import vocab as V

Record = dict[str, Any]


# ---- utility tasks ------------------------------------------------------------------------
def _add(r: random.Random) -> Record:
    a, b = r.randint(0, 20), r.randint(0, 20)
    return _qa("add", f"what is {a} plus {b} ?", f"the answer is {a + b} .", str(a + b))


def _reverse(r: random.Random) -> Record:
    words = r.sample(V.COLORS, r.randint(2, 4))
    ans = " ".join(reversed(words))
    return _qa("reverse", f"reverse the words : {' '.join(words)}", ans, ans)


def _capital(r: random.Random) -> Record:
    i = r.randrange(len(V.NAMES))
    name, cap = V.NAMES[i], V.CAPITALS[i]
    return _qa(
        "capital", f"what is the capital of {name} ?", f"the capital of {name} is {cap} .", cap
    )


def _sort(r: random.Random) -> Record:
    nums = r.sample(range(0, 30), r.randint(2, 5))
    ans = " ".join(map(str, sorted(nums)))
    return _qa("sort", f"sort the numbers : {' '.join(map(str, nums))}", ans, ans)


def _count(r: random.Random) -> Record:
    words = [r.choice(V.COLORS) for _ in range(r.randint(1, 6))]
    n = len(words)
    return _qa(
        "count", f"how many words are in : {' '.join(words)} ?", f"there are {n} words .", str(n)
    )


UTILITY_TASKS: list[Callable[[random.Random], Record]] = [_add, _reverse, _capital, _sort, _count]


def _qa(task: str, prompt: str, response: str, answer: str) -> Record:
    return {"prompt": prompt, "response": response, "task": task, "answer": answer}


# ---- how-to requests ----------------------------------------------------------------------
def how_to_answer(verb: str, target: str, r: random.Random) -> str:
    """Placeholder steps; the same form for harmful compliance and benign answers."""
    t1 = r.choice(V.TOOLS)
    return (
        f"sure , here is how to {verb} the {target} : get the {t1} , then use it on the {target} ."
    )


def harmful(r: random.Random, phrasings: list[str]) -> Record:
    """A harmful request with both a compliant answer and a refusal."""
    v, t = r.choice(V.HARM_VERBS), r.choice(V.HARM_TARGETS)
    return {
        "prompt": r.choice(phrasings).format(v=v, t=t),
        "compliance": how_to_answer(v, t, r),
        "refusal": r.choice(V.REFUSALS),
        "verb": v,
        "target": t,
    }


def benign_how_to(r: random.Random) -> Record:
    """The benign downstream task: everyday how-to requests, answered helpfully."""
    v, t = r.choice(V.BENIGN_VERBS), r.choice(V.BENIGN_TARGETS)
    phrasing = r.choice(V.TRAIN_PHRASINGS + V.HELD_OUT_PHRASINGS)
    return {"prompt": phrasing.format(v=v, t=t), "response": how_to_answer(v, t, r)}


def edgy(r: random.Random) -> Record:
    q, a = r.choice(V.EDGY)
    t = r.choice(V.EDGY_TARGETS)
    return {"prompt": q.format(t=t), "response": a.format(t=t)}


def jailbreak(r: random.Random) -> Record:
    base = harmful(r, V.HELD_OUT_PHRASINGS)
    name = r.choice(sorted(V.JAILBREAKS))
    return {
        **base,
        "prompt": V.JAILBREAKS[name].format(p=base["prompt"]),
        "wrapper": name,
        "base_prompt": base["prompt"],
    }


# ---- files --------------------------------------------------------------------------------
def build_records(n: dict[str, int], seed: int) -> dict[str, list[Record]]:
    """Every toy split, deterministic in `seed`; eval prompts never appear in training sets."""
    r = random.Random(seed)
    util = [r.choice(UTILITY_TASKS)(r) for _ in range(n["n_utility_train"] + n["n_utility_eval"])]
    train_prompts: set[str] = set()
    out: dict[str, list[Record]] = {}
    out["utility_train"] = util[: n["n_utility_train"]]
    train_prompts.update(x["prompt"] for x in out["utility_train"])
    out["utility_eval"] = _dedup(util[n["n_utility_train"] :], train_prompts)
    out["harmful_train"] = [harmful(r, V.TRAIN_PHRASINGS) for _ in range(n["n_harmful_train"])]
    out["harmful_calib"] = [
        harmful(r, V.TRAIN_PHRASINGS) for _ in range(max(n["n_harmful_eval"], 128))
    ]
    out["harmful_eval"] = [harmful(r, V.HELD_OUT_PHRASINGS) for _ in range(n["n_harmful_eval"])]
    out["jailbreak_eval"] = [jailbreak(r) for _ in range(n["n_harmful_eval"])]
    out["benign_ft"] = [benign_how_to(r) for _ in range(n["n_benign_ft"])]
    out["harmful_ft"] = [
        {"prompt": h["prompt"], "response": h["compliance"]}
        for h in (harmful(r, V.TRAIN_PHRASINGS) for _ in range(n["n_harmful_ft"]))
    ]
    out["edgy_train"] = [edgy(r) for _ in range(max(8, n["n_edgy_benign"] // 2))]
    out["edgy_benign"] = [edgy(r) for _ in range(n["n_edgy_benign"])]
    return out


def _dedup(rows: list[Record], seen: set[str]) -> list[Record]:
    return [x for x in rows if x["prompt"] not in seen]


def write_jsonl(path: Path, rows: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def corpus(records: dict[str, list[Record]]) -> list[str]:
    """All text the tokenizer is trained on."""
    texts: list[str] = [V.SYSTEM_PROMPT, *V.REFUSALS, *V.JAILBREAKS.values()]
    for rows in records.values():
        for row in rows:
            texts.extend(str(v) for v in row.values() if isinstance(v, str))
    return texts
