"""Flows by name: which flow a ``flow_name`` means. Pure rules; the hook hands in its calls."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import (
    SmartFlowsFlowNameError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: XCom key of the flow a ``flow_name`` resolved to, ``{"flow_id", "flow_name"}``: a resumed task
#: (after a deferral) reads it instead of resolving again.
FLOW_XCOM_KEY = "smartflows_flow"
#: Closest names listed by an error about a name that matches no flow.
CLOSEST_NAMES = 5


def check_flow_choice(flow_id: object, flow_name: object, where: str) -> None:
    """Refuse ``flow_id`` and ``flow_name`` together (presence only: templates render at run time)."""
    if flow_id not in (None, "") and flow_name not in (None, ""):
        raise SmartFlowsInputError(
            f"{where}: pass flow_id or flow_name, not both (got flow_id={flow_id!r}, flow_name={flow_name!r})."
        )


def _id_and_name(flow: Any, name: str) -> tuple[str, str]:
    if not isinstance(flow, dict) or not isinstance(flow.get("id"), str) or not flow["id"]:
        raise SmartFlowsFlowNameError(f"The flow named {name!r} came back without an id: {flow!r:.200}.")
    display = flow.get("displayName")
    return flow["id"], display if isinstance(display, str) and display else name


def match_flow_name(name: str, flows: Sequence[Any]) -> tuple[str, str]:
    """The ``(id, displayName)`` of the one flow of ``flows`` named ``name``: exact first, then
    case-insensitive. None or several raise :class:`SmartFlowsFlowNameError` with the closest names."""
    named = [f for f in flows if isinstance(f, dict) and isinstance(f.get("displayName"), str)]
    for same in (lambda d: d == name, lambda d: d.casefold() == name.casefold()):
        found = [f for f in named if same(f["displayName"])]
        if len(found) == 1:
            return _id_and_name(found[0], name)
        if len(found) > 1:
            ids = ", ".join(f"{f.get('id')!r}" for f in found)
            raise SmartFlowsFlowNameError(
                f"Several flows are named {name!r} (ids {ids}): pass flow_id= to say which one to run."
            )
    names = sorted({f["displayName"] for f in named})
    closest = difflib.get_close_matches(name, names, n=CLOSEST_NAMES, cutoff=0.4)
    hint = f" Closest names: {', '.join(map(repr, closest))}." if closest else ""
    raise SmartFlowsFlowNameError(
        f"No flow is named {name!r} among the {len(names)} flows this API key may see.{hint} "
        "Check the name in the Smart Flows UI (or pass flow_id=)."
    )


def resolve_flow_name(
    name: str, get_flow: Callable[[str], Any], list_flows: Callable[[], Sequence[Any]]
) -> tuple[str, str]:
    """``(id, displayName)`` of the flow ``name`` means: ``GET /flows/{name}`` (the server takes an id
    or a path), else the flow list matched on ``displayName``."""
    if not isinstance(name, str) or not name.strip():
        raise SmartFlowsInputError(f"flow_name must be a non-empty string, not {name!r}.")
    try:
        return _id_and_name(get_flow(name), name)
    except (SmartFlowsNotFoundError, SmartFlowsInputError):
        # Not an id or path this server knows (or not one the URL can carry): look among the names.
        return match_flow_name(name, list_flows())
