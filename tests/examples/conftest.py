"""Fixtures for running the example DAGs of ``dags_examples/`` against the emulator (and moto S3).

The DAG runs are module-scoped (one run per test module, several tests reading it), so these
fixtures are module- or session-scoped too: the session emulator (reset by ``run_example``, not
per test), its connection, and a moto S3 server with one bucket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.examples.example_helpers import S3_BUCKET, S3_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_smartflows.emulator import EmulatorServer


@pytest.fixture(scope="module")
def emulator_conn(smartflows_emulator_session: EmulatorServer) -> Iterator[EmulatorServer]:
    """``AIRFLOW_CONN_SMARTFLOWS_DEFAULT`` pointing at the session emulator, for a whole module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_SMARTFLOWS_DEFAULT", smartflows_emulator_session.connection_json())
        yield smartflows_emulator_session


@pytest.fixture(scope="module")
def s3_client(moto_bucket: Any) -> Iterator[Any]:
    """The bucket ``S3_BUCKET`` on the moto server, and the AWS connection ``S3_CONN_ID`` to it."""
    with pytest.MonkeyPatch.context() as patch, moto_bucket(patch, S3_CONN_ID, S3_BUCKET) as s3:
        yield s3
