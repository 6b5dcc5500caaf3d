"""SFTP ingestion benchmark: Wharf's poll (with all its bookkeeping) against `rclone copy`, same source, same
Azurite; plus Wharf's peak RSS on a 2 GiB file.

    .venv/bin/python -m benchmarks.sftp_ingest                 # everything, 3 runs each (~5 min)
    .venv/bin/python -m benchmarks.sftp_ingest --only large --runs 5
    .venv/bin/python -m benchmarks.sftp_ingest --only rss --rss-mib 2048
    .venv/bin/python -m benchmarks.sftp_ingest --json

It starts its own OpenSSH server (tests/integration/sshd_server.py) and its own Azurite (node_modules/.bin/
azurite) on free ports, with data in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.settings import azurite_connection_string  # noqa: E402
from tests.integration.sshd_server import SshdServer, free_port  # noqa: E402

MIB = 1024 * 1024
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
RCLONE = shutil.which("rclone") or "/usr/bin/rclone"
KEY_SECRET = "bench-sftp-key"


@dataclass
class Measure:
    scenario: str
    tool: str
    runs: list[float] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    peak_rss_mib: float | None = None
    cpu: list[float] = field(default_factory=list)  # this process's CPU seconds per run (Wharf phases only)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["median_s"] = round(self.median, 3)
        out["mib_per_s"] = round(self.bytes / MIB / self.median, 1) if self.median else None
        out["files_per_s"] = round(self.files / self.median, 1) if self.median else None
        out["cpu_ms_per_file"] = (round(statistics.median(self.cpu) * 1000 / self.files, 2)
                                  if self.cpu and self.files else None)
        return out


# --- infrastructure ----------------------------------------------------------------------------------


@contextmanager
def azurite(workdir: Path) -> Iterator[str]:
    ports = [free_port() for _ in range(3)]
    location = workdir / "azurite"
    location.mkdir()
    log = (workdir / "azurite.log").open("wb")
    proc = subprocess.Popen([str(AZURITE), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
                             "--location", str(location), "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
                             "--tableHost", "127.0.0.1", "--blobPort", str(ports[0]), "--queuePort", str(ports[1]),
                             "--tablePort", str(ports[2])], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"Azurite did not start: {(workdir / 'azurite.log').read_text()}") from None
                    time.sleep(0.1)
        yield azurite_connection_string(blob=ports[0], queue=ports[1], table=ports[2])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def write_file(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(block if size > 64 * MIB else os.urandom(MIB))
        f.write(os.urandom(size % MIB))


def rclone_env(sshd: SshdServer, conn: str) -> dict[str, str]:
    known_hosts = sshd.root / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line + "\n")
    blob_endpoint = next(p.split("=", 1)[1] for p in conn.split(";") if p.startswith("BlobEndpoint="))
    return dict(os.environ, RCLONE_CONFIG_SRC_TYPE="sftp", RCLONE_CONFIG_SRC_HOST=sshd.host,
                RCLONE_CONFIG_SRC_PORT=str(sshd.port), RCLONE_CONFIG_SRC_USER=sshd.username,
                RCLONE_CONFIG_SRC_KEY_FILE=str(sshd.client_key.path),
                RCLONE_CONFIG_SRC_KNOWN_HOSTS_FILE=str(known_hosts), RCLONE_CONFIG_SRC_SHELL_TYPE="none",
                RCLONE_CONFIG_DST_TYPE="azureblob", RCLONE_CONFIG_DST_USE_EMULATOR="true",
                RCLONE_CONFIG_DST_ENDPOINT=blob_endpoint, RCLONE_CONFIG="/dev/null")


def vm_hwm_mib(pid: int | str = "self") -> float:
    """Peak RSS of one process image (VmHWM). Not ru_maxrss: Linux carries the parent's RSS at fork time
    through exec into the child's ru_maxrss, so a big parent would inflate every child's number."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def watch_peak(proc: subprocess.Popen[bytes]) -> float:
    """Wait for `proc`, sampling its VmHWM (monotonic) until it exits; returns the last sample."""
    peak = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, vm_hwm_mib(proc.pid))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return peak


