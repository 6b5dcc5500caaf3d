#!/usr/bin/env bash
# Run a command with the local stack (Azurite + sshd) up, e.g.  scripts/with-stack.sh pytest tests/
#  - starts the stack (idempotent) and exports WHARF_STACK_ENV=<repo>/.local/stack.env
#  - afterwards stops the stack, unless it was already fully running before (then it is left as found)
#  - exits with the command's exit code; the stack is stopped even when the command fails or is interrupted
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${ROOT_DIR}/scripts/stack.sh"

(($# > 0)) || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

was_running=no
if "$STACK" status >/dev/null 2>&1; then
    was_running=yes
fi

cleanup() {
    local rc=$?
    if [[ "$was_running" == no ]]; then
        "$STACK" stop || true
    else
        echo "[stack] was already running before; leaving it running"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$STACK" start
export WHARF_STACK_ENV="${ROOT_DIR}/.local/stack.env"
"$@"
