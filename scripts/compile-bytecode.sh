#!/usr/bin/env bash
# Compile Wharf's own code (function_app.py, functions/, shared/) into __pycache__ before the deployment
# package is made, so a cold start on Flex Consumption reads bytecode instead of compiling every module.
#
# Why: the remote build (Oryx) pip-installs requirements.txt into .python_packages (pip writes bytecode for the
# dependencies) but has no step that compiles the app's own files, and the instance runs from the deployment
# package, read-only: Python cannot write __pycache__ there, so each cold start compiles the app again in memory
# (benchmarks/cold_start_bytecode.py). azd keeps __pycache__ in the zip because .funcignore does not exclude it.
#
# checked-hash pycs: valid whatever mtimes the zip keeps (zip stores them at 2 s resolution, which would make
# timestamp pycs look stale), and still safe in a working copy (an edited source no longer matches its hash
# and is recompiled). Run it with the Python minor version the function app runs (PYTHON=python3.11 ...):
# bytecode of another version is ignored by the interpreter.
#
# Called by the azd `prepackage` hook of the `api` service in azure.yaml (hooks: prepackage: posix: run:
# scripts/compile-bytecode.sh), and by hand: scripts/compile-bytecode.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
targets=(function_app.py functions shared)
"$PYTHON" -m compileall -q -f -j 0 --invalidation-mode checked-hash "${targets[@]}"
tag="$("$PYTHON" -c 'import sys; print(sys.implementation.cache_tag)')"
count="$(find functions shared -name "*.${tag}.pyc" | wc -l)"
echo "compile-bytecode: ${count} modules compiled for ${tag} (checked-hash) under functions/ and shared/"
if [ "${1:-}" = "--check" ]; then  # every source has its bytecode
  missing=0
  while IFS= read -r src; do
    dir="$(dirname "$src")"; base="$(basename "$src" .py)"
    [ -f "$dir/__pycache__/$base.$tag.pyc" ] || { echo "missing bytecode: $src" >&2; missing=1; }
  done < <(find function_app.py functions shared -name "*.py")
  exit "$missing"
fi
