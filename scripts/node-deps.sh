#!/usr/bin/env bash
# Install the Node.js dev dependencies (Azurite) exactly as pinned in package-lock.json.
# Skips `npm ci` when node_modules already holds exactly the locked tree (npm's hidden
# lockfile node_modules/.package-lock.json matches), so a running Azurite is not disturbed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v node >/dev/null 2>&1 || { echo "[node] node is not installed; run 'make system'" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "[node] npm is not installed; run 'make system'" >&2; exit 1; }
[[ -f package-lock.json ]] || { echo "[node] package-lock.json missing; run: npm install --package-lock-only" >&2; exit 1; }

in_sync() {
    [[ -f node_modules/.package-lock.json && -x node_modules/.bin/azurite ]] || return 1
    node -e '
const want = require("./package-lock.json").packages, have = require("./node_modules/.package-lock.json").packages;
const same = (x, y) => x.version === y.version && x.integrity === y.integrity;
const kw = Object.keys(want).filter((k) => k !== ""), kh = Object.keys(have);
process.exit(kw.length === kh.length && kw.every((k) => k in have && same(want[k], have[k])) ? 0 : 1);
' 2>/dev/null
}

if in_sync; then
    echo "[node] node_modules matches package-lock.json; skipping npm ci"
else
    echo "[node] npm ci"
    npm ci --no-audit --no-fund --loglevel=error
fi
echo "[node] azurite $(node node_modules/.bin/azurite --version 2>/dev/null || echo '?') (node $(node --version))"
