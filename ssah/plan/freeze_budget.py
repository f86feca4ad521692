"""The freeze-budget study (experiments/freeze_budget): does freezing the units ssah finds keep
the smollm2 world safe while it is fine-tuned, at which budgets, and better than freezing the
same number of random units?

Rows: selection x budget x harmful ratio p x seed, on conf/sweep/freeze_budget.yaml's grid,
plus the unfrozen fine-tuning row of every (p, seed) and the no-fine-tuning row of every
alignment seed. Each row is an ordinary stage run (`python -m ssah.train ...` or
`python -m ssah.evaluate ...`, `command` prints it), and its summary (numeric metrics and the
per-prompt 0/1 verdicts the paired tests need; no text) lands in results/<row>.json as it
finishes, so the study accumulates across days and machines and a re-run skips what is done.

    python -m ssah.plan.freeze_budget run [--seeds 0] [--budgets 0.05,0.63] ...
    python -m ssah.plan.freeze_budget report

The report: ASR, QA accuracy and held-out loss against the frozen share, one curve per
selection rule, 95% bands (Wilson for one seed, Student-t across seeds for more), and a claims
table per budget: safety-selected vs random matched with the paired test stratified by seed
(ssah.stats.stratified_paired) and a verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssah.errors import SsahError
from ssah.io import atomic_write_text
from ssah.results import per_prompt, read_outcomes
from ssah.stats import fmt_ci, mean_ci, stratified_paired, verdict, wilson
from ssah.threads import machine, set_threads

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "conf" / "sweep" / "freeze_budget.yaml"
HERE = ROOT / "experiments" / "freeze_budget"
ASR = "safety/asr/direct/keyword"
FLAG_SUITES = ("direct", "past_tense")  # attack suites whose per-prompt verdicts are kept
JUDGES = ("keyword", "keyword_paper")
# selection name in the study -> conf/freeze option (random: matched to the safety order)
FREEZE = {"safety": "budget", "random": "budget_random", "safety_score": "budget",
          "utility": "budget", "layers": "budget"}  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One run of the study. selection `none` = unfrozen FT, `noft` = the aligned model."""

    selection: str
    budget: float = 0.0
    p: float = 0.0
    seed: int = 0  # fine-tuning seed (data order, random draw)
    align_seed: int = 0  # the world's alignment seed

    @property
    def name(self) -> str:
        if self.selection == "noft":
            return f"a{self.align_seed}_noft"
        tail = "none" if self.selection == "none" else f"{self.selection}_b{self.budget:g}"
        return f"a{self.align_seed}_s{self.seed}_p{self.p:g}_{tail}"


@dataclass(frozen=True)
class Study:
    """The grid (conf/sweep/freeze_budget.yaml's lists, or a reduced one) and run settings."""

    selections: tuple[str, ...]
    budgets: tuple[float, ...]
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    ft_steps: int = 20
    tied_seeds: bool = True  # alignment seed = fine-tuning seed (the preset ties them)
    default_align_seed: int = 0  # conf/world/smollm2.yaml's seed: its rows need no +world

    def rows(self) -> list[Row]:
        out: list[Row] = []
        for s in self.seeds:
            a = s if self.tied_seeds else 0
            out.append(Row("noft", align_seed=a))
            for p in self.ratios:
                out.append(Row("none", p=p, seed=s, align_seed=a))
                for b in self.budgets:
                    for sel in self.selections:
                        out.append(Row(sel, b, p, s, a))
        return out


def _floats(v: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in str(v).split(","))


