#!/usr/bin/env bash
# The deployment tests (tests/deployment): the provider in a production-shaped Airflow on this
# machine: PostgreSQL, CeleryExecutor on Redis, two Celery workers, two triggerers, failures injected.
#
# Needs PostgreSQL's server binaries and redis-server. Running as root with apt-get, it installs
# Debian's postgresql and redis-server when missing (never started as system services: the tests
# start their own throw-away servers on free loopback ports). Otherwise it stops at once with one
# line saying what to install. Then it installs the `deployment` extra into the venv and runs pytest.
#
#   VENV_BIN   the venv's bin directory (default .venv/bin)
#   extra arguments are passed to pytest (e.g. -k failover)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN="${VENV_BIN:-.venv/bin}"

have_postgres() {
  local dir
  for dir in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && return 0
  done
  command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}

missing=()
have_postgres || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  missing+=(postgresql) # as root, PostgreSQL must run as Debian's unprivileged 'postgres' user
fi

if [ "${#missing[@]}" -gt 0 ]; then
  read -r -a missing <<<"$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-deployment: installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d 101: the packages' post-install scripts must not start system services.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    status=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/test-deployment-apt.log 2>&1 || status=$?
    [ "$created_policy" = 1 ] && rm -f "$policy"
    if [ "$status" != 0 ]; then
      echo "test-deployment: apt-get install ${missing[*]} failed (log: /tmp/test-deployment-apt.log); install them and run again" >&2
      exit 1
    fi
  else
    echo "test-deployment: ${missing[*]} not installed: run 'sudo apt-get install -y ${missing[*]}' (Debian) and try again" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV_BIN/python" ]; then
  echo "test-deployment: no Python at $VENV_BIN/python: run 'make install' first (or set VENV_BIN)" >&2
  exit 1
fi
# The extra: Celery provider, psycopg2, asyncpg (Airflow's async engine on PostgreSQL), redis client.
if command -v uv >/dev/null 2>&1; then
  uv pip install -q --python "$VENV_BIN/python" -c constraints.txt -e ".[deployment]"
else
  "$VENV_BIN/python" -m pip install -q -c constraints.txt -e ".[deployment]"
fi

started=$(date +%s)
status=0
rm -f tests/deployment/.last_run.json
"$VENV_BIN/python" -m pytest -p no:cacheprovider tests/deployment "$@" || status=$?
# The figures of the run (takeover time, duplicates, what a database outage did), for the record.
[ -f tests/deployment/.last_run.json ] && cat tests/deployment/.last_run.json
echo "test-deployment: $(($(date +%s) - started)) s"
exit "$status"
