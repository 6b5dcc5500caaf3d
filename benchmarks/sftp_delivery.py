"""SFTP delivery benchmark (issue 15): Wharf's outbound SFTP delivery (`deliver_sftp`, with its delivery record,
temporary name, rename, size and SHA-256 checks) against `rclone copy` of the same blob from the same Azurite to
the same SFTP server, alternating in one run; plus Wharf's peak RSS on a 2 GiB delivery.

    .venv/bin/python -m benchmarks.sftp_delivery                    # 1 x 512 MiB, 3 runs each
    .venv/bin/python -m benchmarks.sftp_delivery --mib 128 --runs 5
    .venv/bin/python -m benchmarks.sftp_delivery --rss-gib 2        # one 2 GiB delivery, the child's peak RSS
    .venv/bin/python -m benchmarks.sftp_delivery --paramiko --baseline ../main  # + lean off, + main's code
    .venv/bin/python -m benchmarks.sftp_delivery --json

Every Wharf run is a fresh interpreter (a child process): its time is the `deliver_sftp` call alone (imports and
client construction excluded), its peak RSS the child's own VmHWM from /proc/self/status. rclone's time is the
wall time of the `rclone copy` process. It starts its own OpenSSH server (tests/integration/sshd_server.py) and
its own Azurite (tests/integration/azurite_server.py) on free loopback ports, with data in a temporary folder
that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sftp_ingest import MIB, RCLONE, machine, vm_hwm_mib, watch_peak  # noqa: E402
from tests.integration.azurite_server import PrivateAzurite  # noqa: E402
from tests.integration.sshd_server import ClientKey, SshdServer  # noqa: E402

KEY_SECRET = "bench-sftp-key"
CONTAINER = "staging"


def seed_blob(conn: str, size: int) -> dict[str, Any]:
    """Upload `size` random-looking bytes into the staging container; returns a job output for it."""
    from shared.adapters.blobs import BlobStoreClient

    blobs = BlobStoreClient.from_connection_string(conn)
    blobs.ensure_containers([CONTAINER])
    block = os.urandom(4 * MIB)

    def chunks() -> Any:
        left = size
        while left > 0:
            n = min(left, len(block))
            yield block[:n]
            left -= n

    path = f"bench/{uuid.uuid4().hex[:10]}/payload.bin"
    info = blobs.upload_stream(CONTAINER, path, chunks())
    return {"container": CONTAINER, "path": info.path, "name": "payload.bin", "bytes": info.size,
            "sha256": info.sha256}


def rclone_env(sshd: SshdServer, conn: str) -> dict[str, str]:
    """`src:` is Azurite's blob service (the emulator account and key), `dst:` the private sshd."""
    known_hosts = sshd.root / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line + "\n")
    blob_endpoint = next(p.split("=", 1)[1] for p in conn.split(";") if p.startswith("BlobEndpoint="))
    return dict(os.environ, RCLONE_CONFIG_SRC_TYPE="azureblob", RCLONE_CONFIG_SRC_USE_EMULATOR="true",
                RCLONE_CONFIG_SRC_ENDPOINT=blob_endpoint,
                RCLONE_CONFIG_DST_TYPE="sftp", RCLONE_CONFIG_DST_HOST=sshd.host,
                RCLONE_CONFIG_DST_PORT=str(sshd.port), RCLONE_CONFIG_DST_USER=sshd.username,
                RCLONE_CONFIG_DST_KEY_FILE=str(sshd.client_key.path),
                RCLONE_CONFIG_DST_KNOWN_HOSTS_FILE=str(known_hosts), RCLONE_CONFIG_DST_SHELL_TYPE="none",
                RCLONE_CONFIG="/dev/null")


def run_rclone(env: dict[str, str], output: dict[str, Any], folder: Path) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) and CPU seconds (user + system, from the reaped child's rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([RCLONE, "copy", f"src:{output['container']}/{output['path']}", f"dst:{folder}", "-q"],
                            env=env)
    peak = watch_peak(proc)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"rclone failed with status {proc.returncode}")
    landed = folder / output["name"]
    if landed.stat().st_size != output["bytes"]:
        raise RuntimeError(f"rclone delivered {landed.stat().st_size} bytes, expected {output['bytes']}")
    return elapsed, peak, cpu


# --- Wharf (child process) ------------------------------------------------------------------------------


