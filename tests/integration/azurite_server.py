"""A private Azurite for tests and benchmarks that stop and restart it: own free ports, own data directory.

The shared stack's Azurite (127.0.0.1:10000-10002) is never touched. Started as scripts/stack.sh starts it
(`node_modules/.bin/azurite ... --disableTelemetry --skipApiVersionCheck --loose`), in its own session so that
stopping it kills the node process and nothing else."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from shared.settings import azurite_connection_string

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivateAzurite:
    """Azurite on 127.0.0.1:<three free ports>, data in `location`; stop() and start() keep ports and data."""

    def __init__(self, location: Path, *, log: Path | None = None) -> None:
        self.location = location
        self.log_path = log or location.parent / f"{location.name}.log"
        self.blob_port, self.queue_port, self.table_port = _free_ports(3)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(blob=self.blob_port, queue=self.queue_port, table=self.table_port)

    @property
    def ports(self) -> tuple[int, int, int]:
        return self.blob_port, self.queue_port, self.table_port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> PrivateAzurite:
        if self.running:
            return self
        if not AZURITE.exists():
            raise RuntimeError(f"azurite not found at {AZURITE}; run `make node` (npm ci) first")
        self.location.mkdir(parents=True, exist_ok=True)
        args = [str(AZURITE), "--location", str(self.location), "--silent", "--disableTelemetry",
                "--skipApiVersionCheck", "--loose",
                "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"azurite exited with {self._proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            if all(_open(p) for p in self.ports):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"azurite did not listen on 127.0.0.1:{self.ports} within {timeout}s")

    def stop(self, *, grace: float = 15.0) -> None:
        """Stop it as a storage service goes away, keeping what it acknowledged: SIGTERM, then wait until its
        three services say "successfully closed" (each has saved its data by then) or the process exits, then
        SIGKILL the process group (node waits for open keep-alive connections otherwise). Ports and data stay."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                if log.read().count(b"service successfully closed") >= 3:
                    break
            time.sleep(0.05)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_open(p) for p in self.ports) and time.monotonic() < deadline:
            time.sleep(0.05)
