#!/usr/bin/env bash
# The checks behind `make test` (run inside scripts/with-stack.sh, so the stack is up):
# ruff, mypy, checkov (infra/, scripts/infra-check.sh), pytest. All of them always run, so one report shows
# every failure; the exit code is non-zero when any of them failed. Extra pytest arguments: PYTEST_ARGS="-k foo -x".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"

declare -A result
overall=0

step() {
    local name="$1"
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    local rc=0
    "$@" || rc=$?
    result[$name]=$rc
    ((rc == 0)) || overall=1
}

step ruff "${VENV}/bin/ruff" check .
step mypy "${VENV}/bin/mypy"
step checkov scripts/infra-check.sh
# shellcheck disable=SC2086  # PYTEST_ARGS is deliberately word-split
step pytest "${VENV}/bin/python" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-} tests/

printf '\n==> summary\n'
for name in ruff mypy checkov pytest; do
    if ((result[$name] == 0)); then
        printf '  %-7s ok\n' "$name"
    else
        printf '  %-7s FAILED (exit %s)\n' "$name" "${result[$name]}"
    fi
done
exit "$overall"
