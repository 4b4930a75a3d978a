"""Flow definitions: the built-in flows, and loading/validating a scenario file (JSON)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ADMIN_KEY = "sf-emulator-admin-key"
DEFAULT_USER_KEY = "sf-emulator-user-key"
DEFAULT_REVOKED_KEY = "sf-emulator-revoked-key"

INPUT_KINDS = ("none", "dynamics", "xml", "any")
FORM_TYPES = ("boolean", "string", "number", "integer")
KNOWN_STATUSES = (
    "Queued",
    "Running",
    "Waiting",
    "UserInput",
    "Success",
    "Warning",
    "Error",
    "Canceled",
    "SelectFlow",
    "Interrupted",
)
FAULT_KINDS = ("status", "html", "invalid_json", "latency", "reset", "truncate", "unknown_status")


class ScenarioError(ValueError):
    """A scenario (file, flow or fault definition) is malformed; the message names the field."""


@dataclass(frozen=True)
class Step:
    message: str
    percentage: int
    seconds: float
    #: ``"seconds": [low, high]``: each execution's step lasts between the two (spread evenly over
    #: the executions in creation order, reproducibly), ``seconds`` being ``low``.
    seconds_max: float | None = None

    def duration(self, seq: int) -> float:
        """This step's length in the ``seq``-th execution (virtual seconds)."""
        if self.seconds_max is None:
            return self.seconds
        spread = (seq * 0.6180339887498949) % 1.0  # golden-ratio sequence: evenly spread, no RNG
        return self.seconds + (self.seconds_max - self.seconds) * spread


@dataclass(frozen=True)
class DocumentSpec:
    display_name: str
    content_type: str = "application/pdf"
    size: int | None = None


@dataclass(frozen=True)
class FlowSpec:
    id: str
    display_name: str
    input: str = "any"
    description: str = ""
    queued_seconds: float = 0.0
    steps: tuple[Step, ...] = ()
    user_input_after: int | None = None
    user_input_form: dict[str, str] = field(default_factory=dict)
    waiting_after: int | None = None
    #: The callback id the flow's wait names (shared by its executions); None: one per execution.
    waiting_callback: str | None = None
    final_status: str = "Success"
    fail_first: int = 0
    errors: tuple[dict[str, Any], ...] = ()
    warnings: tuple[dict[str, Any], ...] = ()
    documents: tuple[DocumentSpec, ...] = ()
    documents_per_record: bool = False
    # The real server does not always call the property holding a document reference
    # "document"; only its "type" is reliable. Flows vary it so clients must walk the JSON.
    document_property: str = "document"
    #: Named outputs of a finished execution, in the wire shape ``{output: {id, displayName, type}, content}``.
    outputs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ApiKey:
    key: str
    user: str
    role: str
    revoked: bool = False


@dataclass
class Scenario:
    speedup: float | None = None
    seed: int | None = None
    api_keys: list[ApiKey] = field(default_factory=list)
    flows: list[FlowSpec] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)


def default_api_keys() -> list[ApiKey]:
    return [
        ApiKey(DEFAULT_ADMIN_KEY, "admin", "admin"),
        ApiKey(DEFAULT_USER_KEY, "user", "user"),
        ApiKey(DEFAULT_REVOKED_KEY, "revoked", "user", revoked=True),
    ]


# --- validation helpers --------------------------------------------------------------------


def _fail(where: str, what: str, value: Any) -> ScenarioError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ScenarioError(f"{where}: {what}, got {shown}")


def _str(d: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    if key not in d or d[key] is None:
        if default is None:
            raise ScenarioError(f"{where}.{key}: required")
        return default
    value = d[key]
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}.{key}", "expected a non-empty string", value)
    return value


def _num(d: dict[str, Any], key: str, where: str, default: float, minimum: float = 0.0) -> float:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise _fail(f"{where}.{key}", f"expected a number >= {minimum:g}", value)
    return float(value)


