"""User-facing errors: one clear line naming the cause and the fix, then a non-zero exit."""

from __future__ import annotations


class SsahError(Exception):
    """Bad input or configuration. Stages print `error: <message>` and exit with code 2."""
