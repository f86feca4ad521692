"""Analyses the probe and transfer stages run: the reasoning-direction probe (Figs. 2-4),
direction tracking during generation, and category transition matrices (Figs. 5-6)."""