def _int(d: dict[str, Any], key: str, where: str, default: int | None, minimum: int = 0) -> int | None:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(f"{where}.{key}", f"expected an integer >= {minimum}", value)
    return value


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "expected an object", value)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, "expected a list", value)
    return value


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(unknown)}")


_FLOW_FIELDS = {
    "id",
    "displayName",
    "description",
    "input",
    "queued_seconds",
    "steps",
    "user_input",
    "waiting",
    "final_status",
    "fail_first",
    "errors",
    "warnings",
    "documents",
    "documents_per_record",
    "document_property",
    "outputs",
}


def _flow_exceptions(raw: Any, where: str) -> tuple[dict[str, Any], ...]:
    out = []
    for i, item in enumerate(_list(raw, where)):
        w = f"{where}[{i}]"
        e = _obj(item, w)
        causes = _list(e.get("causes", []), f"{w}.causes")
        if not all(isinstance(c, str) for c in causes):
            raise _fail(f"{w}.causes", "expected a list of strings", causes)
        out.append(
            {
                "error": _str(e, "error", w),
                "message": _str(e, "message", w),
                "causes": list(causes),
                "stackTrace": e.get("stackTrace"),
            }
        )
    return tuple(out)


def _steps(d: dict[str, Any], where: str) -> list[Step]:
    steps = []
    for i, item in enumerate(_list(d.get("steps", []), f"{where}.steps")):
        w = f"{where}.steps[{i}]"
        s = _obj(item, w)
        _check_keys(s, {"message", "percentage", "seconds"}, w)
        pct = _int(s, "percentage", w, 0)
        assert pct is not None
        if pct > 100:
            raise _fail(f"{w}.percentage", "expected 0..100", pct)
        seconds = s.get("seconds")
        if isinstance(seconds, list):
            low, high = _seconds_range(seconds, f"{w}.seconds")
            steps.append(Step(_str(s, "message", w), pct, low, high))
        else:
            steps.append(Step(_str(s, "message", w), pct, _num(s, "seconds", w, 1.0)))
    return steps


def _seconds_range(value: list[Any], where: str) -> tuple[float, float]:
    """``[low, high]``: two numbers, 0 <= low <= high."""
    numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(value) != 2 or len(numbers) != 2 or not 0 <= numbers[0] <= numbers[1]:
        raise _fail(where, "expected a number >= 0 or a range [low, high] with 0 <= low <= high", value)
    return float(numbers[0]), float(numbers[1])


def _pause(d: dict[str, Any], key: str, steps: int, where: str) -> tuple[int | None, dict[str, Any]]:
    """A ``user_input`` / ``waiting`` block: (the step index it follows or None, the block)."""
    if d.get(key) is None:
        return None, {}
    w = f"{where}.{key}"
    block = _obj(d[key], w)
    after = _int(block, "after_step", w, 0)
    if after is None or after >= steps:
        raise _fail(f"{w}.after_step", f"expected a step index below {steps}", after)
    return after, block


def _form(block: dict[str, Any], where: str) -> dict[str, str]:
    _check_keys(block, {"after_step", "form"}, where)
    raw_form = _obj(block.get("form", {}), f"{where}.form")
    if not raw_form:
        raise ScenarioError(f"{where}.form: needs at least one field")
    for key, kind in raw_form.items():
        if kind not in FORM_TYPES:
            raise _fail(f"{where}.form.{key}", f"expected one of {', '.join(FORM_TYPES)}", kind)
    return dict(raw_form)


def _documents(d: dict[str, Any], where: str) -> tuple[DocumentSpec, ...]:
    docs = []
    for i, item in enumerate(_list(d.get("documents", []), f"{where}.documents")):
        w = f"{where}.documents[{i}]"
        doc = _obj(item, w)
        _check_keys(doc, {"displayName", "contentType", "size"}, w)
        docs.append(
            DocumentSpec(
                display_name=_str(doc, "displayName", w),
                content_type=_str(doc, "contentType", w, "application/pdf"),
                size=_int(doc, "size", w, None),
            )
        )
    return tuple(docs)


