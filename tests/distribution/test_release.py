"""What a release publishes: both distributions pass `twine check --strict` and carry what a user
needs (the example DAGs, the license, the docs' sources, a changelog entry for this version)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_smartflows import __version__

from .helpers import ROOT, tool

if TYPE_CHECKING:
    from .helpers import Distributions

pytestmark = pytest.mark.slow

EXAMPLE_DAGS = sorted(p.name for p in (ROOT / "dags_examples").glob("*.py"))


def test_twine_check_strict_passes_on_both_distributions(distributions: Distributions) -> None:
    result = subprocess.run(
        [str(tool("twine")), "check", "--strict", str(distributions.sdist), str(distributions.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_ships_the_example_dags_and_the_license(distributions: Distributions) -> None:
    with zipfile.ZipFile(distributions.wheel) as wheel:
        names = wheel.namelist()
    shipped = sorted(
        Path(n).name for n in names if re.fullmatch(r"airflow_provider_smartflows/example_dags/\w+\.py", n)
    )
    assert shipped == EXAMPLE_DAGS
    assert "airflow_provider_smartflows/example_dags/templates/letter.xml.j2" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert any(re.fullmatch(r"[^/]+\.dist-info/licenses/LICENSE", n) for n in names), names
    assert distributions.wheel.name.startswith(f"airflow_provider_smartflows-{__version__}-")


def test_sdist_ships_examples_docs_license_and_changelog(distributions: Distributions) -> None:
    prefix = f"airflow_provider_smartflows-{__version__}/"
    with tarfile.open(distributions.sdist) as sdist:
        names = {n.removeprefix(prefix) for n in sdist.getnames()}
    for required in ("LICENSE", "CHANGELOG.md", "README.md", "mkdocs.yml", "docs/index.md", "docs/hooks.py"):
        assert required in names
    assert {f"dags_examples/{name}" for name in EXAMPLE_DAGS} <= names


def test_changelog_has_an_entry_for_this_version() -> None:
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert headings, "CHANGELOG.md has no version heading"
    assert headings[0] == __version__, f"newest CHANGELOG.md entry {headings[0]}, package {__version__}"


def test_license_is_the_apache_2_text_that_pyproject_declares() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert re.match(r"\s*Apache License\s+Version 2\.0, January 2004\s", text)
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("name", EXAMPLE_DAGS)
def test_example_dag_imports_only_airflow_the_provider_and_the_standard_library(name: str) -> None:
    tree = ast.parse((ROOT / "dags_examples" / name).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    roots = {module.split(".")[0] for module in imported}
    assert roots <= {"airflow", "airflow_provider_smartflows", "__future__"} | sys.stdlib_module_names, roots
