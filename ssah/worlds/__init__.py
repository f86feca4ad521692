"""Worlds: recipes that build cached, content-keyed local checkpoints and data files.

A world is built explicitly at the stage door (`ssah.worlds.ensure.ensure_worlds`), by the
sweep callback before jobs start, or by the demo; never by a config resolver or a loader.
"""
