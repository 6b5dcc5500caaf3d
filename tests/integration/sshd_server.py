"""A private OpenSSH server per test session: generated keys, a free port, kill and restart on demand."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
KEY_PASSPHRASE = "correct horse battery staple"  # test-only passphrase for the encrypted client keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (sshd forks a child per connection, which starts a new session)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _unlock_account(user: str) -> None:
    """sshd with UsePAM no refuses even public-key logins for a locked account ('!' in shadow)."""
    if os.geteuid() != 0:
        return
    try:
        line = subprocess.run(["getent", "shadow", user], capture_output=True, text=True, check=False).stdout
    except OSError:
        return
    fields = line.strip().split(":")
    if len(fields) > 1 and fields[1].startswith("!"):
        subprocess.run(["usermod", "-p", "*", user], check=True)


@dataclass(frozen=True)
class ClientKey:
    kind: str
    path: Path
    passphrase: str | None

    @property
    def text(self) -> str:
        return self.path.read_text()


class SshdServer:
    """OpenSSH on 127.0.0.1:<free port>, serving the local file system over internal-sftp.

    Keys live in `root`; `data` is a directory the tests put files in (remote paths are absolute).
    """

    def __init__(self, root: Path, *, port: int | None = None) -> None:
        self.root = root
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.username = getpass.getuser()
        self.data = root / "data"
        self.log_path = root / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.client_keys: dict[str, ClientKey] = {}
        # Root reads every file, so "permission denied" needs a login that is not root: as root we also
        # admit the unprivileged `nobody` (SFTP only) to a world-traversable folder outside pytest's tmp.
        self.unprivileged_user = "nobody" if os.geteuid() == 0 else self.username
        self.public = Path(tempfile.mkdtemp(prefix="wharf-sftp-")) if os.geteuid() == 0 else self.data / "public"
        self._prepare()

    # --- setup ------------------------------------------------------------------------------

    def _keygen(self, path: Path, kind: str, passphrase: str = "", bits: int | None = None) -> None:
        for old in (path, Path(f"{path}.pub")):
            old.unlink(missing_ok=True)
        args = [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-f", str(path), "-C", f"wharf-test-{kind}"]
        if bits:
            args += ["-b", str(bits)]
        subprocess.run(args, check=True, capture_output=True)

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.host_key = self.root / "ssh_host_ed25519_key"
        self._keygen(self.host_key, "ed25519")
        self.other_host_key = self.root / "other_host_ed25519_key"  # for "wrong host key" tests
        self._keygen(self.other_host_key, "ed25519")
        specs = [("ed25519", "ed25519", None, None), ("ed25519-pass", "ed25519", KEY_PASSPHRASE, None),
                 ("ecdsa", "ecdsa", None, 256), ("rsa-pass", "rsa", KEY_PASSPHRASE, 2048)]
        for name, kind, passphrase, bits in specs:
            path = self.root / f"client_{name}"
            self._keygen(path, kind, passphrase or "", bits)
            self.client_keys[name] = ClientKey(kind, path, passphrase)
        authorized = self.root / "authorized_keys"
        authorized.write_text("".join(Path(f"{k.path}.pub").read_text() for k in self.client_keys.values()))
        authorized.chmod(0o600)
        self.public.mkdir(parents=True, exist_ok=True)
        self.public.chmod(0o755)
        public_keys = self.public / ".authorized_keys"
        public_keys.write_text(Path(f"{self.client_key.path}.pub").read_text())
        public_keys.chmod(0o644)
        users = sorted({self.username, self.unprivileged_user})
        self.config = self.root / "sshd_config"
        self.config.write_text("\n".join([
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "UsePAM no",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {' '.join(users)}",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel ERROR",
            "MaxStartups 100:30:200",
            "MaxSessions 50",
            "MaxAuthTries 10",
            "Subsystem sftp internal-sftp",
            *([f"Match User {self.unprivileged_user}", f"    AuthorizedKeysFile {public_keys}",
               "    ForceCommand internal-sftp"] if self.unprivileged_user != self.username else []),
            "",
        ]))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        _unlock_account(self.username)

    # --- facts for the code under test ------------------------------------------------------

    def _public_key(self, path: Path) -> tuple[str, str]:
        kind, blob = Path(f"{path}.pub").read_text().split()[:2]
        return kind, blob

    @property
    def known_hosts_line(self) -> str:
        kind, blob = self._public_key(self.host_key)
        return f"[{self.host}]:{self.port} {kind} {blob}"

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` as `ssh-keygen -lf` prints it."""
        out = subprocess.run([SSH_KEYGEN, "-lf", f"{self.host_key}.pub"], check=True, capture_output=True,
                             text=True).stdout
        return out.split()[1]

    @property
    def other_fingerprint(self) -> str:
        out = subprocess.run([SSH_KEYGEN, "-lf", f"{self.other_host_key}.pub"], check=True,
                             capture_output=True, text=True).stdout
        return out.split()[1]

    @property
    def client_key(self) -> ClientKey:
        return self.client_keys["ed25519"]

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self, timeout: float = 15.0) -> SshdServer:
        if self.pid:
            return self
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.host}:{self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL the daemon and every connection it serves: what a crashed server looks like."""
        if self._proc is None:
            return
        for pid in [self._proc.pid, *_descendants(self._proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        """Kill the server and remove the folder shared with the unprivileged login."""
        self.kill()
        if self.public.exists() and not self.public.is_relative_to(self.root):
            shutil.rmtree(self.public, ignore_errors=True)

    def public_folder(self, name: str) -> Path:
        """A fresh folder the unprivileged login can list (files in it are readable unless chmod 600)."""
        path = self.public / name
        path.mkdir(parents=True)
        path.chmod(0o755)
        return path

    def restart(self) -> SshdServer:
        self.kill()
        # The port is released immediately (SO_REUSEADDR in sshd); retry briefly if not.
        return self.start()

    def folder(self, name: str) -> Path:
        """A fresh, unique directory under `data` for one test."""
        path = self.data / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """The session's private sshd. Fails (never skips) when sshd cannot start."""
    server = SshdServer(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """An sshd for one test only, for tests that kill it."""
    server = SshdServer(tmp_path_factory.mktemp("sshd-private")).start()
    try:
        yield server
    finally:
        server.stop()