def _bool(d: dict[str, Any], key: str, where: str) -> bool:
    value = d.get(key, False)
    if not isinstance(value, bool):
        raise _fail(f"{where}.{key}", "expected true or false", value)
    return value


def _outputs(d: dict[str, Any], where: str) -> tuple[dict[str, Any], ...]:
    """``outputs: [{displayName, id?, type?, content}]`` as the FlowExecution carries them."""
    found = []
    for i, raw in enumerate(_list(d.get("outputs", []), f"{where}.outputs")):
        w = f"{where}.outputs[{i}]"
        out = _obj(raw, w)
        _check_keys(out, {"id", "displayName", "type", "content"}, w)
        name = _str(out, "displayName", w)
        ref = {
            "id": _str(out, "id", w, f"output-{i}"),
            "displayName": name,
            "type": _str(out, "type", w, "string"),
        }
        found.append({"output": ref, "content": out.get("content")})
    return tuple(found)


def parse_flow(raw: Any, where: str = "flow") -> FlowSpec:
    """Validate one flow in the scenario-file format and build its FlowSpec."""
    d = _obj(raw, where)
    _check_keys(d, _FLOW_FIELDS, where)
    flow_id = _str(d, "id", where)
    input_kind = _str(d, "input", where, "any")
    if input_kind not in INPUT_KINDS:
        raise _fail(f"{where}.input", f"expected one of {', '.join(INPUT_KINDS)}", input_kind)
    steps = _steps(d, where)
    ui_after, ui_block = _pause(d, "user_input", len(steps), where)
    form = _form(ui_block, f"{where}.user_input") if ui_after is not None else {}
    wait_after, wait_block = _pause(d, "waiting", len(steps), where)
    callback = None
    if wait_after is not None:
        _check_keys(wait_block, {"after_step", "callback_id"}, f"{where}.waiting")
        if wait_block.get("callback_id") is not None:
            callback = _str(wait_block, "callback_id", f"{where}.waiting")
    fail_first = _int(d, "fail_first", where, 0)
    assert fail_first is not None
    return FlowSpec(
        id=flow_id,
        display_name=_str(d, "displayName", where, flow_id),
        input=input_kind,
        description=d.get("description") or "",
        queued_seconds=_num(d, "queued_seconds", where, 0.0),
        steps=tuple(steps),
        user_input_after=ui_after,
        user_input_form=form,
        waiting_after=wait_after,
        waiting_callback=callback,
        final_status=_str(d, "final_status", where, "Success"),
        fail_first=fail_first,
        errors=_flow_exceptions(d.get("errors", []), f"{where}.errors"),
        warnings=_flow_exceptions(d.get("warnings", []), f"{where}.warnings"),
        documents=_documents(d, where),
        documents_per_record=_bool(d, "documents_per_record", where),
        document_property=_str(d, "document_property", where, "document"),
        outputs=_outputs(d, where),
    )


_FAULT_FIELDS = {
    "kind",
    "method",
    "path",
    "flow_id",
    "status",
    "retry_after",
    "latency",
    "times",
    "probability",
    "after",
    "body",
    "when",
    "delay",
}
# Kinds that replace the answer: they can answer before, after, or instead of a delayed handler.
ANSWERING_KINDS = ("status", "html", "invalid_json", "reset")
WHEN = ("before", "after", "delayed")


