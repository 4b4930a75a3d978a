"""The start routes' input data: none, Dynamics/Sugar plugin JSON, or XML (validated)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.emulator.common import BODY_BYTES, ApiError

if TYPE_CHECKING:
    from aiohttp import web

EXPECTS = {
    "none": "no input data (an empty body)",
    "dynamics": "Dynamics/Sugar JSON input (Content-Type: application/json)",
    "xml": "XML input (Content-Type: application/xml)",
}
_XML_DECL_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _validate_dynamics(raw: bytes) -> tuple[dict[str, Any], list[str]]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Dynamics input is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(
            400, "Dynamics input must be a JSON object with id, entity, userId, organizationUniqueName"
        )
    ids = data.get("id")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ApiError(400, "Dynamics input field 'id' must be a non-empty list of record id strings")
    if not isinstance(data.get("entity"), str) or not data["entity"]:
        raise ApiError(400, "Dynamics input field 'entity' must be a non-empty string")
    for name in ("userId", "organizationUniqueName"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ApiError(400, f"Dynamics input field '{name}' must be a string")
    summary = [f"  entity: {data['entity']}", f"  records: {', '.join(ids)}"]
    summary += [f"  {n}: {data[n]}" for n in ("userId", "organizationUniqueName") if data.get(n)]
    return data, summary


def _validate_xml(raw: bytes) -> tuple[str, list[str]]:
    # Like defusedxml: no DTDs at all, so no entity expansion bombs or external entities.
    if _XML_DECL_RE.search(raw):
        raise ApiError(400, "XML input must not contain DOCTYPE or ENTITY declarations")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ApiError(400, f"XML input is not well-formed: {exc}") from exc
    summary = [f"  <{root.tag}>"]
    for elem in root.iter():
        text = (elem.text or "").strip()
        if text and elem is not root:
            summary.append(f"  {elem.tag}: {text}")
        if len(summary) > 30:
            break
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text, summary


async def read_start_input(request: web.Request) -> tuple[str, Any, list[str]]:
    """(input kind, input data as ``state.inputData`` shows it, lines for the PDF)."""
    raw = await request.read()
    request[BODY_BYTES] = len(raw)
    if not raw.strip():
        return "none", None, ["  (none)"]
    ctype = request.content_type.lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        data, summary = _validate_dynamics(raw)
        return "dynamics", data, summary
    if ctype in ("application/xml", "text/xml") or ctype.endswith("+xml"):
        text, summary = _validate_xml(raw)
        return "xml", text, summary
    raise ApiError(
        415, f"Unsupported Content-Type {ctype!r}: send application/json, application/xml or no body"
    )