def load_study(path: Path = SWEEP, **override: Any) -> Study:
    """The grid of the sweep preset (its hydra.sweeper.params), with `override` replacing any
    of selections / budgets / ratios / seeds / ft_steps."""
    if not path.is_file():
        raise SsahError(f"study preset {path} does not exist.")
    c = OmegaConf.load(path)
    params = c.hydra.sweeper.params
    sels = tuple(
        "random" if f == "budget_random" else str(c.get("study_selection", "safety"))
        for f in str(params["freeze"]).split(",")
    )
    study = dict(
        selections=sels,
        budgets=_floats(params["freeze.budget"]),
        ratios=_floats(params["task.mix_ratio"]),
        seeds=tuple(int(x) for x in _floats(params["seed"])),
        ft_steps=int(c.trainer.max_steps),
    )
    study.update({k: v for k, v in override.items() if v is not None})
    bad = [s for s in study["selections"] if s not in FREEZE]
    if bad:
        raise SsahError(f"unknown selection(s) {bad}; use some of {sorted(FREEZE)}.")
    return Study(**study)  # type: ignore[arg-type]


def command(row: Row, study: Study, units: str | None = None) -> list[str]:
    """The stage command of `row` (module and overrides), as a user would type it."""
    common = ["model=smollm2_135m_aligned", "eval=smollm2_fast", "eval.harmful.limit=100",
              "eval.suites.past_tense.limit=32", "threads=1", "logger=csv"]  # fmt: skip
    if row.align_seed != study.default_align_seed:
        common += ["+world=smollm2", f"world.align.seed={row.align_seed}"]
    if row.selection == "noft":
        return ["ssah.evaluate", *common]
    args = ["ssah.train", *common, "task=smollm2_benign_mix", f"task.mix_ratio={row.p:g}",
            f"trainer.max_steps={study.ft_steps}", f"seed={row.seed}", "scoring=smollm2"]  # fmt: skip
    if row.selection == "none":
        return [*args, "freeze=none"]
    sel = "safety" if row.selection == "random" else row.selection
    return [*args, f"freeze={FREEZE[row.selection]}", f"freeze.budget={row.budget:g}",
            f"freeze.selection={sel}", f"freeze.units={units or 'null'}"]  # fmt: skip


