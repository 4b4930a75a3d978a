"""storage's path factory and naming rule (pure: no store needed)."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.storage import destination_path, numbered_name, object_path, unique_names


@pytest.mark.parametrize(
    ("name", "number", "expected"),
    [
        ("a.pdf", 1, "a.pdf"),
        ("a.pdf", 2, "a (2).pdf"),
        ("a", 3, "a (3)"),
        (".hidden", 2, ".hidden (2)"),
        ("out/{key}.tar.gz", 2, "out/{key}.tar (2).gz"),
        ("s3://bucket/x.v1/doc", 2, "s3://bucket/x.v1/doc (2)"),
    ],
    ids=["first", "second", "no-extension", "dot-file", "path", "dot-in-folder"],
)
def test_numbered_name(name: str, number: int, expected: str) -> None:
    assert numbered_name(name, number) == expected


def test_unique_names_skip_names_already_taken() -> None:
    assert unique_names(["b.pdf", "B (2).pdf", "b.pdf"]) == ["b.pdf", "B (2).pdf", "b (3).pdf"]


def test_object_path_keeps_the_uris_own_connection_without_conn_id() -> None:
    path = object_path("file:///tmp/x/doc.pdf", "")
    assert str(path) == "file:///tmp/x/doc.pdf"
    same = ObjectStoragePath("file:///tmp/x/doc.pdf")
    assert object_path(same, "ignored_for_a_path") is same


@pytest.mark.parametrize(
    ("destination", "is_folder"),
    [("file:///tmp/x/", True), ("  file:///tmp/x/doc.pdf ", False)],
    ids=["folder", "file"],
)
def test_destination_path(destination: str, is_folder: bool) -> None:
    path, folder = destination_path(destination)
    assert (str(path).rstrip("/"), folder) == (destination.strip().rstrip("/"), is_folder)


@pytest.mark.parametrize(
    ("destination", "match"), [("  ", "destination is empty"), (42, "destination must be")]
)
def test_bad_destination(destination: object, match: str) -> None:
    with pytest.raises(SmartFlowsInputError, match=match):
        destination_path(destination)
