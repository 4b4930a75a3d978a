#!/usr/bin/env bash
# Installs what the object-storage tests (tests/storage) need and is missing:
#   - Azurite (Microsoft's Azure Storage emulator, npm package "azurite") into .cache/azurite,
#     a project-local folder (gitignored), at the version pinned below;
#   - the storage extra's Python packages (adlfs, gcsfs, the GCS emulator...) into the venv,
#     pinned by the constraints file.
# Usage: scripts/install_storage_emulators.sh [VENV] [CONSTRAINTS]
# Idempotent: each part is skipped when already present. Without Node.js/npm the Azure tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-.venv}"
CONSTRAINTS="${2:-constraints.txt}"
AZURITE_VERSION="3.37.0"
AZURITE_DIR=".cache/azurite"

if [ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] \
  && [ "$(node -p "require('./$AZURITE_DIR/node_modules/azurite/package.json').version" 2>/dev/null)" = "$AZURITE_VERSION" ]; then
  echo "storage: azurite $AZURITE_VERSION already in $AZURITE_DIR"
elif command -v npm >/dev/null 2>&1; then
  echo "storage: installing azurite $AZURITE_VERSION into $AZURITE_DIR"
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --silent --omit=dev "azurite@$AZURITE_VERSION"
else
  echo "storage: npm not found; the Azure Blob tests will be skipped"
fi

if "$VENV/bin/python" -c "import adlfs, gcsfs, gcp_storage_emulator, airflow.providers.openlineage" >/dev/null 2>&1; then
  echo "storage: adlfs, gcsfs, gcp-storage-emulator and the OpenLineage provider already in $VENV"
else
  echo "storage: installing the storage extra into $VENV"
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[storage]"
fi
