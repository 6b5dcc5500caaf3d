"""Cold start with and without bytecode: the whole-process wall time of `python -c "import function_app"`.

    python benchmarks/cold_start_bytecode.py [-n 7]

Three cases, fresh interpreters each, medians:
- bytecode everywhere: warm `__pycache__` for the app and site-packages (what cold_start.py measures);
- app code without bytecode: a copy of function_app.py, functions/ and shared/ with no `__pycache__`, run with
  PYTHONDONTWRITEBYTECODE=1 (site-packages keep theirs, as `pip install` compiles them): what a deployment
  sees when its package ships no bytecode and its mount is read-only;
- app code compiled by scripts/compile-bytecode.sh (the azd prepackage hook): the same copy, compiled with
  checked-hash pycs, then every source's mtime moved (as a zip and a remote build do), run read-only
  (PYTHONDONTWRITEBYTECODE=1): what a deployment sees with the hook;
- no bytecode at all: PYTHONDONTWRITEBYTECODE=1 and an empty PYTHONPYCACHEPREFIX.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = "import function_app"
# What the first invocations load on top (a poll, then a file's activities): where the app's own modules are now.
FIRST_WORK = ("import function_app, shared.bootstrap, shared.settings, shared.catalog, shared.services.process, "
              "shared.services.poll_sftp, shared.services.intake, shared.adapters.tables, shared.adapters.blobs, "
              "shared.adapters.ledger, shared.adapters.queues")


def _run(cwd: Path, env: dict[str, str], code: str = CODE) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True)
    return (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=7, help="runs per case (default 7)")
    parser.add_argument("--first-work", action="store_true",
                        help="time what the first poll and activities import too, not only `import function_app`")
    args = parser.parse_args(argv)
    code = FIRST_WORK if args.first_work else CODE
    base = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp2, \
            tempfile.TemporaryDirectory() as prefix:
        app, compiled = Path(tmp), Path(tmp2)
        for target in (app, compiled):
            for name in ("functions", "shared"):
                shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(ROOT / "function_app.py", target)
        (compiled / "scripts").mkdir()
        shutil.copy(ROOT / "scripts" / "compile-bytecode.sh", compiled / "scripts")
        subprocess.run(["bash", str(compiled / "scripts" / "compile-bytecode.sh")], check=True,
                       env={**base, "PYTHON": sys.executable}, stdout=subprocess.DEVNULL)
        for source in compiled.rglob("*.py"):  # a zip keeps mtimes at 2 s; a timestamp pyc would look stale
            stat = source.stat()
            os.utime(source, (stat.st_atime, stat.st_mtime + 1))
        warm = {k: v for k, v in base.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cold = {**base, "PYTHONDONTWRITEBYTECODE": "1"}
        _run(ROOT, warm, code)  # writes the bytecode the first case reads
        cases = {
            "bytecode everywhere": (ROOT, warm),
            "app code without bytecode (a deployment today)": (app, cold),
            "app code compiled by scripts/compile-bytecode.sh (a deployment with the hook)": (compiled, cold),
            "no bytecode at all": (ROOT, {**cold, "PYTHONPYCACHEPREFIX": prefix}),
        }
        print(f"cold start, whole process, {args.n} fresh interpreters per case (Python {sys.version.split()[0]}): "
              f"`{code}`\n")
        print("| bytecode | process median | p90 |\n|---|---:|---:|")
        for label, (cwd, env) in cases.items():
            times = sorted(_run(cwd, env, code) for _ in range(args.n))
            p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
            print(f"| {label} | {statistics.median(times):.0f} ms | {p90:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
