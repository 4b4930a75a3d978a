"""Security: a canary API key through a whole dag.test() run leaks nowhere; TLS verification.

The key-handling unit tests (masker registration, error texts of every hook call) are in
tests/hooks/test_secrets.py; this module checks what a real Airflow run leaves behind.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import pickle
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_provider_smartflows.emulator.server import EmulatorServer
from airflow_provider_smartflows.exceptions import SmartFlowsConnectionError, SmartFlowsInputError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger
from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION
from tests.support.dag_runs import make_dag

from .helpers import quick_flow, record_figures

pytestmark = pytest.mark.timeout(120)


AIRFLOW_V_3_0_PLUS = int(AIRFLOW_VERSION.split(".")[0]) >= 3

CANARY = "sf-canary-0d9e8f7a6b5c4d3e2f1a"
CANARY_CONN = "sf_canary_run"


def canary_needles() -> list[bytes]:
    """The key, and its base64 at each of the three alignments it can have inside a longer text."""
    needles = [CANARY.encode()]
    for prefix in ("", "a", "ab"):
        encoded = base64.b64encode((prefix + CANARY).encode())
        skip = (len(prefix) * 4 + 2) // 3 + 1  # characters that depend on the prefix
        needles.append(encoded[skip:-4])  # the end depends on what follows
        needles.append(base64.urlsafe_b64encode((prefix + CANARY).encode())[skip:-4])
    return needles


def hits(data: bytes | str) -> int:
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else data
    return sum(raw.count(needle) for needle in canary_needles())


@pytest.fixture(scope="module")
def canary_emulator() -> Any:
    server = EmulatorServer(
        scenario={"api_keys": [{"key": CANARY, "user": "canary-user", "role": "admin"}]}, speedup=50
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _rows_text(model: Any, dag_id: str) -> list[str]:
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(model).where(model.dag_id == dag_id)).all()
        return [repr({c.name: getattr(row, c.key, None) for c in model.__table__.columns}) for row in rows]


def _store_trigger_row(trigger: SmartFlowsExecutionTrigger) -> list[str]:
    """Write the trigger as the scheduler does for a deferred task; return its raw and decoded row."""
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select, text

    with create_session() as session:
        row = Trigger.from_object(trigger)
        session.add(row)
        session.flush()
        trigger_id = row.id
    with create_session() as session:
        stored = session.scalars(select(Trigger).where(Trigger.id == trigger_id)).one()
        raw = session.execute(text("SELECT * FROM trigger WHERE id = :id"), {"id": trigger_id}).all()
        return [repr(stored.kwargs), repr(raw), stored.classpath]


def _without_dag_test_mask_requests(text: str) -> str:
    """On Airflow 3.0 only, the captured output less its `Sending request msg=MaskSecret(...)` lines.

    3.0's in-process dag.test() logs, at DEBUG, the supervisor request that registers the mask, with
    the secret in it, before the mask exists: that is Airflow's own comms in dag.test(), not the
    provider (a real 3.0 worker logs the request without its body). Every other line still counts.
    """
    if AIRFLOW_VERSION.split(".")[:2] != ["3", "0"]:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if not ("Sending request" in line and "msg=MaskSecret(" in line))


@pytest.mark.slow  # a dag.test() run
def test_canary_key_leaks_nowhere_in_a_dag_run(
    run_dag: Any,
    canary_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    emulator = canary_emulator
    emulator.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CANARY_CONN.upper()}", emulator.connection_json(CANARY))
    emulator.add_flow(quick_flow("canary-ok"))
    emulator.add_flow(quick_flow("canary-refused"))
    # Error bodies that echo the key: retried once (500) on the documents, refused (403) on a start.
    emulator.add_fault("status", method="GET", path="/documents/[^/]+$", status=500, body=f"bad {CANARY}")
    emulator.add_fault("status", flow_id="canary-refused", status=403, body=f"key {CANARY} lacks rights")
    destination = tmp_path / "docs"
    operators: list[Any] = []

    def build() -> None:
        generate = SmartFlowsRunFlowOperator(
            task_id="generate",
            flow_id="canary-ok",
            smartflows_conn_id=CANARY_CONN,
            deferrable=True,
            poll_interval=1,
        )
        download = SmartFlowsDownloadDocumentsOperator(
            task_id="download",
            execution_id="{{ ti.xcom_pull(task_ids='generate', key='execution_id') }}",
            destination=f"{destination}/",
            smartflows_conn_id=CANARY_CONN,
        )
        refused = SmartFlowsRunFlowOperator(
            task_id="refused", flow_id="canary-refused", smartflows_conn_id=CANARY_CONN
        )
        generate >> download
        operators.extend([generate, download, refused])

    caplog.set_level("DEBUG")
    dag = make_dag("canary_run", build)
    result = run_dag(dag)
    assert result.states == {"generate": "success", "download": "success", "refused": "failed"}
    # The key really went over the wire on every call (the emulator authenticates each one).
    authenticated = [r for r in emulator.requests if r["user"] == "canary-user"]
    assert len(authenticated) >= 5
    assert len(list(destination.iterdir())) == 1

    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance

    generate = operators[0]
    execution_id = result.xcom("generate", "execution_id")
    trigger = SmartFlowsExecutionTrigger(execution_id, CANARY_CONN, poll_interval=1.0)
    places: dict[str, list[str]] = {
        "xcom": [repr(_xcom_value(row)) for row in _xcom_rows(dag.dag_id)],
        "rendered_fields": _rows_text(RenderedTaskInstanceFields, dag.dag_id),
        "task_instances": _rows_text(TaskInstance, dag.dag_id),
        "trigger_row": _store_trigger_row(trigger),
        "exceptions": [
            text
            for errors in result.errors.values()
            for error in errors
            for text in (
                str(error),
                repr(error),
                repr(getattr(error, "fields", dict)()),
                repr(pickle.dumps(error)),
            )
        ],
        "reprs": [
            *(repr(op) for op in operators),
            *(repr(op.hook) for op in operators),
            *(repr(vars(op.hook)) for op in operators),
            repr(generate.hook.settings),
            repr(trigger),
            json.dumps(trigger.serialize()),
        ],
        "captured_output": [
            _without_dag_test_mask_requests(text) for text in (caplog.text, *capfd.readouterr())
        ],
    }
    files = [path for path in Path(os.environ["AIRFLOW_HOME"]).rglob("*") if path.is_file()]
    files += list(destination.iterdir())
    file_hits = {str(path): hits(path.read_bytes()) for path in files}
    place_hits = {name: sum(hits(text) for text in texts) for name, texts in places.items()}
    assert all(places.values()), {name: len(texts) for name, texts in places.items()}
    assert "lacks the rights for POST /flows/executions" in " ".join(places["exceptions"])
    assert "***" in " ".join(places["captured_output"])  # the echoed key was blanked, not absent
    total = sum(file_hits.values()) + sum(place_hits.values())
    record_figures(
        "canary",
        {
            "canary_hits": total,
            "files_searched": len(files),
            "bytes_searched": sum(path.stat().st_size for path in files),
            "places_searched": {name: len(texts) for name, texts in places.items()},
            "requests_made_with_the_key": len(authenticated),
        },
    )
    assert {name: n for name, n in file_hits.items() if n} == {}
    assert {name: n for name, n in place_hits.items() if n} == {}


def _xcom_value(row: Any) -> Any:
    if not AIRFLOW_V_3_0_PLUS:
        return row.value  # Airflow 2's XCom deserializes the value when the row is loaded
    from airflow.models.xcom import XComModel

    return XComModel.deserialize_value(row)


def _xcom_rows(dag_id: str) -> list[Any]:
    from airflow.utils.session import create_session

    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.xcom import XComModel
    else:
        from airflow.models.xcom import XCom as XComModel
    from sqlalchemy import select

    with create_session() as session:
        rows = list(session.scalars(select(XComModel).where(XComModel.dag_id == dag_id)).all())
        session.expunge_all()
        return rows


def test_canary_needles_find_the_key_and_its_base64() -> None:
    assert hits(f"x {CANARY} y") >= 1
    for prefix in ("", "user:", "ab"):
        encoded = base64.b64encode(f"{prefix}{CANARY}".encode()).decode()
        assert hits(f"Authorization: Basic {encoded}") >= 1, prefix
    assert hits("sf-canary-something-else") == 0


# --------------------------------------------------------------------------- TLS


def _certificates(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it; (CA file, server context)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Smart Flows test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ca_file, context = _certificates(tmp_path_factory.mktemp("tls"))
    server = EmulatorServer(speedup=50, ssl_context=context)
    server.start()
    try:
        server.ca_file = ca_file
        yield server
    finally:
        server.stop()


UNTRUSTED = (
    r"Could not complete GET /flows/executions/e1/progress on Smart Flows at https://127\.0\.0\.1:\d+ "
    r"\(connection 'sf_tls'\): TLS certificate verification failed .*set the connection extra 'ca_bundle' "
    r"to the path of the CA bundle"
)


@pytest.fixture
def system_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CA bundle in the environment, as many images set it: it must not override ``verify``."""
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())


