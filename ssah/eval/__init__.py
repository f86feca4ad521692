"""Evaluation: generation, attack suites, judges, utility metrics (see suite.run_suite)."""
