"""`python -m ssah.bench [area ...]`: run the benchmarks (all by default) and print a summary."""

from __future__ import annotations

import importlib
import json
import sys

AREAS = ("scoring", "freeze", "generation")


def main(argv: list[str] | None = None) -> None:
    areas = (argv if argv is not None else sys.argv[1:]) or list(AREAS)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        print(f"error: unknown benchmark {unknown}; choose from {AREAS}.", file=sys.stderr)
        sys.exit(2)
    for area in areas:
        module = importlib.import_module(f"ssah.bench.{area}")
        result = module.main([]) if area == "freeze" else module.main()
        print(f"== {area}\n{json.dumps(result, indent=1, default=str)[:2000]}", flush=True)


if __name__ == "__main__":
    main()