def run_rclone(env: dict[str, str], source: Path, prefix: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `rclone copy` of a folder into the inbound container."""
    start = time.perf_counter()
    proc = subprocess.Popen([RCLONE, "copy", f"src:{source}", f"dst:inbound/{prefix}", "-q"], env=env)
    peak = watch_peak(proc)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"rclone failed with status {proc.returncode}")
    return elapsed, peak


# --- Wharf ---------------------------------------------------------------------------------------------


def wharf_services(conn: str, sshd: SshdServer, partner: str, folder: Path, prefix: str) -> Any:
    from shared.adapters.secrets import LocalSecrets
    from shared.bootstrap import build_services
    from shared.catalog import parse_catalog
    from shared.settings import Settings

    catalog = parse_catalog({"partners": [{"id": partner, "name": partner, "sftp": {
        "host": sshd.host, "port": sshd.port, "username": sshd.username, "auth": {"private_key_secret": KEY_SECRET},
        "host_keys": [sshd.known_hosts_line], "remote_dirs": [str(folder)], "min_age_seconds": 0,
        "post_action": "leave", "max_files_per_poll": 10000, "max_file_size_bytes": "5 GiB"}}]}, env={})
    settings = Settings(AzureWebJobsStorage=conn, WHARF_TABLE_PREFIX=prefix, POLL_QUEUE=f"poll-{prefix}",
                        LANDED_QUEUE=f"landed-{prefix}", WHARF_EVENTS_QUEUE=f"events-{prefix}")
    services = build_services(settings, catalog=catalog,
                              secrets=LocalSecrets(env={"WHARF_SECRET_BENCH_SFTP_KEY": f"@{sshd.client_key.path}"}))
    services.ensure_resources()
    return services


def run_wharf(conn: str, sshd: SshdServer, folder: Path, *, settle: float,
              concurrency: int) -> tuple[float, Any, float]:
    """Wall seconds, the poll summary and the CPU seconds this process spent on the poll (all its threads;
    Azurite and sshd are other processes)."""
    from shared.services.poll_sftp import PollOptions, poll_partner

    partner = f"b{uuid.uuid4().hex[:10]}"
    services = wharf_services(conn, sshd, partner, folder, f"t{uuid.uuid4().hex}")
    start, cpu = time.perf_counter(), time.process_time()
    summary = poll_partner(services, partner, options=PollOptions(settle_seconds=settle, concurrency=concurrency),
                           requested_by="benchmark")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if summary.status != "ok":
        raise RuntimeError(f"wharf poll failed: {summary.model_dump_json()}")
    return elapsed, summary, cpu


def run_transfer_only(conn: str, sshd: SshdServer, folder: Path, *, concurrency: int) -> tuple[float, float]:
    """Diagnostic: the same SFTP reads and staged blob uploads, without ledger, jobs, logs or messages."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from shared.adapters.blobs import BlobStoreClient
    from shared.adapters.sftp import SftpClient, load_private_key

    blobs = BlobStoreClient.from_connection_string(conn)
    pkey = load_private_key(sshd.client_key.text)
    local = threading.local()
    sessions: list[SftpClient] = []
    prefix = f"raw-{uuid.uuid4().hex[:8]}"

    def session() -> SftpClient:
        if not hasattr(local, "client"):
            local.client = SftpClient(sshd.host, sshd.username, port=sshd.port, pkey=pkey,
                                      host_keys=[sshd.known_hosts_line]).connect()
            sessions.append(local.client)
        return local.client

    start, cpu = time.perf_counter(), time.process_time()
    listing = session().list_files(str(folder))

    def copy(f: Any) -> None:
        blobs.upload_stream("inbound", f"{prefix}/{f.name}", session().read_chunks(f.path, expected=f))

    with ThreadPoolExecutor(max_workers=min(concurrency, len(listing))) as pool:
        list(pool.map(copy, listing))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    for client in sessions:
        client.close()
    return elapsed, cpu


def child_main(args: argparse.Namespace) -> None:
    """Runs in a fresh interpreter: one Wharf poll, for the parent to read its peak RSS."""
    sshd = SshdServer.__new__(SshdServer)  # attach to the parent's server: no new keys, no new process
    state = json.loads(args.child)
    sshd.root, sshd.host, sshd.port, sshd.username = Path(state["root"]), state["host"], state["port"], state["user"]
    sshd.client_keys = {}
    sshd.host_key = Path(state["host_key"])
    from tests.integration.sshd_server import ClientKey

    sshd.client_keys["ed25519"] = ClientKey("ed25519", Path(state["client_key"]), None)
    elapsed, summary, _ = run_wharf(state["conn"], sshd, Path(state["folder"]), settle=state["settle"],
                                    concurrency=state["concurrency"])
    print(json.dumps({"elapsed": elapsed, "bytes": summary.bytes, "landed": summary.landed,
                      "peak_rss_mib": vm_hwm_mib()}))


def run_wharf_child(conn: str, sshd: SshdServer, folder: Path, *, settle: float,
                    concurrency: int) -> tuple[float, float, int]:
    state = {"root": str(sshd.root), "host": sshd.host, "port": sshd.port, "user": sshd.username,
             "host_key": str(sshd.host_key), "client_key": str(sshd.client_key.path), "conn": conn,
             "folder": str(folder), "settle": settle, "concurrency": concurrency}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sftp_ingest", "--child", json.dumps(state)],
                            cwd=ROOT, stdout=subprocess.PIPE)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wharf child failed with status {proc.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return result["elapsed"], result["peak_rss_mib"], result["bytes"]


# --- scenarios -----------------------------------------------------------------------------------------


def compare(name: str, folder: Path, files: int, size: int, runs: int, conn: str, sshd: SshdServer,
            env: dict[str, str], settle: float, concurrency: int,
            tools: tuple[str, ...] = ("wharf", "rclone", "raw")) -> list[Measure]:
    wharf, rclone = Measure(name, "wharf", files=files, bytes=size), Measure(name, "rclone", files=files, bytes=size)
    raw = Measure(name, "transfer only (diagnostic)", files=files, bytes=size)
    for i in range(runs):
        # Alternate the order so neither tool always runs on a warmer cache.
        for tool in (("wharf", "rclone", "raw") if i % 2 == 0 else ("rclone", "wharf", "raw")):
            if tool not in tools:
                continue
            cpu = None
            if tool == "raw":
                elapsed, cpu = run_transfer_only(conn, sshd, folder, concurrency=concurrency)
                raw.runs.append(elapsed)
                raw.cpu.append(cpu)
            elif tool == "wharf":
                elapsed, summary, cpu = run_wharf(conn, sshd, folder, settle=settle, concurrency=concurrency)
                assert summary.landed == files and summary.bytes == size, summary
                wharf.runs.append(elapsed)
                wharf.cpu.append(cpu)
            else:
                elapsed, rss = run_rclone(env, folder, f"rclone-{uuid.uuid4().hex[:8]}")
                rclone.runs.append(elapsed)
                rclone.peak_rss_mib = max(rclone.peak_rss_mib or 0, rss)
            load = os.getloadavg()[0]
            cpu_text = f", CPU {cpu * 1000 / files:6.2f} ms/file" if cpu is not None else ""
            print(f"  {name:<14} run {i + 1}/{runs} {tool:<6} {elapsed:7.2f} s{cpu_text} (load {load:.2f})",
                  file=sys.stderr)
    return [m for m in (wharf, rclone, raw) if m.runs]


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    import paramiko

    rclone_version = subprocess.run([RCLONE, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    sshd_version = subprocess.run(["/usr/sbin/sshd", "-V"], capture_output=True, text=True).stderr.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(),
            "paramiko": paramiko.__version__, "rclone": rclone_version, "sshd": sshd_version,
            "kernel": platform.release()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["large", "small", "rss"], action="append")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--large-mib", type=int, default=512)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--small-kib", type=int, default=10)
    parser.add_argument("--rss-mib", type=int, default=2048)
    parser.add_argument("--settle", type=float, default=1.0, help="Wharf's stability interval (counted in time)")
    parser.add_argument("--concurrency", type=int, default=8, help="Wharf's files in flight (rclone: --transfers 4)")
    parser.add_argument("--tools", default="wharf,rclone,raw",
                        help="which of wharf, rclone, raw to run (e.g. `--tools wharf` under a profiler)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    only = set(args.only or ["large", "small", "rss"])
    tools = tuple(t.strip() for t in args.tools.split(",") if t.strip())
    results: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="wharf-bench-") as tmp:
        work = Path(tmp)
        sshd = SshdServer(work / "sshd").start()
        try:
            with azurite(work) as conn:
                env = rclone_env(sshd, conn)
                if "large" in only:
                    folder = sshd.folder("large")
                    write_file(folder / "large.bin", args.large_mib * MIB)
                    results += compare(f"1 x {args.large_mib} MiB", folder, 1, args.large_mib * MIB, args.runs,
                                       conn, sshd, env, args.settle, args.concurrency, tools)
                    shutil.rmtree(folder)
                if "small" in only:
                    folder = sshd.folder("small")
                    for i in range(args.small_files):
                        (folder / f"f{i:05d}.csv").write_bytes(os.urandom(args.small_kib * 1024))
                    results += compare(f"{args.small_files} x {args.small_kib} KiB", folder, args.small_files,
                                       args.small_files * args.small_kib * 1024, args.runs, conn, sshd, env,
                                       args.settle, args.concurrency, tools)
                    shutil.rmtree(folder)
                if "rss" in only:
                    folder = sshd.folder("rss")
                    (folder / "tiny.bin").write_bytes(b"x" * 1024)
                    floor_s, floor, _ = run_wharf_child(conn, sshd, folder, settle=args.settle, concurrency=1)
                    write_file(folder / "huge.bin", args.rss_mib * MIB)
                    (folder / "tiny.bin").unlink()
                    elapsed, peak, size = run_wharf_child(conn, sshd, folder, settle=args.settle, concurrency=1)
                    rss = Measure(f"1 x {args.rss_mib} MiB", "wharf (child)", [elapsed], 1, size, round(peak, 1))
                    base = Measure("1 x 1 KiB (floor: imports, clients)", "wharf (child)", [floor_s], 1, 1024,
                                   round(floor, 1))
                    rc_elapsed, rc_peak = run_rclone(env, folder, "rclone-rss")
                    results += [base, rss, Measure(rss.scenario, "rclone", [rc_elapsed], 1, size, round(rc_peak, 1))]
                    print(f"  peak RSS: wharf {peak:.0f} MiB (floor {floor:.0f} MiB), rclone {rc_peak:.0f} MiB",
                          file=sys.stderr)
                    shutil.rmtree(folder)
        finally:
            sshd.stop()
    report = {"machine": machine(), "settle_seconds": args.settle, "concurrency": args.concurrency,
              "results": [r.row() for r in results]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def format_table(report: dict[str, Any]) -> str:
    rows = report["results"]
    lines = ["| scenario | tool | runs (s) | median | MiB/s | files/s | ratio vs rclone | CPU ms/file | peak RSS |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    rclone = {r["scenario"]: r["median_s"] for r in rows if r["tool"] == "rclone"}
    for r in rows:
        ratio = ""
        if r["tool"] != "rclone" and r["scenario"] in rclone and r["median_s"]:
            ratio = f"{rclone[r['scenario']] / r['median_s']:.2f}x"
        runs = ", ".join(f"{v:.2f}" for v in r["runs"])
        rss = f"{r['peak_rss_mib']:.0f} MiB" if r["peak_rss_mib"] else ""
        cpu = r.get("cpu_ms_per_file") or ""
        lines.append(f"| {r['scenario']} | {r['tool']} | {runs} | {r['median_s']:.2f} s | {r['mib_per_s'] or ''} | "
                     f"{r['files_per_s'] or ''} | {ratio} | {cpu} | {rss} |")
    m = report["machine"]
    lines.append("")
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB RAM, Linux {m['kernel']}; "
                 f"Python {m['python']}, paramiko {m['paramiko']}, {m['rclone']}, {m['sshd']}. Wharf settle "
                 f"interval {report['settle_seconds']} s (included), concurrency {report['concurrency']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