def child_main(state: dict[str, Any]) -> None:
    """A fresh interpreter: one real `deliver_sftp` of the seeded blob; prints its time and this process's VmHWM."""
    from shared.adapters.secrets import LocalSecrets
    from shared.bootstrap import build_services
    from shared.catalog import parse_catalog
    from shared.domain.ids import new_job_id
    from shared.domain.jobs import EventType
    from shared.services.deliver import DeliveryOptions, deliver_sftp
    from shared.settings import Settings

    sshd = SshdServer.__new__(SshdServer)  # attach to the parent's server: no new keys, no new process
    sshd.root, sshd.host, sshd.port, sshd.username = Path(state["root"]), state["host"], state["port"], state["user"]
    sshd.host_key = Path(state["host_key"])
    sshd.client_keys = {"ed25519": ClientKey("ed25519", Path(state["client_key"]), None)}
    tag = uuid.uuid4().hex[:10]
    src, dst = f"src{tag}", f"dst{tag}"
    block = {"host": sshd.host, "port": sshd.port, "username": sshd.username,
             "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [sshd.known_hosts_line],
             "remote_dirs": [f"/unused-{tag}"], "outbound_dir": state["folder"]}
    route = {"name": "out", "default": True,
             "destinations": [{"kind": "sftp", "partner": dst, "on_exists": "overwrite"}]}
    catalog = parse_catalog({"partners": [{"id": src, "name": "source", "routes": [route]},
                                          {"id": dst, "name": "target", "sftp": block}]}, env={})
    settings = Settings(AzureWebJobsStorage=state["conn"], WHARF_TABLE_PREFIX=f"t{tag}", POLL_QUEUE=f"poll-{tag}",
                        LANDED_QUEUE=f"landed-{tag}", WHARF_EVENTS_QUEUE=f"events-{tag}",
                        TRANSFER_QUEUE=f"transfer-{tag}")
    services = build_services(settings, catalog=catalog, secrets=LocalSecrets(
        env={"WHARF_SECRET_BENCH_SFTP_KEY": f"@{state['client_key']}"}))
    services.ensure_resources()
    job_id = new_job_id()
    services.jobs.append(job_id, EventType.CREATED, {"partner": src, "file_name": state["output"]["name"],
                                                     "source": "benchmark"})
    job = services.jobs.get_job(job_id)
    dest = catalog.get(src).routes[0].destinations[0].model_dump(mode="json")
    ref = {"job_id": job_id, "partner": src, "route": "out", "index": 0}
    profile = None
    if state.get("profile"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    start, cpu = time.perf_counter(), time.process_time()
    result = deliver_sftp(services, job, ref, state["output"], dest, opts=DeliveryOptions(retry_attempts=1))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if profile is not None:
        import pstats

        profile.disable()
        stats = pstats.Stats(profile, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(35)
    if result["delivery"] != "SENT" or result["bytes"] != state["output"]["bytes"]:
        raise RuntimeError(f"delivery did not complete: {result}")
    print(json.dumps({"elapsed": elapsed, "cpu": cpu, "bytes": result["bytes"], "verified": result["verified"],
                      "peak_rss_mib": vm_hwm_mib()}))


def run_wharf_child(conn: str, sshd: SshdServer, output: dict[str, Any], folder: Path,
                    profile: bool = False, env: dict[str, str] | None = None,
                    tree: Path = ROOT) -> dict[str, Any]:
    """One delivery in a fresh interpreter; `tree` is the checkout whose code it runs (another one's for
    --baseline), `env` added to this environment."""
    state = {"root": str(sshd.root), "host": sshd.host, "port": sshd.port, "user": sshd.username,
             "host_key": str(sshd.host_key), "client_key": str(sshd.client_key.path), "conn": conn,
             "folder": str(folder), "output": output, "profile": profile}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sftp_delivery", "--child", json.dumps(state)],
                          cwd=tree, stdout=subprocess.PIPE, timeout=1800,
                          env={**os.environ, **(env or {}), **({"PYTHONPATH": str(tree)} if tree != ROOT else {})})
    if proc.returncode != 0:
        raise RuntimeError(f"wharf child failed with status {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    landed = folder / output["name"]
    if landed.stat().st_size != output["bytes"]:
        raise RuntimeError(f"wharf delivered {landed.stat().st_size} bytes, expected {output['bytes']}")
    return result


def clear(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=512, help="size of the delivered blob (default 512 MiB)")
    parser.add_argument("--runs", type=int, help="runs of each tool, alternating (default 3; 1 with --rss-gib)")
    parser.add_argument("--rss-gib", type=float, help="instead: deliver one blob of this many GiB once, report "
                                                      "Wharf's peak RSS (and rclone's)")
    parser.add_argument("--profile", action="store_true", help="cProfile one Wharf delivery (to stderr)")
    parser.add_argument("--paramiko", action="store_true",
                        help="also run Wharf with WHARF_SFTP_LEAN_WRITE=false (paramiko's write path), alternating")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="also run the Wharf of another checkout (e.g. main's), alternating in the same run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    size = int(args.rss_gib * 1024 * MIB) if args.rss_gib else args.mib * MIB
    runs = args.runs or (1 if args.rss_gib else 3)
    wharf: list[dict[str, Any]] = []
    variants: dict[str, tuple[dict[str, str], Path]] = {}
    if args.paramiko:
        variants["wharf_paramiko"] = ({"WHARF_SFTP_LEAN_WRITE": "false"}, ROOT)
    if args.baseline:
        variants["wharf_baseline"] = ({}, args.baseline.resolve())
    extra: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    rclone: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="wharf-bench-delivery-") as tmp:
        work = Path(tmp)
        sshd = SshdServer(work / "sshd").start()
        azurite = PrivateAzurite(work / "azurite")
        try:
            azurite.start()
            conn = azurite.connection_string
            env = rclone_env(sshd, conn)
            t0 = time.perf_counter()
            output = seed_blob(conn, size)
            print(f"  seeded {size // MIB} MiB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            folder = sshd.folder("outbound")
            for i in range(runs):
                # Alternate the order so neither tool always runs on a warmer cache.
                tools = ("wharf", *variants, "rclone")
                for tool in tools if i % 2 == 0 else tools[::-1]:
                    if tool != "rclone":
                        child_env, tree = variants.get(tool, ({}, ROOT))
                        r = run_wharf_child(conn, sshd, output, folder, profile=args.profile, env=child_env,
                                            tree=tree)
                        (wharf if tool == "wharf" else extra[tool]).append(r)
                        text = f"{r['elapsed']:7.2f} s, CPU {r['cpu']:.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
                    else:
                        elapsed, peak, cpu = run_rclone(env, output, folder)
                        rclone.append((elapsed, peak, cpu))
                        text = f"{elapsed:7.2f} s, CPU {cpu:.2f} s, peak RSS {peak:.0f} MiB"
                    clear(folder)
                    print(f"  run {i + 1}/{runs} {tool:<6} {text} (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
        finally:
            azurite.stop()
            sshd.stop()
    w_med = statistics.median(r["elapsed"] for r in wharf)
    r_med = statistics.median(e for e, _, _ in rclone)
    report = {"machine": machine(), "mib": size // MIB, "runs": runs,
              "wharf": {"runs_s": [round(r["elapsed"], 2) for r in wharf], "median_s": round(w_med, 2),
                        "mib_per_s": round(size / MIB / w_med, 1), "cpu_s": [round(r["cpu"], 2) for r in wharf],
                        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in wharf), 1),
                        "verified": wharf[0]["verified"]},
              "rclone": {"runs_s": [round(e, 2) for e, _, _ in rclone], "median_s": round(r_med, 2),
                         "mib_per_s": round(size / MIB / r_med, 1), "cpu_s": [round(c, 2) for _, _, c in rclone],
                         "peak_rss_mib": round(max(p for _, p, _ in rclone), 1)},
              "ratio_rclone_over_wharf": round(r_med / w_med, 2)}
    for name, results in extra.items():
        p_med = statistics.median(r["elapsed"] for r in results)
        report[name] = {
            "runs_s": [round(r["elapsed"], 2) for r in results], "median_s": round(p_med, 2),
            "mib_per_s": round(size / MIB / p_med, 1), "cpu_s": [round(r["cpu"], 2) for r in results],
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in results), 1),
            "ratio_rclone_over_wharf": round(r_med / p_med, 2)}
    if args.baseline:
        report["baseline_tree"] = str(args.baseline)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def format_table(report: dict[str, Any]) -> str:
    lines = ["| scenario | tool | runs (s) | median | MiB/s | ratio (rclone / Wharf) | CPU median | peak RSS |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for tool in ("wharf", "wharf_paramiko", "wharf_baseline", "rclone"):
        if tool not in report:
            continue
        r = report[tool]
        ratio = "" if tool == "rclone" else \
            f"{r.get('ratio_rclone_over_wharf', report['ratio_rclone_over_wharf']):.2f}x"
        lines.append(f"| 1 x {report['mib']} MiB | {tool} | {', '.join(f'{v:.2f}' for v in r['runs_s'])} | "
                     f"{r['median_s']:.2f} s | {r['mib_per_s']} | {ratio} | {statistics.median(r['cpu_s']):.2f} s | "
                     f"{r['peak_rss_mib']:.0f} MiB |")
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB RAM, Linux {m['kernel']}; "
                  f"Python {m['python']}, paramiko {m['paramiko']}, {m['rclone']}, {m['sshd']}. "
                  f"Wharf verified: {report['wharf']['verified']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
