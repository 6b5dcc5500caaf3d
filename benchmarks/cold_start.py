"""Cold start: how long `import function_app` takes in a fresh process, against the floor any v2 app pays.

    python benchmarks/cold_start.py                 # 15 runs each, a table, exit 1 if over budget
    python benchmarks/cold_start.py -n 30 --json    # machine-readable
    python benchmarks/cold_start.py --top 15        # also the 15 slowest imports (python -X importtime)

Each run is a new interpreter (nothing cached in memory but the OS page cache; one warm-up run first). Two
figures per run: the wall time of the whole process (interpreter start-up included) and the import alone,
timed inside the child. The baseline, `import azure.functions, azure.durable_functions`, is what every
Python v2 Durable app imports before its own code; runs alternate between the two so drift hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "import function_app"
# HTTP streams (decision 192) on by default; the same app with them off, measured in the same run.
CLASSIC = {"WHARF_HTTP_STREAMS": "0"}
BASELINE = "import azure.functions, azure.durable_functions"
BUDGET_SECONDS = 1.0  # absolute, informational: this figure moves with the machine
# The budget on Wharf's own imports: median `import function_app` with WHARF_HTTP_STREAMS=0 at most 1.5x the same
# run's baseline. HTTP streams add FastAPI, which the worker's HTTP server needs (decision 192): reported apart.
MAX_RATIO = 1.5
# Imports a cold start must not pay (they belong inside the functions that use them).
HEAVY = ("azure.monitor.opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter", "paramiko", "msgraph",
         "kiota_abstractions", "azure.identity", "azure.keyvault", "azure.servicebus", "yaml", "azure.storage",
         "azure.data", "azurefunctions.extensions.bindings", "pydantic")

_CHILD = """
import sys, time
t = time.perf_counter()
{stmt}
elapsed = time.perf_counter() - t
heavy = sorted(p for p in {heavy!r} if any(m == p or m.startswith(p + ".") for m in sys.modules))
print(repr((elapsed, heavy)))
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with bytecode caches, as the worker runs
    return env


def run_once(stmt: str, extra_env: dict[str, str] | None = None) -> tuple[float, float, list[str]]:
    """(process wall seconds, import seconds inside the child, heavy modules loaded)."""
    code = _CHILD.format(stmt=stmt, heavy=HEAVY)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(extra_env), capture_output=True, text=True,
                         check=False, timeout=120)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"`{stmt}` failed:\n{out.stderr}")
    elapsed, heavy = eval(out.stdout.strip().splitlines()[-1], {})  # noqa: S307 - our own child's repr()
    return wall, float(elapsed), list(heavy)


def _package(name: str) -> str | None:
    """`pydantic_settings.main` -> `pydantic_settings`; namespace packages keep two parts (`azure.storage`)."""
    parts = name.split(".")
    if parts[0] in ("azure", "opentelemetry", "google", "microsoft"):
        depth = 3 if parts[:2] in (["azure", "storage"], ["azure", "data"], ["azure", "keyvault"]) else 2
        return ".".join(parts[:depth]) if len(parts) >= depth else None
    return parts[0]


def top_imports(stmt: str, count: int) -> list[tuple[float, str]]:
    """Packages by cumulative import time (ms) under `python -X importtime`: where a cold start goes.

    A package imported inside another one counts in both (the outer figure is what removing the outer saves).
    """
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, check=False, timeout=120)
    best: dict[str, float] = {}
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| *(\S+)", line)
        if not m:
            continue
        name = m.group(2)
        key = name if name.startswith(("functions", "shared", "function_app")) else _package(name)
        if key:
            best[key] = max(best.get(key, 0.0), int(m.group(1)) / 1000)
    return sorted(((ms, name) for name, ms in best.items()), reverse=True)[:count]


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0], "max": ordered[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--top", type=int, default=0, help="also list the N slowest imports of function_app")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds (median import), shown only")
    parser.add_argument("--max-ratio", type=float, default=MAX_RATIO,
                        help="fail when the median import exceeds this multiple of the baseline's (default 1.5)")
    args = parser.parse_args(argv)

    run_once(APP)  # warm the page cache and write bytecode, like any second start of a worker
    run_once(BASELINE)
    app: list[tuple[float, float, list[str]]] = []
    base: list[tuple[float, float, list[str]]] = []
    classic: list[tuple[float, float, list[str]]] = []
    for _ in range(args.runs):
        app.append(run_once(APP))
        base.append(run_once(BASELINE))
        classic.append(run_once(APP, CLASSIC))

    result = {
        "runs": args.runs,
        "python": sys.version.split()[0],
        "app": {"process": _stats([r[0] for r in app]), "import": _stats([r[1] for r in app])},
        "baseline": {"process": _stats([r[0] for r in base]), "import": _stats([r[1] for r in base])},
        "classic": {"process": _stats([r[0] for r in classic]), "import": _stats([r[1] for r in classic])},
        "heavy_modules_loaded": app[-1][2],
        "budget_seconds": args.budget,
        "max_ratio": args.max_ratio,
    }
    result["app_minus_baseline_import_median"] = (result["app"]["import"]["median"]
                                                  - result["baseline"]["import"]["median"])
    if args.top:
        result["top_imports_ms"] = top_imports(APP, args.top)
    result["ratio_import_median"] = result["app"]["import"]["median"] / result["baseline"]["import"]["median"]
    result["ratio_process_median"] = result["app"]["process"]["median"] / result["baseline"]["process"]["median"]
    result["ratio_classic_import_median"] = (result["classic"]["import"]["median"]
                                             / result["baseline"]["import"]["median"])
    result["streams_import_ms"] = (result["app"]["import"]["median"] - result["classic"]["import"]["median"]) * 1000
    over = result["ratio_classic_import_median"] > args.max_ratio
    over_budget = result["app"]["import"]["median"] > args.budget

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        ms = 1000
        print(f"cold start, {args.runs} fresh processes each (Python {result['python']})\n")
        print("| what | import median | import p90 | process median | process p90 |")
        print("|---|---:|---:|---:|---:|")
        for label, key, stmt in (("function_app", "app", APP), ("WHARF_HTTP_STREAMS=0", "classic", APP),
                                 ("baseline", "baseline", BASELINE)):
            r = result[key]
            print(f"| `{stmt}` ({label}) | {r['import']['median'] * ms:.0f} ms | {r['import']['p90'] * ms:.0f} ms "
                  f"| {r['process']['median'] * ms:.0f} ms | {r['process']['p90'] * ms:.0f} ms |")
        print(f"\nfunction_app costs {result['app_minus_baseline_import_median'] * ms:.0f} ms over the baseline "
              f"(median import): {result['ratio_import_median']:.2f}x the baseline (process "
              f"{result['ratio_process_median']:.2f}x); absolute {args.budget * ms:.0f} ms: "
              f"{'over' if over_budget else 'under'} on this machine")
        print(f"HTTP streams cost {result['streams_import_ms']:.0f} ms of it (median import, against "
              f"WHARF_HTTP_STREAMS=0); Wharf's own imports (streams off): {result['ratio_classic_import_median']:.2f}x "
              f"the baseline, budget {args.max_ratio:g}x: {'OVER' if over else 'ok'}")
        print(f"heavy modules loaded at import: {', '.join(result['heavy_modules_loaded']) or 'none'}")
        if args.top:
            print("\nslowest imports (cumulative, ms):")
            for cost, name in result["top_imports_ms"]:
                print(f"  {cost:8.1f}  {name}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
