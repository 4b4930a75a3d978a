"""Fault rules: which request gets which misbehaviour, deterministically (seeded RNG)."""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_smartflows.emulator.scenario import validate_fault


@dataclass
class Fault:
    id: str
    kind: str
    method: str | None = None
    path: str | None = None
    flow_id: str | None = None
    status: int | None = None
    retry_after: int | float | str | None = None
    latency: float | None = None
    times: int | None = 1
    probability: float = 1.0
    after: int = 0
    body: Any = None
    when: str = "before"
    delay: float | None = None
    seen: int = 0
    hits: int = 0
    _path_re: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._path_re = re.compile(self.path) if self.path else None

    def matches(self, method: str, path: str, flow_id: str | None) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self._path_re and not self._path_re.search(path):
            return False
        return not (self.flow_id and self.flow_id != flow_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "flow_id": self.flow_id,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "times": self.times,
            "probability": self.probability,
            "after": self.after,
            "body": self.body,
            "when": self.when,
            "delay": self.delay,
            "seen": self.seen,
            "hits": self.hits,
        }


class FaultSet:
    """The active rules, in insertion order; the first rule that fires wins.

    Latency rules are the exception: they only add delay, so the request keeps looking for
    another rule after one of them fired.
    """

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[Fault] = []
        self._ids = itertools.count(1)
        self.rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def add(self, spec: dict[str, Any]) -> Fault:
        """Add a rule from ``add_fault``'s arguments (validated; raises ScenarioError)."""
        spec = validate_fault(spec)
        fault = Fault(id=f"fault-{next(self._ids)}", **spec)
        if fault.kind == "html" and fault.status is None:
            fault.status = 502
        self._rules.append(fault)
        return fault

    def clear(self) -> None:
        self._rules.clear()

    def list(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self._rules]

    def pick(self, method: str, path: str, flow_id: str | None) -> tuple[float, Fault | None]:
        """Return (latency seconds to add, the non-latency fault to apply or None)."""
        delay = 0.0
        for rule in self._rules:
            if not rule.matches(method, path, flow_id):
                continue
            rule.seen += 1
            if rule.seen <= rule.after:
                continue
            if rule.times is not None and rule.hits >= rule.times:
                continue
            if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                continue
            rule.hits += 1
            if rule.kind == "latency":
                delay += rule.latency or 0.0
                continue
            return delay, rule
        return delay, None
