"""Helpers shared by the benchmarks: the emulator process, statistics, machine facts, JSON files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The benchmarks run as `python -m benchmarks.<name>` from the repository root, so `tests` (the
# test support package) imports like any package. One emulator process class and one
# stop-by-PID for the system tests and the benchmarks; free_port and stop_group are re-exported
# for the benchmark modules.
from tests.support.airflow_stack import EmulatorProcess
from tests.support.processes import free_port, stop_group  # noqa: F401 (re-exported for the benchmarks)

ROOT = Path(__file__).resolve().parent.parent


def raise_nofile() -> None:
    """Soft limit of open files up to the hard limit (5 000 waits hold 5 000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Emulator(EmulatorProcess):
    """The emulator of the system tests, quiet and with the open-files limit raised (5 000 waits
    hold 5 000 sockets)."""

    def __init__(self, log_dir: Path, *, scenario: Path | None = None, speedup: float = 1.0) -> None:
        super().__init__(log_dir, scenario=scenario, speedup=speedup, quiet=True, preexec_fn=raise_nofile)


class TlsEmulator(EmulatorProcess):
    """The emulator serving HTTPS (``--tls-cert``) with a throw-away CA; ``ca_file`` verifies it."""

    def __init__(self, log_dir: Path, *, scenario: Path | None = None, speedup: float = 1.0) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.ca_file, cert, key = make_certificates(log_dir)
        super().__init__(
            log_dir,
            scenario=scenario,
            speedup=speedup,
            quiet=True,
            preexec_fn=raise_nofile,
            extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
        )
        self.base_url = f"https://127.0.0.1:{self.port}"
        self.session.verify = str(self.ca_file)
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify

    def connection(self) -> dict[str, Any]:
        return {**super().connection(), "extra": {"ca_bundle": str(self.ca_file)}}


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it: (CA file, cert file, key file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Smart Flows bench CA")])

    def build(subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = (
        build(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key.public_key())
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
    return ca_file, cert_file, key_file


# --- statistics ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min, max and the runs themselves."""
    clean = [v for v in values if v == v]  # drop NaN
    if not clean:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "runs": values}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean), "runs": values}


def fmt(stat: dict[str, Any], digits: int = 2, unit: str = "") -> str:
    """``median (min-max)`` with a unit; a single run shows just its value."""
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    if med != med:
        return "n/a"
    sep = f" {unit}" if unit else ""
    if len([v for v in stat["runs"] if v == v]) <= 1 or lo == hi:
        return f"{med:.{digits}f}{sep}"
    return f"{med:.{digits}f}{sep} ({lo:.{digits}f}-{hi:.{digits}f})"


# --- processes -------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM; ru_maxrss as a fallback)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run_json_subprocess(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> Any:
    """Run a helper in its own process group; its last stdout line is JSON. Stopped by PID on timeout."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace=2)
        raise RuntimeError(f"{args[:4]} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


# --- machine and files -----------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import aiohttp
    import airflow

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    curl = "not installed"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        curl = subprocess.run(
            ["curl", "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[1]
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "airflow": airflow.__version__,
        "aiohttp": aiohttp.__version__,
        "curl": curl,
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def replace_section(results_md: Path, lines: list[str], heading: str, before: str | None = None) -> None:
    """Put ``lines`` in place of RESULTS.md's section starting with ``heading`` (up to the next
    "## "); without one, insert them before the section starting with ``before``, else at the end."""
    text = results_md.read_text() if results_md.exists() else ""
    body = "\n".join(lines).rstrip("\n") + "\n\n"
    start = text.find("\n" + heading)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        results_md.write_text(text[: start + 1] + body + (text[end + 1 :] if end >= 0 else ""))
        return
    at = text.find("\n" + before) if before else -1
    if at < 0:
        results_md.write_text(text.rstrip("\n") + "\n\n" + body)
        return
    results_md.write_text(text[: at + 1] + body + text[at + 1 :])
