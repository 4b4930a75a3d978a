"""The README's quick start, run verbatim as a pip user would, from the wheel to the first PDF.

The README is this test's input: its ```bash blocks between ``<!-- quickstart:start -->`` and
``<!-- quickstart:end -->`` run in order in one bash (``set -euo pipefail``), in a clean virtual
environment with nothing on PATH before it, a HOME of their own (so ``~/airflow`` is a fresh
Airflow home) and no AIRFLOW_* or PYTHONPATH of the test run. Two substitutions only:

- ``pip`` is a shim running ``uv pip`` with the same arguments, fed the wheel just built
  (``--find-links``) and ``constraints.txt``: the package is not on an index, and uv's cache keeps
  CI fast. The shim records its calls, so the test knows the README's install line ran.
- the emulator's example port 8099 becomes a free loopback port.

The commands' process group (the emulator the README starts with ``&`` included) is stopped by
its id at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from .helpers import CONSTRAINTS, ROOT, tool

if TYPE_CHECKING:
    from pathlib import Path

    from .helpers import Distributions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

README = ROOT / "README.md"
EXAMPLE_PORT = "8099"
STEP = "quickstart-step"


def quickstart_blocks() -> list[str]:
    section = re.search(r"<!-- quickstart:start -->(.*?)<!-- quickstart:end -->", README.read_text(), re.S)
    assert section, "README.md has no <!-- quickstart:start --> ... <!-- quickstart:end --> section"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), flags=re.S | re.M)
    assert blocks, "the README's quick start has no ```bash block"
    return blocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script(blocks: list[str], port: int) -> str:
    """The blocks in order, each announced with its start time (the step timings of the report)."""
    assert any(EXAMPLE_PORT in block for block in blocks), (
        f"the quick start no longer uses port {EXAMPLE_PORT}"
    )
    lines = ["set -euo pipefail"]
    for number, block in enumerate(blocks, 1):
        lines.append(f'echo "{STEP} {number} $(date +%s.%N)"')
        lines.append(block.replace(EXAMPLE_PORT, str(port)))
    lines.append(f'echo "{STEP} end $(date +%s.%N)"')
    return "\n".join(lines) + "\n"


def clean_venv(tmp_path: Path, wheel: Path) -> Path:
    """A virtual environment of the base interpreter whose `pip` installs through uv (see above)."""
    venv = tmp_path / "venv"
    uv = tool("uv")
    subprocess.run(
        [str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120
    )
    shim = venv / "bin" / "pip"
    shim.write_text(
        "#!/bin/sh\n"
        "# The quick start's pip: uv's, with the wheel built from the checkout and the pinned set.\n"
        f'echo "$@" >> "{tmp_path / "pip-calls"}"\n'
        f'exec "{uv}" pip "$@" --python "{venv}/bin/python" '
        f'--constraints "{CONSTRAINTS}" --find-links "{wheel.parent}"\n'
    )
    shim.chmod(0o755)
    return venv


def user_env(venv: Path, home: Path) -> dict[str, str]:
    cache = subprocess.run([str(tool("uv")), "cache", "dir"], capture_output=True, text=True, check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTEST", "SMARTFLOWS")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        HOME=str(home),
        VIRTUAL_ENV=str(venv),
        UV_CACHE_DIR=cache.stdout.strip(),
        UV_SYSTEM_CERTS=os.environ.get("UV_SYSTEM_CERTS", "1"),
    )
    return env


def step_times(output: str) -> dict[str, float]:
    stamps = [(m[1], float(m[2])) for m in re.finditer(rf"^{STEP} (\w+) ([\d.]+)$", output, re.M)]
    return {name: later - at for (name, at), (_, later) in itertools.pairwise(stamps)}


def test_readme_quickstart_runs_verbatim_to_the_first_pdf(
    distributions: Distributions, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    venv = clean_venv(tmp_path, distributions.wheel)
    commands = tmp_path / "quickstart.sh"
    commands.write_text(script(quickstart_blocks(), free_port()))
    log = tmp_path / "quickstart.log"
    started = time.monotonic()
    # Output to a file, not a pipe: the emulator started with `&` keeps its stdout open after bash ends.
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(commands)],
            cwd=home,
            env=user_env(venv, home),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=840)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the emulator the README started with `&`
            proc.wait()
    output = log.read_text()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"the quick start failed (exit {proc.returncode}):\n{output[-8000:]}"

    pip_calls = (tmp_path / "pip-calls").read_text().splitlines()
    assert any(call.split()[:2] == ["install", "airflow-provider-smartflows"] for call in pip_calls), (
        pip_calls
    )
    assert "Connection success!" in output, output[-4000:]
    pdfs = sorted((home / "airflow" / "demo-output").glob("*.pdf"))
    assert pdfs, f"no PDF under {home / 'airflow' / 'demo-output'}:\n{output[-4000:]}"
    assert all(pdf.read_bytes().startswith(b"%PDF") for pdf in pdfs)

    steps = ", ".join(f"step {name} {seconds:.1f} s" for name, seconds in step_times(output).items())
    print(
        f"\nquick start: wheel and sdist built in {distributions.build_seconds:.1f} s; README commands "
        f"{elapsed:.1f} s ({steps}); first PDF {pdfs[0].name}, {pdfs[0].stat().st_size} bytes"
    )
    shutil.rmtree(venv, ignore_errors=True)