def test_sync_hook_refuses_a_self_signed_server_by_default(
    tls_emulator: Any, monkeypatch: pytest.MonkeyPatch, system_bundle: None
) -> None:
    assert tls_emulator.base_url.startswith("https://")
    monkeypatch.setenv("AIRFLOW_CONN_SF_TLS", tls_emulator.connection_json())
    tls_emulator.reset()
    hook = SmartFlowsHook("sf_tls", retry_limit=2, retry_delay=0.001)
    with pytest.raises(SmartFlowsConnectionError, match=UNTRUSTED) as info:
        hook.get_progress("e1")
    assert not info.value.request_sent
    assert tls_emulator.requests == []  # the handshake failed: no request reached the server


@pytest.mark.parametrize("verify", ["ca", "false", "ca_bundle"])
def test_sync_hook_trusts_the_server_with_verify(
    tls_emulator: Any, monkeypatch: pytest.MonkeyPatch, system_bundle: None, verify: str
) -> None:
    extra = {
        "ca": {"verify": str(tls_emulator.ca_file)},
        "false": {"verify": "false"},
        "ca_bundle": {"ca_bundle": str(tls_emulator.ca_file), "verify": True},
    }[verify]
    monkeypatch.setenv("AIRFLOW_CONN_SF_TLS", tls_emulator.connection_json(**extra))
    tls_emulator.reset()
    hook = SmartFlowsHook("sf_tls", retry_limit=0)
    progress = hook.start_execution("hello")
    assert hook.get_progress(progress.id).id == progress.id
    assert tls_emulator.executions_started() == 1


