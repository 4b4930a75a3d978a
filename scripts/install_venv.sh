#!/usr/bin/env bash
# Creates (or completes) a venv from one pinned set:  scripts/install_venv.sh VENV CONSTRAINTS SPEC
#   VENV         the venv folder (.venv, .venv-2.11 ...), created when missing
#   CONSTRAINTS  the pinned set (constraints.txt, constraints-airflow-<line>.txt), applied to the
#                packages and to their build dependencies (hatchling)
#   SPEC         what to install, e.g. `.` (the demo) or `.[dev]` (the tests), always editable
# The installer is uv, at the version pinned in CONSTRAINTS, bootstrapped into the venv by the
# interpreter's pip. When uv cannot be had, the same pins go through pip (slower, same result).
# PYTHON (default python3) is the interpreter of the new venv.
set -euo pipefail
venv=$1 spec=$3
constraints=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
python=${PYTHON:-python3}

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed, found " + sys.version.split()[0])'
[ -x "$venv/bin/python" ] || "$python" -m venv --without-pip "$venv"

uv_pin=$(grep -m1 -E '^uv==' "$constraints" || true)
uv="$venv/bin/uv"
have_uv() { [ -n "$uv_pin" ] && [ "$("$uv" --version 2>/dev/null | cut -d' ' -f2)" = "${uv_pin#uv==}" ]; }

if ! have_uv && [ -n "$uv_pin" ]; then
    # The interpreter's pip writes into the venv (--python, pip >= 22.3); else the venv's own pip.
    "$python" -m pip --python "$venv/bin/python" install -q --disable-pip-version-check "$uv_pin" 2>/dev/null \
        || { "$venv/bin/python" -m ensurepip >/dev/null 2>&1 \
            && "$venv/bin/python" -m pip install -q --disable-pip-version-check "$uv_pin" 2>/dev/null; } \
        || echo "install_venv: $uv_pin could not be installed; installing with pip instead (slower)" >&2
fi

if have_uv; then
    # uv reads neither pip's configuration nor its CA setting: take the system's certificate store.
    # Bytecode is compiled once here, as pip does, instead of at every Airflow start.
    export UV_SYSTEM_CERTS=${UV_SYSTEM_CERTS:-1}
    exec "$uv" pip install -q --python "$venv/bin/python" --compile-bytecode \
        --constraints "$constraints" --build-constraints "$constraints" \
        pip -e "$spec"
fi

[ -x "$venv/bin/pip" ] || "$venv/bin/python" -m ensurepip >/dev/null
export PIP_CONSTRAINT=$constraints PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q -c "$constraints" pip
exec "$venv/bin/python" -m pip install -q -c "$constraints" -e "$spec"
