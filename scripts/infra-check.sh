#!/usr/bin/env bash
# checkov over infra/ (the Bicep files): exit non-zero on any failed check (or a crash). The checks that do
# not apply are skipped inside their resource with the reason (`// checkov:skip=CKV_...: why`). Offline: no
# download of Prisma Cloud guidelines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOOLS_VENV="${TOOLS_VENV:-.venv-tools}"
exec "${TOOLS_VENV}/bin/checkov" --directory infra --framework bicep --compact --quiet --skip-download
