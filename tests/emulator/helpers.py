"""Shared helpers of the emulator tests: a small requests client and a document finder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

FINAL = {"Success", "Warning", "Error", "Canceled", "Interrupted", "Archived"}


class Api:
    """requests against the emulator's /api/v1 with one API key."""

    def __init__(self, emu: EmulatorServer, key: str | None) -> None:
        self.emu = emu
        self.base = emu.base_url + "/api/v1"
        self.session = requests.Session()
        if key is not None:
            self.session.headers["X-API-Key"] = key

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.session.post(self.base + path, timeout=30, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.session.delete(self.base + path, timeout=30, **kw)

    def start(self, flow_id: str | None, **kw: Any) -> dict[str, Any]:
        params = {"flowId": flow_id} if flow_id else {}
        params.update(kw.pop("params", {}))
        r = self.post("/flows/executions", params=params, **kw)
        assert r.status_code == 200, r.text
        return r.json()

    def progress(self, execution_id: str, timeout: float | None = None) -> dict[str, Any]:
        params = {} if timeout is None else {"timeout": timeout}
        r = self.get(f"/flows/executions/{execution_id}/progress", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, execution_id: str, until: set[str] | None = None, rounds: int = 50) -> dict[str, Any]:
        """Long-poll until the status is in ``until`` (default: a final status)."""
        until = until or FINAL
        prog = self.progress(execution_id)
        for _ in range(rounds):
            if prog["status"] in until:
                return prog
            prog = self.progress(execution_id, timeout=5)
        raise AssertionError(f"execution {execution_id} never reached {until}: {prog}")

    def run(self, flow_id: str, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start a flow, wait for its end; returns (final progress, FlowExecution)."""
        started = self.start(flow_id, **kw)
        final = self.wait(started["id"])
        execution = self.get(f"/flows/executions/{started['id']}").json()
        return final, execution


def find_documents(node: Any) -> list[dict[str, Any]]:
    """Every object whose "type" is "document", wherever it is nested (as a client must)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "document":
            found.append(node)
        for value in node.values():
            found.extend(find_documents(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(find_documents(value))
    return found
