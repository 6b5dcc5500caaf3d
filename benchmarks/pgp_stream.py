"""OpenPGP streaming: Wharf's decrypt and encrypt of a large file against the `gpg` command on the same file.

Each measurement runs in a fresh child process that reports its wall time, its own peak RSS and its children's
(gpg, gpg-agent) peak RSS, so Wharf's Python process is shown to stay flat while the file is 1 GiB. Keys: the
stored Ed25519/Cv25519 and RSA 3072 test keys (tests/data/pgp). Wharf reads the file in 4 MiB chunks (as a blob
stream), gpg reads it from disk.

    .venv/bin/python benchmarks/pgp_stream.py                  # 1 GiB, ed25519, 3 runs each
    .venv/bin/python benchmarks/pgp_stream.py --mib 256 --kind rsa3072 -n 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time


def hwm_mib():
    # VmHWM: this process's own peak RSS (ru_maxrss would include the parent's at fork, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0

from pathlib import Path
sys.path.insert(0, sys.argv[1])
from shared.adapters.pgp import Keyring, decrypt_to_file, encrypt_to_file, file_chunks
from tests.gpg_home import PASSPHRASE, stored_key
op, kind, src = sys.argv[2], sys.argv[3], Path(sys.argv[4])
wharf, bank = stored_key(f"wharf-{kind}"), stored_key(f"bank-{kind}")
started = time.perf_counter()
with Keyring() as ring:
    if op == "decrypt":
        r = decrypt_to_file(file_chunks(src, 4 * 1024 * 1024), ring, private_key=wharf.secret,
                            passphrase=PASSPHRASE, signer_keys=bank.public, verify="required")
        assert r.signature == "valid", r
        size = r.size
    else:
        r = encrypt_to_file(file_chunks(src, 4 * 1024 * 1024), ring, recipient_keys=bank.public,
                            signer_key=wharf.secret, passphrase=PASSPHRASE)
        size = r.size
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "rss_mib": hwm_mib(),
                  "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "bytes": size}))
"""

GPG_CHILD = r"""
import json, resource, subprocess, sys, time
args = sys.argv[1:]
started = time.perf_counter()
subprocess.run(args, check=True, capture_output=True)
print(json.dumps({"seconds": time.perf_counter() - started, "rss_mib": 0.0,
                  "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _run(code: str, *args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--kind", choices=["ed25519", "rsa3072"], default="ed25519")
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    from tests.gpg_home import PASSPHRASE, GpgHome, stored_key

    wharf, bank = stored_key(f"wharf-{a.kind}"), stored_key(f"bank-{a.kind}")
    home = GpgHome(wharf, bank)  # the baseline gpg: holds both secret keys
    work = Path(tempfile.mkdtemp(prefix="wharf-bench-pgp-"))
    try:
        plain = work / "plain.bin"
        with plain.open("wb") as fh:  # compressible-ish CSV-like rows, not all zeros
            row = b"".join(b"%08d,DE89370400440532013000,%d.50,some text here\n" % (i, i) for i in range(16384))
            for _ in range(a.mib * 1024 * 1024 // len(row) + 1):
                fh.write(row)
            fh.truncate(a.mib * 1024 * 1024)
        message = work / "message.pgp"  # what a partner sends: for Wharf, signed by the bank
        home.gpg("--passphrase", PASSPHRASE, "-u", bank.fingerprint, "-r", wharf.fingerprint, "-o", str(message),
                 "--sign", "--encrypt", str(plain))
        gpg = ["gpg", "--homedir", str(home.home), "--batch", "--yes", "--pinentry-mode", "loopback",
               "--passphrase", PASSPHRASE, "--trust-model", "always"]
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in ("wharf decrypt", "gpg decrypt", "wharf encrypt",
                                                                    "gpg encrypt")}
        for _ in range(a.n):  # alternate, so load on the shared machine hits both alike
            rows["wharf decrypt"].append(_run(CHILD, str(ROOT), "decrypt", a.kind, str(message)))
            rows["gpg decrypt"].append(_run(GPG_CHILD, *gpg, "-o", str(work / "out.bin"), "--decrypt",
                                            str(message)))
            rows["wharf encrypt"].append(_run(CHILD, str(ROOT), "encrypt", a.kind, str(plain)))
            rows["gpg encrypt"].append(_run(GPG_CHILD, *gpg, "-u", wharf.fingerprint, "-r", bank.fingerprint,
                                            "-o", str(work / "enc.pgp"), "--sign", "--encrypt", str(plain)))
            (work / "out.bin").unlink(missing_ok=True)
            (work / "enc.pgp").unlink(missing_ok=True)
        summary = {name: {"median_s": statistics.median(r["seconds"] for r in runs),
                          "python_peak_rss_mib": max(r["rss_mib"] for r in runs),
                          "gpg_peak_rss_mib": max(r["children_rss_mib"] for r in runs)}
                   for name, runs in rows.items()}
        for op in ("decrypt", "encrypt"):
            summary[f"wharf {op}"]["vs_gpg"] = summary[f"wharf {op}"]["median_s"] / summary[f"gpg {op}"]["median_s"]
        result = {"file_mib": a.mib, "message_mib": message.stat().st_size / 2**20, "kind": a.kind, "runs": a.n,
                  "load": os.getloadavg()[0], "results": summary}
        if a.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{a.mib} MiB file, {a.kind}, {a.n} run(s), load {result['load']:.1f}")
            for name, s in summary.items():
                ratio = f"  x{s['vs_gpg']:.2f} of gpg" if "vs_gpg" in s else ""
                print(f"  {name:14} {s['median_s']:7.2f} s  python peak RSS {s['python_peak_rss_mib']:6.1f} MiB  "
                      f"gpg peak RSS {s['gpg_peak_rss_mib']:6.1f} MiB{ratio}")
    finally:
        home.close()
        for p in work.iterdir():
            p.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
