"""Exceptions that are the user's to fix: the CLI prints them as one line instead of a traceback."""

from __future__ import annotations

# Every error raised for bad input (paths, names, configs, data) derives from one of these.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