def validate_fault(raw: Any, where: str = "fault") -> dict[str, Any]:
    """Check a fault definition (``add_fault``'s keyword arguments plus ``kind``)."""
    d = _obj(raw, where)
    _check_keys(d, _FAULT_FIELDS, where)
    kind = d.get("kind")
    if kind not in FAULT_KINDS:
        raise _fail(f"{where}.kind", f"expected one of {', '.join(FAULT_KINDS)}", kind)
    when = d.get("when", "before")
    if when not in WHEN:
        raise _fail(f"{where}.when", "expected 'before', 'after' or 'delayed'", when)
    if when == "delayed":
        if kind not in ANSWERING_KINDS:
            raise _fail(
                f"{where}.kind", f"with when 'delayed' expected one of {', '.join(ANSWERING_KINDS)}", kind
            )
        if d.get("delay") is None:
            raise ScenarioError(f"{where}.delay: required with when 'delayed' (seconds)")
    elif d.get("delay") is not None:
        raise _fail(f"{where}.delay", "only with when 'delayed'", d["delay"])
    _num(d, "delay", where, 0.0)
    status = _int(d, "status", where, None, minimum=100)
    if status is not None and status > 599:
        raise _fail(f"{where}.status", "expected an HTTP status 100..599", status)
    if kind == "status" and status is None:
        raise ScenarioError(f"{where}.status: required for kind 'status'")
    if kind == "latency" and d.get("latency") is None:
        raise ScenarioError(f"{where}.latency: required for kind 'latency'")
    _num(d, "latency", where, 0.0)
    _int(d, "times", where, None, minimum=1)
    _int(d, "after", where, 0)
    probability = _num(d, "probability", where, 1.0)
    if probability > 1:
        raise _fail(f"{where}.probability", "expected 0..1", probability)
    ra = d.get("retry_after")
    if ra is not None and (isinstance(ra, bool) or not isinstance(ra, (int, float, str))):
        raise _fail(f"{where}.retry_after", "expected seconds or an HTTP date string", ra)
    for key in ("method", "path", "flow_id"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise _fail(f"{where}.{key}", "expected a string", d[key])
    return dict(d)


def parse_scenario(raw: Any) -> Scenario:
    """Validate a scenario (already decoded JSON) and build it; defaults flows are added here."""
    d = _obj(raw, "scenario")
    _check_keys(d, {"speedup", "seed", "api_keys", "replace_default_flows", "flows", "faults"}, "scenario")
    scenario = Scenario()
    if d.get("speedup") is not None:
        scenario.speedup = _num(d, "speedup", "scenario", 1.0)
        if scenario.speedup <= 0:
            raise _fail("scenario.speedup", "expected a number > 0", d["speedup"])
    scenario.seed = _int(d, "seed", "scenario", None)
    if d.get("api_keys") is not None:
        for i, item in enumerate(_list(d["api_keys"], "scenario.api_keys")):
            w = f"scenario.api_keys[{i}]"
            k = _obj(item, w)
            _check_keys(k, {"key", "user", "role", "revoked"}, w)
            role = _str(k, "role", w, "user")
            if role not in ("admin", "user"):
                raise _fail(f"{w}.role", "expected 'admin' or 'user'", role)
            scenario.api_keys.append(
                ApiKey(_str(k, "key", w), _str(k, "user", w), role, bool(k.get("revoked")))
            )
        if not any(k.role == "admin" and not k.revoked for k in scenario.api_keys):
            raise ScenarioError("scenario.api_keys: needs at least one admin key that is not revoked")
    else:
        scenario.api_keys = default_api_keys()
    replace = d.get("replace_default_flows", False)
    if not isinstance(replace, bool):
        raise _fail("scenario.replace_default_flows", "expected true or false", replace)
    flows = {} if replace else {f.id: f for f in builtin_flows()}
    for i, item in enumerate(_list(d.get("flows", []), "scenario.flows")):
        flow = parse_flow(item, f"scenario.flows[{i}]")
        flows[flow.id] = flow
    scenario.flows = list(flows.values())
    scenario.faults = [
        validate_fault(f, f"scenario.faults[{i}]")
        for i, f in enumerate(_list(d.get("faults", []), "scenario.faults"))
    ]
    return scenario


def load_scenario(source: str | Path | dict[str, Any] | None) -> Scenario:
    """A scenario from a file path, an already-decoded dict, or None (built-in defaults)."""
    if source is None:
        return parse_scenario({})
    if isinstance(source, dict):
        return parse_scenario(copy.deepcopy(source))
    path = Path(source)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"scenario file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"scenario file {path}: not valid JSON ({exc})") from exc
    try:
        return parse_scenario(raw)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario file {path}: {exc}") from exc


# --- built-in flows ------------------------------------------------------------------------

_THREE_STEPS = [
    {"message": "Collecting data", "percentage": 10, "seconds": 1.0},
    {"message": "Generating document", "percentage": 50, "seconds": 1.0},
    {"message": "Converting to PDF", "percentage": 90, "seconds": 1.0},
]
_PDF = "application/pdf"
_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

_BUILTIN_FLOWS: list[dict[str, Any]] = [
    {
        "id": "hello",
        "displayName": "Hello",
        "input": "none",
        "steps": _THREE_STEPS,
        "documents": [{"displayName": "Hello"}],
    },
    {
        "id": "invoice",
        "displayName": "Invoice",
        "input": "dynamics",
        "steps": _THREE_STEPS,
        "documents": [{"displayName": "Invoice {record}"}],
        "documents_per_record": True,
    },
    {
        "id": "xml-letter",
        "displayName": "XML letter",
        "input": "xml",
        "steps": _THREE_STEPS,
        "documents": [{"displayName": "Letter"}, {"displayName": "Letter", "contentType": _DOCX}],
        "document_property": "file",
    },
    {
        "id": "warning",
        "displayName": "Warning",
        "steps": _THREE_STEPS,
        "final_status": "Warning",
        "warnings": [
            {
                "error": "DeliveryWarning",
                "message": "E-mail could not be sent",
                "causes": ["SMTP server unreachable"],
            }
        ],
        "documents": [{"displayName": "Warning"}],
    },
    {
        "id": "error",
        "displayName": "Error",
        "steps": _THREE_STEPS[:2],
        "final_status": "Error",
        "errors": [
            {
                "error": "TemplateError",
                "message": "Field CustomerName missing in data set",
                "causes": ["XPath /root/customer/name returned nothing"],
            }
        ],
    },
    {
        "id": "interrupted",
        "displayName": "Interrupted",
        "steps": _THREE_STEPS[:2],
        "final_status": "Interrupted",
    },
    {
        "id": "approval",
        "displayName": "Approval",
        "steps": _THREE_STEPS,
        "user_input": {"after_step": 0, "form": {"approved": "boolean", "comment": "string"}},
        "documents": [{"displayName": "Approval"}],
        "outputs": [{"id": "decision", "displayName": "Decision", "content": "approved"}],
    },
    {
        "id": "signature",
        "displayName": "Signature",
        "steps": _THREE_STEPS,
        "waiting": {"after_step": 0},
        "documents": [{"displayName": "Signed contract"}],
    },
    {
        "id": "queued",
        "displayName": "Queued",
        "queued_seconds": 2.0,
        "steps": _THREE_STEPS,
        "documents": [{"displayName": "Hello"}],
    },
    {
        "id": "slow",
        "displayName": "Slow",
        "steps": [
            {"message": f"Step {i + 1} of 10", "percentage": (i + 1) * 9, "seconds": 2.0} for i in range(10)
        ],
        "documents": [{"displayName": "Slow"}],
    },
    {
        "id": "flaky",
        "displayName": "Flaky",
        "steps": _THREE_STEPS,
        "fail_first": 1,
        "documents": [{"displayName": "Flaky"}],
    },
    {
        "id": "multi-docs",
        "displayName": "Multiple documents",
        "steps": _THREE_STEPS,
        "documents": [
            {"displayName": "Report"},
            {"displayName": "Report"},
            {"displayName": "Report", "contentType": _DOCX},
        ],
        "document_property": "file",
    },
    {"id": "archived", "displayName": "Archived", "steps": _THREE_STEPS, "final_status": "Archived"},
]


def builtin_flows() -> list[FlowSpec]:
    return [parse_flow(f, f"builtin {f['id']}") for f in _BUILTIN_FLOWS]
