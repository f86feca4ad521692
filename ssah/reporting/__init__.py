"""Reporting: collect runs (local dirs, W&B groups), aggregate seeds, tables, claims, plots.

Layering: collect -> aggregate -> tables / claims / plots; wandb_groups only writes run dirs
that collect reads. Stages (ssah.report, ssah.plan) put these together.
"""
