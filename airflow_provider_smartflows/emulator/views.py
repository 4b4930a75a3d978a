"""The JSON shapes of an execution: FlowExecutionProgress, FlowExecution, the admin summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.emulator.state import block_id, iso

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator.state import EmulatorState, Execution, Snapshot


def _flow_ref(ex: Execution) -> dict[str, Any] | None:
    if ex.flow is None:
        return None
    return {"id": ex.flow.id, "displayName": ex.flow.display_name, "type": "flow"}


def output_model(ex: Execution) -> dict[str, Any]:
    """Document references nested under block-id keys, as the real server does."""
    model: dict[str, Any] = {}
    if not ex.documents or ex.flow is None:
        return model
    prop = ex.flow.document_property
    for doc in ex.documents:
        block = model.setdefault(doc.block, {})
        if ex.flow.documents_per_record:
            block.setdefault(prop + "s", []).append(doc.ref())
        elif prop in block:
            # A second document of the same block: the real server then uses a list.
            existing = block[prop]
            block[prop] = [*(existing if isinstance(existing, list) else [existing]), doc.ref()]
        else:
            block[prop] = doc.ref()
    return model


def _form(state: EmulatorState, ex: Execution) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(schema, model, form) of the progress: the pending form, or the output once final."""
    snap = state.status(ex)
    if snap.status == "UserInput" and ex.flow is not None:
        form = ex.flow.user_input_form
        schema = {
            "type": "object",
            "properties": {k: {"type": t, "title": k.capitalize()} for k, t in form.items()},
            "required": list(form),
        }
        items = [{"key": k, "type": "checkbox" if t == "boolean" else "text"} for k, t in form.items()]
        return schema, {}, [{"type": "section", "items": items}]
    if snap.status == "SelectFlow":
        schema = {
            "type": "object",
            "properties": {"flowId": {"type": "string", "title": "Flow", "enum": sorted(state.flows)}},
            "required": ["flowId"],
        }
        return schema, {}, [{"type": "section", "items": [{"key": "flowId", "type": "select"}]}]
    if ex.documents:
        model = output_model(ex)
        props = {b: {"type": "object", "title": "Output", "properties": {}} for b in model}
        return {"type": "object", "properties": props}, model, [{"type": "section", "items": []}]
    return {}, {}, []


def progress_json(state: EmulatorState, ex: Execution) -> dict[str, Any]:
    snap = state.status(ex)
    schema, model, form = _form(state, ex)
    return {
        "id": ex.id,
        "percentage": snap.percentage,
        "currentData": _flow_ref(ex),
        "message": snap.message,
        "status": snap.status,
        "schema": schema,
        "model": model,
        "form": form,
    }


def _flow_exception(error: str, message: str) -> dict[str, Any]:
    return {"error": error, "message": message, "causes": [], "stackTrace": None}


def _errors_and_warnings(ex: Execution, snap: Snapshot) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``state.errors`` and ``state.warnings``: FlowExceptions of a failed / warned run."""
    if ex.flow is None or ex.canceled is not None:
        return [], []
    if snap.status == "Error":
        if ex.fails or not ex.flow.errors:
            return [_flow_exception("FlowExecutionError", snap.message)], []
        return [dict(e) for e in ex.flow.errors], []
    if snap.status == "Interrupted":
        return [_flow_exception("InterruptedException", snap.message)], []
    if snap.status == "Warning":
        return [], [dict(w) for w in ex.flow.warnings]
    return [], []


def _output(state: EmulatorState, ex: Execution) -> dict[str, Any]:
    """``state.output``: the final form plus one part per output block."""
    schema, model, form = _form(state, ex)
    parts = [
        {
            "id": block,
            "displayName": "Output",
            "schema": {"type": "object"},
            "model": {block: value},
            "form": [],
        }
        for block, value in (output_model(ex).items() if ex.documents else ())
    ]
    return {"parts": parts, "schema": schema, "model": model, "form": form}


def _stages(ex: Execution, snap: Snapshot) -> list[dict[str, Any]]:
    stages = [dict(s, lastProgress=None) for s in ex.stage_log]
    if stages:
        stages[-1]["lastProgress"] = {
            "percentage": snap.percentage,
            "message": snap.message,
            "status": snap.status,
        }
    return stages


def _report(ex: Execution) -> list[dict[str, Any]]:
    blocks = []
    if ex.flow is not None:
        blocks = [
            {"id": block_id(ex.flow.id, "step", i), "displayName": s.message, "type": "step"}
            for i, s in enumerate(ex.flow.steps)
        ]
    return [{"id": ex.id, "blocks": blocks}]


def execution_json(state: EmulatorState, ex: Execution) -> dict[str, Any]:
    """FlowExecution; ``state.inputData`` is the start's input: JSON by value, XML as sent, or null."""
    snap = state.status(ex)
    user = {"id": ex.created_by.user, "displayName": ex.created_by.user, "type": "user"}
    errors, warnings = _errors_and_warnings(ex, snap)
    waiting = {"type": "callback", "callbackId": ex.callback_id} if snap.status == "Waiting" else None
    return {
        "id": ex.id,
        "mode": "interactive",
        "createdAt": iso(ex.created_at),
        "createdBy": user,
        "createdFor": user,
        "modifiedAt": iso(ex.modified_at),
        "modifiedBy": user,
        "priority": ex.priority,
        "status": snap.status,
        "flow": _flow_ref(ex),
        "state": {
            "inputData": ex.input_data,
            "output": _output(state, ex),
            "stages": _stages(ex, snap),
            "iterations": [],
            "report": _report(ex),
            "waitingFor": waiting,
            "languageCode": "en",
            "timeZoneId": "UTC",
            "warnings": warnings,
            "errors": errors,
        },
        # Named outputs once the flow has finished well (the flow's own values: copies).
        "outputs": [
            {"output": dict(o["output"]), "content": o["content"]}
            for o in (ex.flow.outputs if ex.flow and snap.status in ("Success", "Warning") else ())
        ],
    }


def execution_summary(state: EmulatorState, ex: Execution) -> dict[str, Any]:
    """The Python/admin view of an execution (not a wire shape)."""
    snap = state.status(ex)
    return {
        "id": ex.id,
        "flow_id": ex.flow.id if ex.flow else None,
        "status": snap.status,
        "percentage": snap.percentage,
        "message": snap.message,
        "created_at": iso(ex.created_at),
        "created_by": ex.created_by.user,
        "input_kind": ex.input_kind,
        "input_data": ex.input_data,
        "dataset_id": ex.dataset_id,
        "priority": ex.priority,
        "callback_id": ex.callback_id,
        "answers": dict(ex.answers),
        "documents": [d.id for d in ex.documents or []],
        "long_polls": ex.long_polls,
        # Virtual seconds of its steps (pauses for input or callbacks not counted).
        "duration": sum(phase.duration for stage in ex.stages for phase in stage.phases),
    }