def test_async_hook_refuses_then_trusts_with_verify(
    tls_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_emulator.reset()
    monkeypatch.setenv("AIRFLOW_CONN_SF_TLS", tls_emulator.connection_json())
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_TLS_CA", tls_emulator.connection_json(ca_bundle=str(tls_emulator.ca_file))
    )
    started = SmartFlowsHook("sf_tls_ca", retry_limit=0).start_execution("hello").id

    async def scenario() -> str:
        with pytest.raises(SmartFlowsConnectionError, match=UNTRUSTED):
            async with SmartFlowsAsyncHook("sf_tls", retry_limit=1, retry_delay=0.001) as hook:
                await hook.get_progress("e1")
        async with SmartFlowsAsyncHook("sf_tls_ca", retry_limit=0) as hook:
            return (await hook.get_progress(started)).id

    assert asyncio.run(scenario()) == started
    assert len(tls_emulator.requests) == 2  # the start and the trusted progress call only


def test_a_missing_ca_bundle_fails_before_any_request(
    tls_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    tls_emulator.reset()
    missing = str(tmp_path / "missing-ca.pem")
    monkeypatch.setenv("AIRFLOW_CONN_SF_TLS", tls_emulator.connection_json(ca_bundle=missing))
    match = "The CA bundle .*missing-ca.pem.* of connection 'sf_tls'.*set the extra 'ca_bundle'"
    with pytest.raises(SmartFlowsInputError, match=match):
        SmartFlowsHook("sf_tls").get_progress("e1")

    async def scenario() -> None:
        async with SmartFlowsAsyncHook("sf_tls") as hook:
            await hook.get_progress("e1")

    with pytest.raises(SmartFlowsInputError, match=match):
        asyncio.run(scenario())
    assert tls_emulator.requests == []