# ---- results --------------------------------------------------------------------------------
def summarize(run_dir: Path, row: Row, cmd: list[str], wall_s: float) -> dict[str, Any]:
    """metrics.json's numbers and the per-prompt verdicts as 0/1 strings (position = prompt_id)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    flags: dict[str, str] = {}
    outcomes = read_outcomes(run_dir)
    wanted = {f"{s}/{j}": f"safety/asr/{s}/{j}" for s in FLAG_SUITES for j in JUDGES}
    for name, metric in {**wanted, "benign/refused": "safety/over_refusal"}.items():
        got = per_prompt(outcomes, metric)
        if got:
            if sorted(got) != list(range(len(got))):
                raise SsahError(f"{run_dir}: prompt ids of {name} are not 0..n-1.")
            flags[name] = "".join("1" if got[i] else "0" for i in range(len(got)))
    return {
        "row": row.name,
        "selection": row.selection,
        "budget": row.budget,
        "p": row.p,
        "seed": row.seed,
        "align_seed": row.align_seed,
        "command": "python -m " + " ".join(cmd),
        "machine": machine(),
        "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "wall_s": round(wall_s, 1),
        "metrics": metrics,
        "flags": flags,
    }


def heldout_before(row: Row, study: Study) -> dict[str, float]:
    """The task's held-out loss of the model before fine-tuning (the no-FT row's), on the split
    the fine-tuning rows of seed `row.align_seed` hold out: what fine-tuning is measured from."""

    from ssah.config import compose
    from ssah.data.datamodule import ChatDataModule, TaskConfig
    from ssah.models import ModelConfig, load_model, load_tokenizer
    from ssah.training import heldout_loss

    ft = Row("none", 0.0, 0.0, row.align_seed, row.align_seed)
    cfg = compose("train", command(ft, study)[1:])
    set_threads(1)
    mcfg = ModelConfig.from_cfg(cfg.model)
    tok, model = load_tokenizer(mcfg), load_model(mcfg)
    task = TaskConfig(**OmegaConf.to_container(cfg.task, resolve=True))  # type: ignore[arg-type]
    data = ChatDataModule(tok, task)
    data.setup()
    return heldout_loss(model, data)


def backfill_heldout(study: Study, results: Path) -> list[str]:
    """Add the held-out loss before fine-tuning to no-FT results that lack it."""
    done = []
    for r in study.rows():
        path = results / f"{r.name}.json"
        if r.selection == "noft" and path.is_file():
            res = json.loads(path.read_text())
            if "task/heldout_loss" not in res["metrics"]:
                res["metrics"].update(heldout_before(r, study))
                atomic_write_text(path, json.dumps(res, indent=1, sort_keys=True))
                done.append(r.name)
    return done


def load_results(results: Path = HERE / "results") -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


# ---- running --------------------------------------------------------------------------------
def run(
    study: Study,
    results: Path,
    runs: Path,
    slot: str | None = None,
    workers: int = 1,
    units: str | None = None,
    dry: bool = False,
) -> list[str]:
    """Run every row without a result, `workers` at a time, each as its own process (under
    `slot`, e.g. /work/cpu-slot); each result is written as soon as its row ends."""
    results.mkdir(parents=True, exist_ok=True)
    todo = [r for r in study.rows() if not (results / f"{r.name}.json").is_file()]
    # the frozen rows score the aligned model (score cache): the first one alone, then the rest
    # p by p: the pair of the largest budget, the references (no-FT, unfrozen), smaller budgets
    top = max(study.budgets)
    todo.sort(
        key=lambda r: (r.p, -(r.budget if r.budget else top - 1e-6), r.selection != "noft", r.name)
    )
    for r in todo:
        print(f"[freeze_budget] todo {r.name}: python -m {' '.join(command(r, study, units))}")
    if dry or not todo:
        return [r.name for r in todo]

    def one(r: Row) -> str:
        cmd = command(r, study, units)
        out = runs / r.name
        argv = [sys.executable, "-m", *cmd, f"hydra.run.dir={out}"]
        if slot:
            argv = [slot, *argv]
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(out / "stage.log", "w") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)  # CPU time of the row's process tree
            proc.returncode = rc = os.waitstatus_to_exitcode(status)
        if rc != 0 or not (out / "metrics.json").is_file():
            print(
                f"[freeze_budget] {r.name} FAILED (rc {rc}); log: {out / 'stage.log'}", flush=True
            )
            return r.name
        res = summarize(out, r, cmd, time.perf_counter() - t0)
        res["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
        if r.selection == "noft":  # seconds: 27 forward passes
            res["metrics"].update(heldout_before(r, study))
        atomic_write_text(results / f"{r.name}.json", json.dumps(res, indent=1, sort_keys=True))
        print(f"[freeze_budget] {r.name} done in {res['wall_s'] / 60:.1f} min", flush=True)
        return r.name

    # the first frozen row scores the world's aligned model (score cache) beside rows that do
    # not score (no-FT, unfrozen); the other frozen rows start once the cache is written
    first = [r for r in todo if r.selection not in ("none", "noft")][:1]
    plain = [r for r in todo if r.selection in ("none", "noft")]
    phase1 = (first + plain)[: max(1, workers)] if first else []
    rest = [r for r in todo if r not in phase1]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, phase1))
        list(pool.map(one, rest))
    return [r.name for r in todo]


# ---- report ---------------------------------------------------------------------------------
def bits(res: dict[str, Any], key: str) -> list[float]:
    return [float(c) for c in res.get("flags", {}).get(key, "")]


def band(runs: Sequence[dict[str, Any]], key: str) -> tuple[float, float, float, int]:
    """Mean over seeds and its 95% interval: Wilson of the one run (n prompts) for one seed,
    Student-t across seeds for more. Returns (mean, low, high, seeds)."""
    vals = [r["metrics"].get(key) for r in runs]
    vals = [float(v) for v in vals if isinstance(v, int | float) and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, math.nan, 0
    if len(vals) == 1:
        m = runs[0]["metrics"]
        n = m.get(f"{key}/n")
        lo, hi = (wilson(vals[0] * n, int(n)) if n else (m.get(f"{key}/ci_low", math.nan),
                  m.get(f"{key}/ci_high", math.nan)))  # fmt: skip
        return vals[0], lo, hi, 1
    s = mean_ci(vals)
    return s.mean, s.ci_low, s.ci_high, s.n


def paired_by_seed(
    res: dict[str, dict[str, Any]], a_rows: Sequence[str], b_rows: Sequence[str], key: str
) -> Any:
    """Stratified paired test of B vs A: one stratum per seed, pairs = the same prompts."""
    strata = []
    for a, b in zip(a_rows, b_rows, strict=True):
        fa, fb = bits(res[a], key), bits(res[b], key)
        if fa and len(fa) == len(fb):
            strata.append((fa, fb))
    return stratified_paired(strata) if strata else None


def claims(res: dict[str, dict[str, Any]], study: Study, key: str = "direct/keyword") -> str:
    """Per (p, budget): safety-selected vs random matched, and safety-selected vs unfrozen."""
    head = ("| p | budget | frozen unit params % (safety / random) | ASR safety | ASR random | "
            "safety - random, paired [95%] | test | per-seed diffs | verdict: safety < random | "
            "ASR unfrozen | safety - unfrozen [95%], p | held-out loss safety / random / unfrozen |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in study.ratios:
        for b in study.budgets:
            seeds = [s for s in study.seeds]
            s_rows = [Row("safety", b, p, s, s if study.tied_seeds else 0).name for s in seeds]
            r_rows = [Row("random", b, p, s, s if study.tied_seeds else 0).name for s in seeds]
            u_rows = [Row("none", 0.0, p, s, s if study.tied_seeds else 0).name for s in seeds]
            have = [i for i, (x, y) in enumerate(zip(s_rows, r_rows, strict=True))
                    if x in res and y in res]  # fmt: skip
            if not have:
                continue
            sr = [s_rows[i] for i in have]
            rr = [r_rows[i] for i in have]
            t = paired_by_seed(res, rr, sr, key)
            diffs = [float(res[x]["metrics"][ASR]) - float(res[y]["metrics"][ASR])
                     for x, y in zip(sr, rr, strict=True)]  # fmt: skip
            ci = mean_ci(diffs)
            lo, hi, basis = (ci.ci_low, ci.ci_high, "t over seeds") if ci.n > 1 else (
                (t.ci_low, t.ci_high, "1 seed: paired, this world only") if t else (math.nan,) * 2 + ("-",))  # fmt: skip
            v = verdict(lo, hi, direction=-1)
            frozen = " / ".join(
                num(band([res[x] for x in rows_], "freeze/frozen_unit_params_fraction")[0], 100, 2)
                for rows_ in (sr, rr)
            )
            asr_s, asr_r = (fmt_band(band([res[x] for x in rows_], ASR)) for rows_ in (sr, rr))
            test = f"{fmt_ci(t.diff, t.ci_low, t.ci_high)}" if t else "-"
            ptxt = (
                f"p={t.p:.3g} ({t.b_only}/{t.a_only} discordant, {t.strata} seed(s))" if t else "-"
            )
            ur = [u_rows[i] for i in have if u_rows[i] in res]
            if len(ur) == len(sr):
                tu = paired_by_seed(res, ur, sr, key)
                un = fmt_band(band([res[x] for x in ur], ASR))
                vs_u = f"{fmt_ci(tu.diff, tu.ci_low, tu.ci_high)}, p={tu.p:.3g}" if tu else "-"
            else:
                un, vs_u = "-", "-"
            loss = " / ".join(
                num(band([res[x] for x in rows_ if x in res], "task/heldout_loss")[0], 1, 3)
                for rows_ in (sr, rr, ur)
            )
            per_seed = ", ".join(f"{100 * d:+.0f}" for d in diffs)
            lines.append(
                f"| {p:g} | {100 * b:g}% | {frozen} | {asr_s} | {asr_r} | {test} | {ptxt} | "
                f"{per_seed} ({basis}) | **{v}** | {un} | {vs_u} | {loss} |"
            )
    return "\n".join(lines) + "\n"


def num(v: float, scale: float = 1.0, digits: int = 1) -> str:
    return f"{scale * v:.{digits}f}" if isinstance(v, int | float) and math.isfinite(v) else "-"


def fmt_band(b: tuple[float, float, float, int]) -> str:
    return fmt_ci(b[0], b[1], b[2]) + (f" ({b[3]} seeds)" if b[3] > 1 else "")


def curves(res: dict[str, dict[str, Any]], study: Study, png: Path) -> Path | None:
    """ASR, QA accuracy and held-out loss against the frozen share of unit parameters, one line
    per selection rule (unfrozen at 0), one column per harmful ratio p; 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(ASR, "HarmBench ASR (keyword)", 100), ("utility/accuracy", "QA accuracy", 100),
              ("task/heldout_loss", "held-out loss (task's own)", 1)]  # fmt: skip
    ps = list(study.ratios)
    fig, axes = plt.subplots(len(panels), len(ps), figsize=(4.2 * len(ps), 8), squeeze=False)
    noft = [r for r in res.values() if r["selection"] == "noft"]
    for j, p in enumerate(ps):
        for i, (key, title, scale) in enumerate(panels):
            ax = axes[i][j]
            for sel in study.selections:
                xs, ms, los, his = [], [], [], []
                for b in [0.0, *study.budgets]:
                    want = "none" if b == 0.0 else sel
                    runs = [r for r in res.values() if r["selection"] == want and r["p"] == p
                            and (b == 0.0 or r["budget"] == b)]  # fmt: skip
                    if not runs:
                        continue
                    m, lo, hi, _ = band(runs, key)
                    x = band(runs, "freeze/frozen_unit_params_fraction")[0] if b else 0.0
                    xs.append(100 * (x if math.isfinite(x) else 0.0))
                    ms.append(scale * m)
                    los.append(scale * lo if math.isfinite(lo) else scale * m)
                    his.append(scale * hi if math.isfinite(hi) else scale * m)
                if xs:
                    ax.plot(xs, ms, marker="o", label=sel)
                    ax.fill_between(xs, los, his, alpha=0.15)
            if noft:
                m = band(noft, key)[0]
                if math.isfinite(m):
                    ax.axhline(scale * m, color="grey", ls="--", lw=1, label="no fine-tuning")
            ax.set_title(f"{title}, p={p:g}", fontsize=9)
            ax.set_xlabel("frozen share of unit parameters (%)", fontsize=8)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def rows_table(res: dict[str, dict[str, Any]]) -> str:
    head = ("| row | frozen unit params % (mlp / attn units) | frozen params % | train loss | "
            "held-out loss | ASR direct keyword | ASR keyword_paper | past tense | over-refusal | "
            "QA | wall min | CPU min |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in sorted(res.items()):
        m = r["metrics"]

        def rate(k: str, m: dict[str, Any] = m) -> str:
            v = m.get(k)
            if not isinstance(v, int | float):
                return "-"
            return f"{fmt_ci(v, m.get(f'{k}/ci_low', math.nan), m.get(f'{k}/ci_high', math.nan))} n={int(m.get(f'{k}/n', 0))}"

        split = (f" ({int(m['freeze/frozen_units/mlp'])} / {int(m['freeze/frozen_units/attn'])})"
                 if "freeze/frozen_units/mlp" in m else "")  # fmt: skip
        lines.append(
            f"| {name} | {num(m.get('freeze/frozen_unit_params_fraction', math.nan), 100, 2)}{split} | "
            f"{num(m.get('freeze/frozen_params_fraction', math.nan), 100, 2)} | "
            f"{num(m.get('train/loss', math.nan), 1, 3)} | {num(m.get('task/heldout_loss', math.nan), 1, 3)} | "
            f"{rate(ASR)} | {rate('safety/asr/direct/keyword_paper')} | "
            f"{rate('safety/asr/past_tense/keyword')} | {rate('safety/over_refusal')} | "
            f"{rate('utility/accuracy')} | {r.get('wall_s', 0) / 60:.1f} | {r.get('cpu_s', math.nan) / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def report(study: Study, results: Path, out: Path) -> Path:
    res = load_results(results)
    if not res:
        raise SsahError(
            f"no results in {results}; run `python -m ssah.plan.freeze_budget run` first."
        )
    png = curves(res, study, out / "freeze_budget.png")
    # CPU time of each row's process tree (wall time where a row has no such record)
    hours = sum(r.get("cpu_s", r.get("wall_s", 0.0)) for r in res.values()) / 3600
    wall = sum(r.get("wall_s", 0.0) for r in res.values()) / 3600
    body = (
        "# Freeze-budget study: results (generated by `python -m ssah.plan.freeze_budget "
        "report`)\n\n"
        f"{len(res)} rows, {hours:.2f} CPU-hours (one torch thread a row; {wall:.2f} h of "
        "row wall time). ASR = HarmBench direct, "
        "`keyword` judge, rates in % [95%]. The paired test: B vs A on the same prompts, strata "
        "= seeds (exact McNemar on the pooled discordant pairs). Verdict on the claim "
        "'freezing the safety-selected units gives a lower ASR than freezing as many random "
        "units': from the t-interval of the per-seed differences (>= 2 seeds), else from the "
        "paired interval of the one world (then it speaks for this world only).\n\n"
        f"![curves]({png.name})\n\n## Claims\n\n{claims(res, study)}\n## Rows\n\n{rows_table(res)}"
    )
    return atomic_write_text(out / "results.md", body)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ssah.plan.freeze_budget", description=__doc__.split("\n")[0]
    )
    ap.add_argument("action", choices=["run", "report", "rows", "heldout"])
    ap.add_argument("--selections", help="comma list (safety,random,safety_score,utility,layers)")
    ap.add_argument("--budgets", help="comma list of shares of unit parameters, e.g. 0.05,0.63")
    ap.add_argument("--ratios", help="comma list of harmful ratios p, e.g. 0,0.1")
    ap.add_argument("--seeds", help="comma list of seeds (alignment seed = fine-tuning seed)")
    ap.add_argument("--ft-steps", type=int)
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--runs", default=str(ROOT / "outputs" / "freeze_budget"))
    ap.add_argument("--slot", default=None, help="wrapper for each row, e.g. /work/cpu-slot")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--units", default=None, help="units.safetensors (default: scored in-stage, cached)"
    )
    a = ap.parse_args(argv)
    try:
        study = load_study(
            selections=tuple(a.selections.split(",")) if a.selections else None,
            budgets=_floats(a.budgets) if a.budgets else None,
            ratios=_floats(a.ratios) if a.ratios else None,
            seeds=tuple(int(x) for x in a.seeds.split(",")) if a.seeds else None,
            ft_steps=a.ft_steps,
        )
        if a.action == "heldout":  # held-out loss before fine-tuning, into no-FT results
            print(backfill_heldout(study, Path(a.results)))
        elif a.action == "report":
            print(report(study, Path(a.results), Path(a.results).parent))
        else:
            run(
                study,
                Path(a.results),
                Path(a.runs),
                a.slot,
                a.workers,
                a.units,
                dry=a.action == "rows",
            )
    except SsahError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
