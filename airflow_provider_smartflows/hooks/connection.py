"""The ``smartflows`` connection: its default id and settings."""

from __future__ import annotations

DEFAULT_CONN_ID = "smartflows_default"
