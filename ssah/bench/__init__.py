"""Benchmarks (`make bench`): each measures its two sides in alternating pairs in one run
(ssah.bench.common.paired) and writes outputs/bench/<area>.json with the median ratio, its
spread, the machine, its load average, the thread count and the date; see ssah/bench/README.md."""
