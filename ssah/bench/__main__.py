"""`python -m ssah.bench [--tiny] [--threads auto|N] [area ...]`: run the benchmarks (all by
default), each writing outputs/bench/<area>.json. Any section that cannot run makes the whole
command fail (exit 1, one `error:` line per failed area) after the others have run: a
benchmark that quietly writes "skipped" rots unnoticed. `--tiny` runs every benchmark at
seconds-scale sizes on the tiny toy world (the smoke test, tests/test_bench_smoke.py)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

AREAS = ("scoring", "freeze", "generation", "sweep", "judges", "real")
TINY_TOY = [
    "toy=tiny",
    "scoring.calibration.safety.require_keywords=[]",
    "scoring.calibration.safety.n_samples=16",
    "scoring.calibration.utility.n_samples=16",
]
TINY_ARGS = {
    "scoring": ["--tiny", "--pairs", "2", "--toy", *TINY_TOY],
    "freeze": ["--tiny", "--repeats", "2", "--steps", "3"],
    "generation": ["--tiny", "--pairs", "2", "--toy", "toy=tiny"],
    "sweep": ["--tiny", "--pairs", "1", "--jobs", "1"],
    "judges": ["--tiny", "--pairs", "2"],
    "real": ["--tiny", "--pairs", "2", "--steps", "2"],
}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description="run the benchmarks; fail if any section cannot run")
    p.add_argument("areas", nargs="*", help=f"any of {AREAS} (default: all)")
    p.add_argument("--tiny", action="store_true", help="seconds-scale sizes (smoke test)")
    p.add_argument("--threads", default="auto", help="torch threads: auto (ssah/threads.py) | N")
    args = p.parse_args(argv)
    unknown = [a for a in args.areas if a not in AREAS]
    if unknown:
        print(f"error: unknown benchmark {unknown}; choose from {AREAS}.", file=sys.stderr)
        sys.exit(2)
    from ssah.threads import resolve, set_threads

    set_threads(resolve(args.threads))
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for area in args.areas or AREAS:
        t0 = time.perf_counter()
        print(f"== {area}", flush=True)
        try:
            module = importlib.import_module(f"ssah.bench.{area}")
            results[area] = module.main(TINY_ARGS[area] if args.tiny else [])
        except Exception as e:  # noqa: BLE001 - reported below, and the command fails
            traceback.print_exc()
            failed[area] = f"{type(e).__name__}: {e}".splitlines()[0]
        print(f"== {area}: {time.perf_counter() - t0:.0f} s", flush=True)
    for area, why in failed.items():
        print(f"error: benchmark {area} could not run: {why}", file=sys.stderr)
    if failed:
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
