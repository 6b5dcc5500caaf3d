#!/usr/bin/env bash
# checkov over infra/ (the Bicep files): exit non-zero on any failed check, a crash, or a file checkov could not
# parse (it would skip that file's resources in silence). The checks that do not apply are skipped inside their
# resource with the reason (`// checkov:skip=CKV_...: why`). Offline: no download of Prisma Cloud guidelines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOOLS_VENV="${TOOLS_VENV:-.venv-tools}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rc=0
"${TOOLS_VENV}/bin/checkov" --directory infra --framework bicep --compact --quiet --skip-download \
    -o cli -o json --output-file-path "console,$out/results.json" || rc=$?
"${TOOLS_VENV}/bin/python" - "$out/results.json" <<'PY' || rc=1
import json, sys
summary = json.load(open(sys.argv[1]))["summary"]
if summary["parsing_errors"] or not summary["resource_count"]:
    sys.exit(f"checkov: {summary['parsing_errors']} file(s) not parsed, {summary['resource_count']} resources seen")
print(f"checkov: {summary['resource_count']} resources, {summary['passed']} passed, {summary['skipped']} skipped")
PY
exit "$rc"
