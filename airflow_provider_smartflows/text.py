"""Text for people: one bounded line (log lines, event messages, error excerpts), the first text field
of an answer, and a connection test's message shown where Airflow hides it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["MAX_LINE", "first_text", "one_line", "show_test_message"]

#: The default bound of :func:`one_line` (an event's message).
MAX_LINE = 500


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def show_test_message(message: str) -> None:
    """Show a successful test's message where Airflow does not: the UI shows the returned message,
    but ``airflow connections test`` prints only "Connection success!" and disables logging while it
    runs (unless ``--verbose``): then the message is printed, otherwise logged at INFO."""
    if logging.root.manager.disable >= logging.CRITICAL:
        print(message)
    else:
        logging.getLogger(__name__).info("%s", message)


def first_text(data: object, *keys: str) -> str | None:
    """The first of ``keys`` in the mapping ``data`` with a non-empty text or number value."""
    if not isinstance(data, Mapping):
        return None
    for key in keys:
        value = data.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None
