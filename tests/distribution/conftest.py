"""The sdist and the wheel, built once per session from this checkout with the pinned uv.

The distribution tests run on the primary Airflow line only (the one `constraints.txt` pins): the
distributions do not depend on the line a test venv runs, and the quick start installs
`constraints.txt` whatever the venv.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import time

import pytest

from .helpers import CONSTRAINTS, ROOT, Distributions, pinned, tool


@pytest.fixture(scope="session", autouse=True)
def _primary_line_only() -> None:
    installed, primary = importlib.metadata.version("apache-airflow"), pinned("apache-airflow")
    if installed != primary:
        pytest.skip(
            f"distribution checks run once, on the primary line (constraints.txt: Airflow {primary}); "
            f"this venv has Airflow {installed}"
        )


@pytest.fixture(scope="session")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """`uv build`: the sdist, then the wheel built from that sdist (so the sdist must be complete)."""
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("UV_SYSTEM_CERTS", "1")
    started = time.monotonic()
    subprocess.run(
        [str(tool("uv")), "build", "--quiet", "--out-dir", str(out), "--build-constraints", str(CONSTRAINTS)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Distributions(sdist=sdist, wheel=wheel, build_seconds=time.monotonic() - started)
