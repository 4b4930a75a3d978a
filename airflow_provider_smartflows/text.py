"""Text for people: one bounded line, for log lines, event messages and error excerpts."""

from __future__ import annotations

__all__ = ["MAX_LINE", "one_line"]

#: The default bound of :func:`one_line` (an event's message).
MAX_LINE = 500


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
