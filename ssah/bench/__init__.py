"""Benchmarks (`make bench`): each module's main() measures side by side in one run and writes
outputs/bench/<area>.json with the machine and date."""
