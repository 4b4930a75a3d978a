"""`make demo`: a real DAG end-to-end against the local Smart Flows emulator.

Starts the emulator in its own process group while `airflow db migrate` prepares a throw-away
AIRFLOW_HOME (SQLite), runs `dags_examples/smartflows_generate_document.py` with `airflow dags test`,
shows the run's progress lines and the document written under demo-output/, then stops the
emulator by PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "demo-output"
DAG_ID = "smartflows_generate_document"
BIN = Path(sys.executable).parent
# Lines of the run worth showing: the provider's own log lines and the task outcomes.
SHOW = re.compile(
    r"Smart Flows|execution [0-9a-f]{8}-[0-9a-f-]+: |Pausing task as DEFERRED|new_state=|"
    r"DagRun Finished|\[error|Traceback|Error:"
)
# structlog console line: "<timestamp> [level    ] message   [logger] key=value ..."
STRUCTLOG = re.compile(r"^\S+Z \[(\w+)\s*\] (.*?)\s+\[[\w.]+\](.*)$")


def pretty(line: str) -> str:
    m = STRUCTLOG.match(line.rstrip())
    if not m:
        return line.rstrip()
    level, message, fields = m.groups()
    state = re.search(r"new_state=(\w+)", fields)
    if state:
        message += f": {state.group(1)}"
    return message if level == "info" else f"{level.upper()}: {message}"


def start_emulator(env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_smartflows.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    url = key = None
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while (url is None or key is None) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"listening on (\S+)", line):
            url = m.group(1)
        if m := re.search(r"API key \(admin\): (\S+)", line):
            key = m.group(1)
    if url is None or key is None:
        stop(proc)
        sys.exit("demo: the Smart Flows emulator did not start (no URL/API key printed within 30 s)")
    return proc, url, key


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def migrate(env: dict[str, str]) -> subprocess.Popen[str]:
    """`airflow db migrate` of the throw-away SQLite database, started while the emulator starts."""
    return subprocess.Popen(
        [str(BIN / "airflow"), "db", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_migrated(proc: subprocess.Popen[str]) -> None:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        print(out[-5000:], file=sys.stderr)
        sys.exit(f"demo: `airflow db migrate` failed (exit code {proc.returncode}); its output is above")


def dags_test(env: dict[str, str]) -> int:
    """Runs the DAG with `airflow dags test`, showing the run's progress lines; returns its exit code."""
    run = subprocess.Popen(
        [
            str(BIN / "airflow"),
            "dags",
            "test",
            DAG_ID,
            "--dagfile-path",
            str(ROOT / "dags_examples" / f"{DAG_ID}.py"),
            "--conf",
            json.dumps({"output": OUTPUT.as_uri() + "/"}),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert run.stdout is not None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if SHOW.search(line):
            print("  " + pretty(line))
    rc = run.wait()
    if rc != 0:
        print("".join(lines[-60:]), file=sys.stderr)
    return rc


def main() -> int:
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="smartflows-demo-airflow-home-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags_examples"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    print("demo: preparing a throw-away Airflow metadata database (SQLite) and the Smart Flows emulator ...")
    database = migrate(env)
    emulator = None
    try:
        emulator, url, key = start_emulator(env)
        print(f"demo: Smart Flows emulator at {url}")
        env["AIRFLOW_CONN_SMARTFLOWS_DEFAULT"] = json.dumps(
            {"conn_type": "smartflows", "host": url, "password": key}
        )
        wait_migrated(database)
        print(f"demo: database ready ({time.monotonic() - started:.1f} s)")
        OUTPUT.mkdir(exist_ok=True)
        before = {p: p.stat().st_mtime for p in OUTPUT.rglob("*") if p.is_file()}
        print(f"demo: airflow dags test {DAG_ID}")
        rc = dags_test(env)
        written = sorted(p for p in OUTPUT.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime)
        if rc != 0 or not written:
            print(
                f"demo: FAILED (airflow dags test exit code {rc}, {len(written)} new files)", file=sys.stderr
            )
            return 1
        for p in written:
            print(f"demo: document written: {p} ({p.stat().st_size} bytes)")
        print(f"demo: done in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        if database.poll() is None:
            os.killpg(database.pid, signal.SIGTERM)
            database.wait()
        if emulator is not None:
            stop(emulator)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
