"""Fixtures for running the example DAGs of ``dags_examples/`` against the emulator (and moto S3).

The DAG runs are module-scoped (one run per test module, several tests reading it), so these
fixtures are module- or session-scoped too: the session emulator (reset by ``run_example``, not
per test), its connection, and a moto S3 server with one bucket.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dags"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from airflow_harness import airflow_db
from example_helpers import S3_BUCKET, S3_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_smartflows.emulator import EmulatorServer

__all__ = ["airflow_db"]


@pytest.fixture(scope="module")
def emulator_conn(smartflows_emulator_session: EmulatorServer) -> Iterator[EmulatorServer]:
    """``AIRFLOW_CONN_SMARTFLOWS_DEFAULT`` pointing at the session emulator, for a whole module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_SMARTFLOWS_DEFAULT", smartflows_emulator_session.connection_json())
        yield smartflows_emulator_session


@pytest.fixture(scope="module")
def s3_client(moto_endpoint: str) -> Iterator[Any]:
    """The bucket ``letters`` on the moto server, and the AWS connection ``aws_test`` to it."""
    import boto3

    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, "testing")
        patch.setenv(
            f"AIRFLOW_CONN_{S3_CONN_ID.upper()}",
            json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
                }
            ),
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=S3_BUCKET)
        try:
            yield s3
        finally:
            for item in s3.list_objects_v2(Bucket=S3_BUCKET).get("Contents", []):
                s3.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
            s3.delete_bucket(Bucket=S3_BUCKET)
