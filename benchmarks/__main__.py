"""`python -m benchmarks` (make bench): the quick set; each benchmark also runs on its own with more options."""

from __future__ import annotations

import subprocess
import sys

QUICK = [
    ["benchmarks/cold_start.py", "-n", "9"],
    ["-m", "benchmarks.e2e_latency", "-n", "10"],
    ["-m", "benchmarks.validate_transform", "--size-mb", "100"],
    ["-m", "benchmarks.mail_attachment", "--size-mb", "50"],
    ["-m", "benchmarks.sftp_ingest", "--only", "large"],
    ["-m", "benchmarks.sftp_delivery", "--mib", "128"],
]


def main() -> int:
    failed = 0
    for args in QUICK:
        print(f"\n==> python {' '.join(args)}", flush=True)
        failed |= subprocess.call([sys.executable, *args]) != 0
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
