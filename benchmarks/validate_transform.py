"""Benchmark: CSV validation + CSV->JSON Lines against a plain csv.reader/csv.writer copy, in child processes.

    python -m benchmarks.validate_transform                 # 1 GiB input (and 100 MiB for the RSS comparison)
    python -m benchmarks.validate_transform --size-mb 100   # quick run
    python -m benchmarks.validate_transform --json          # machine-readable results

Generates a CSV of 10 mixed-type columns into a temporary folder (removed afterwards), then runs each mode in a
fresh child process `--runs` times (median reported): wall time, CPU time, rows/s, MB/s, peak RSS of the child
(`os.wait4` rusage: per child, what RUSAGE_CHILDREN aggregates), and the speed ratio to the baseline.
The children read the file in 4 MiB chunks (as BlobStore.open_read yields) and write their output to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
CHUNK = 4 * MIB

HEADER = ["id", "amount", "booked", "status", "customer", "code", "qty", "currency", "note", "rate"]

RULE: dict[str, Any] = {
    "match": "*.csv",
    "type": "csv",
    "encoding": "auto",
    "max_errors": 100,
    "csv": {
        "delimiter": ",",
        "header": True,
        "required_columns": ["id", "amount", "booked", "status"],
        "columns": {
            "id": {"type": "integer", "required": True},
            "amount": {"type": "decimal", "required": True},
            "booked": {"type": "date", "format": "%Y-%m-%d", "required": True},
            "status": {"type": "enum", "values": ["NEW", "OPEN", "HOLD", "CLOSED", "CANCELLED"], "required": True},
            "customer": {"type": "string", "max_length": 60, "required": True},
            "code": {"type": "regex", "pattern": r"[A-Z]{2}-\d{6}"},
            "qty": {"type": "integer"},
            "currency": {"type": "enum", "values": ["EUR", "USD", "GBP", "CHF"]},
            "note": {"type": "string", "max_length": 200},
            "rate": {"type": "decimal"},
        },
    },
    "transform": {"name": "csv_to_jsonl", "options": {}},
}

MODES = {
    "baseline": "csv.reader + csv.writer, no validation (the bar)",
    "validate": "Wharf validate_stream (all column rules)",
    "validate+transform": "Wharf validate_and_transform csv_to_jsonl (one pass, validation on)",
    "transform": "Wharf csv_to_jsonl alone (typed conversion, no error collection)",
    "validate,transform": "validate_stream then csv_to_jsonl: two passes, as two activities",
}


# ---------------------------------------------------------------------------------------------------------
# Data


def generate(path: Path, size_bytes: int, seed: int = 7) -> int:
    """Write a CSV of about `size_bytes`; returns the number of data rows. Deterministic for a seed."""
    rng = random.Random(seed)
    first_names = ["Anna", "Björn", "Chloé", "Dmitri", "Eva", "François", "Greta", "Hugo", "Inès", "Jürgen",
                   "Kofi", "Lena", "Marta", "Noël", "Olga", "Pablo", "Renée", "Søren", "Tomás", "Zoë"]
    companies = ["Logistics", "Trading", "Foods", "Textiles", "Parts", "Freight", "Pharma", "Retail"]
    notes = ["", "", "", "standard delivery", "call before delivery", 'deliver to "dock 3", gate B',
             "fragile, handle with care", "partial shipment\nremainder next week", "pay within 30 days"]
    base = date(2015, 1, 1)
    dates = [(base + timedelta(days=d)).isoformat() for d in range(0, 4000)]
    statuses = ["NEW", "OPEN", "HOLD", "CLOSED", "CANCELLED"]
    currencies = ["EUR", "USD", "GBP", "CHF"]
    letters = [a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]

    def quote(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value

    rows = 0
    written = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(HEADER) + "\r\n")
        while written < size_bytes:
            lines = []
            for _ in range(5000):
                rows += 1
                customer = f"{rng.choice(first_names)} {rng.choice(companies)} {rng.randrange(1, 5000)}"
                lines.append(
                    f"{rows},{rng.randrange(0, 10_000_000) / 100:.2f},{rng.choice(dates)},{rng.choice(statuses)},"
                    f"{customer},{rng.choice(letters)}-{rng.randrange(0, 1_000_000):06d},{rng.randrange(-20, 500)},"
                    f"{rng.choice(currencies)},{quote(rng.choice(notes))},{rng.random() * 2:.6f}\r\n")
            block = "".join(lines)
            out.write(block)
            written += len(block.encode("utf-8"))
    return rows


# ---------------------------------------------------------------------------------------------------------
# Children


def _chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _child(mode: str, source: str, target: str) -> dict[str, Any]:
    import csv

    if mode == "baseline":
        rows = 0
        with open(source, encoding="utf-8", newline="") as f, open(target, "w", encoding="utf-8", newline="") as o:
            reader = csv.reader(f)
            writer = csv.writer(o)
            for row in reader:
                writer.writerow(row)
                rows += 1
        return {"rows": rows - 1}

    from shared.services.transforms import get_transform, validate_and_transform
    from shared.services.validate import validate_stream

    size = os.path.getsize(source)
    name = os.path.basename(source)
    result: dict[str, Any] = {}
    if mode in ("validate", "validate,transform"):
        report = validate_stream(_chunks(source), RULE, file_name=name, size=size)
        result.update(rows=report.rows, valid=report.valid, errors=report.error_count)
    if mode in ("transform", "validate,transform"):
        transform = get_transform("csv_to_jsonl")
        with open(target, "wb") as o:
            for chunk in transform.run(_chunks(source), {}, RULE):
                o.write(chunk)
        result["rows"] = transform.rows
    if mode == "validate+transform":
        run = validate_and_transform(_chunks(source), RULE, file_name=name, size=size)
        with open(target, "wb") as o:
            for chunk in run.chunks:
                o.write(chunk)
        result.update(rows=run.rows, valid=run.report.valid, errors=run.report.error_count)
    return result


def _run_child(mode: str, source: Path, target: Path) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.validate_transform", "--child", mode,
                             str(source), str(target)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed with {proc.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result.update(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mib=usage.ru_maxrss / 1024)
    target.unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------------------------------------------
# Driver


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def measure(size_mb: int, runs: int, modes: list[str], workdir: Path) -> dict[str, Any]:
    source = workdir / f"orders-{size_mb}mb.csv"
    started = time.perf_counter()
    rows = generate(source, size_mb * MIB)
    size = source.stat().st_size
    print(f"# {size_mb} MiB: {rows} rows, {size / MIB:.0f} MiB generated in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for i in range(runs):
        for mode in modes:  # interleaved, so background load hits every mode alike
            sample = _run_child(mode, source, workdir / "out.tmp")
            if sample["rows"] != rows:
                raise RuntimeError(f"{mode}: {sample['rows']} rows, expected {rows}")
            if sample.get("valid") is False:
                raise RuntimeError(f"{mode}: the generated file did not validate ({sample.get('errors')} errors)")
            samples[mode].append(sample)
            print(f"  run {i + 1} {mode:20s} {sample['wall']:7.2f} s  cpu {sample['cpu']:7.2f} s  "
                  f"rss {sample['rss_mib']:6.1f} MiB", file=sys.stderr)
    source.unlink()
    result: dict[str, Any] = {"size_mb": round(size / MIB), "rows": rows, "modes": {}}
    base_wall = statistics.median(s["wall"] for s in samples["baseline"]) if "baseline" in samples else None
    base_cpu = statistics.median(s["cpu"] for s in samples["baseline"]) if "baseline" in samples else None
    for mode, items in samples.items():
        wall = statistics.median(s["wall"] for s in items)
        cpu = statistics.median(s["cpu"] for s in items)
        result["modes"][mode] = {
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rows_per_s": round(rows / wall),
            "mb_per_s": round(size / MIB / wall, 1), "rss_mib": round(max(s["rss_mib"] for s in items), 1),
            "speed_vs_baseline": round(base_wall / wall, 2) if base_wall else None,
            "cpu_speed_vs_baseline": round(base_cpu / cpu, 2) if base_cpu else None,
        }
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| input | mode | wall s | CPU s | rows/s | MB/s | peak RSS MiB | speed vs baseline (wall / CPU) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        for mode, m in result["modes"].items():
            ratio = f"{m['speed_vs_baseline']:.2f}x / {m['cpu_speed_vs_baseline']:.2f}x" \
                if m["speed_vs_baseline"] else ""
            lines.append(f"| {result['size_mb']} MiB | {mode} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} | "
                         f"{m['rows_per_s']:,} | {m['mb_per_s']:.1f} | {m['rss_mib']:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="input size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode; the median is reported")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of: {', '.join(MODES)}")
    parser.add_argument("--no-rss-compare", action="store_true", help="skip the extra 100 MiB run")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    modes = [m for m in MODES if m in args.modes.split(",")] if args.modes != ",".join(MODES) else list(MODES)
    if "baseline" not in modes:
        modes.insert(0, "baseline")
    sizes = [args.size_mb] if args.no_rss_compare or args.size_mb <= 100 else [100, args.size_mb]
    workdir = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    try:
        results = [measure(size, args.runs, modes, workdir) for size in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info = machine()
    if args.json:
        print(json.dumps({"machine": info, "results": results}, indent=2))
    else:
        print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}, {info['date']}")
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
