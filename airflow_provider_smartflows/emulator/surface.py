"""What this server offers beyond its behaviour: its API description, the routes it lacks and
its page limit, so that a client can be tested against servers that differ from the emulator.

- ``description``: where the description is served: ``"v3"`` (OpenAPI 3 at ``/v3/api-docs``,
  the default), ``"v2"`` (Swagger 2.0 at ``/v2/api-docs``, as springfox serves it) or ``"none"``
  (neither, and no Swagger UI).
- ``dropped``: routes the server lacks, as ``"METHOD /path"`` with the path as the description
  names it (``"DELETE /api/v1/flows/executions/{exec_id}/progress"``): they answer 405 when the
  path has other methods, else 404, and the description leaves them out.
- ``page_cap``: the most items a list page holds, whatever ``size`` asks (None: ``size``).

The description is generated from the app's route table (:mod:`.description`): a handler names
its query parameters with :func:`takes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

DESCRIPTIONS = ("v3", "v2", "none")
_ROUTE = re.compile(r"^(GET|POST|PUT|DELETE|PATCH) (/\S*)$")


@dataclass(frozen=True)
class ApiSurface:
    description: str = "v3"
    dropped: frozenset[str] = field(default_factory=frozenset)
    page_cap: int | None = None

    @classmethod
    def parse(cls, raw: object, known: set[str] | None = None) -> ApiSurface:
        """From JSON ``{"description", "drop_routes", "page_cap"}``; raises ValueError if malformed.

        :param known: the server's routes (``"METHOD /path"``): a dropped route must be one.
        """
        if not isinstance(raw, dict) or set(raw) - {"description", "drop_routes", "page_cap"}:
            raise ValueError('expected an object with "description", "drop_routes" and/or "page_cap"')
        description = raw.get("description", "v3")
        if description not in DESCRIPTIONS:
            raise ValueError(f'"description" must be one of {", ".join(DESCRIPTIONS)}, not {description!r}')
        dropped = raw.get("drop_routes", [])
        if not isinstance(dropped, list) or not all(isinstance(r, str) and _ROUTE.match(r) for r in dropped):
            raise ValueError('"drop_routes" must be a list of "METHOD /path" strings')
        unknown = sorted(set(dropped) - known) if known is not None else []
        if unknown:
            raise ValueError(f"no such route(s) to drop: {', '.join(unknown)}")
        cap = raw.get("page_cap")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f'"page_cap" must be an integer >= 1 or null, not {cap!r}')
        return cls(description, frozenset(dropped), cap)

    def as_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "drop_routes": sorted(self.dropped),
            "page_cap": self.page_cap,
        }


def takes(*names: str) -> Callable[[F], F]:
    """Name a handler's query parameters, for the API description."""

    def mark(handler: F) -> F:
        handler.query_parameters = names  # type: ignore[attr-defined]
        return handler

    return mark
