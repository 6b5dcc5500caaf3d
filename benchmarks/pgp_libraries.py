"""Which OpenPGP library: pysequoia, python-gnupg (over gpg) and pgpy on the same file, same keys, same run.

For each library, in a fresh child process: decrypt+verify a message that GnuPG made (signed by the partner,
encrypted to Wharf, zlib-compressed: what a bank sends) and encrypt+sign a file that GnuPG must then decrypt
and verify. Reported: wall time, the child's peak RSS (python-gnupg: also gpg's), and whether the result
interoperates with gpg (the plaintext matches and the signature checks out). RSA 3072 keys (all three read
them; tests/data/pgp).

    .venv/bin/python benchmarks/pgp_libraries.py            # 64 MiB, 3 runs each
    .venv/bin/python benchmarks/pgp_libraries.py --mib 16 -n 1 --json
    .venv/bin/python benchmarks/pgp_libraries.py -z 0             # an uncompressed message
"""

from __future__ import annotations

import argparse
import hashlib
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
import json, resource, sys, time, warnings
def hwm_mib():
    # VmHWM: this process's own peak RSS (ru_maxrss would include the parent's at fork, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


from pathlib import Path
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from tests.gpg_home import PASSPHRASE, stored_key
lib, op, src, out = sys.argv[2], sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5])
wharf, bank = stored_key("wharf-rsa3072"), stored_key("bank-rsa3072")
started = time.perf_counter()
error = ""
try:
    if lib == "python-gnupg":
        from shared.adapters.pgp import Keyring, decrypt_to_file, encrypt_to_file, file_chunks
        with Keyring() as ring:
            if op == "decrypt":
                r = decrypt_to_file(file_chunks(src), ring, private_key=wharf.secret, passphrase=PASSPHRASE,
                                    signer_keys=bank.public, verify="required")
                out.write_bytes(b"") ; r.plaintext.rename(out)
            else:
                r = encrypt_to_file(file_chunks(src), ring, recipient_keys=bank.public, signer_key=wharf.secret,
                                    passphrase=PASSPHRASE)
                r.ciphertext.rename(out)
    elif lib == "pysequoia":
        import pysequoia as sq
        sec = sq.Cert.from_bytes(wharf.secret.encode())
        if op == "decrypt":
            signer = sq.Cert.from_bytes(bank.public.encode())
            r = sq.decrypt_file(str(src), str(out), decryptor=sec.secrets.decryptor(PASSPHRASE),
                                store=lambda ids: [signer])
            if not r.valid_sigs:
                raise RuntimeError("no valid signature")
        else:
            sq.encrypt_file(str(src), str(out), recipients=[sq.Cert.from_bytes(bank.public.encode())],
                            signer=sec.secrets.signer(PASSPHRASE), armor=False)
    elif lib == "pgpy":
        import pgpy
        key, _ = pgpy.PGPKey.from_blob(wharf.secret)
        if op == "decrypt":
            signer, _ = pgpy.PGPKey.from_blob(bank.public)
            message = pgpy.PGPMessage.from_file(str(src))
            with key.unlock(PASSPHRASE):
                plain = key.decrypt(message)
            if not signer.verify(plain):
                raise RuntimeError("no valid signature")
            out.write_bytes(bytes(plain.message) if not isinstance(plain.message, str) else plain.message.encode())
        else:
            recipient, _ = pgpy.PGPKey.from_blob(bank.public)
            message = pgpy.PGPMessage.new(src.read_bytes(), file=False)
            with key.unlock(PASSPHRASE):
                message |= key.sign(message)
            enc = recipient.subkeys[next(iter(recipient.subkeys))].encrypt(message) if recipient.subkeys else \
                recipient.encrypt(message)
            out.write_bytes(bytes(enc))
except Exception as exc:  # noqa: BLE001 - reported as the result
    error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
print(json.dumps({"seconds": time.perf_counter() - started, "error": error,
                  "rss_mib": hwm_mib(),
                  "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

LIBS = ("python-gnupg", "pysequoia", "pgpy")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _child(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), *args], capture_output=True, text=True,
                          check=False, timeout=3600)
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"seconds": 0.0, "error": f"child died: {done.stderr.strip().splitlines()[-1:]}", "rss_mib": 0.0,
                "children_rss_mib": 0.0}
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("-z", type=int, default=6, help="gpg's compression level for the message (0: none)")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    from tests.gpg_home import PASSPHRASE, GpgHome, stored_key

    wharf, bank = stored_key("wharf-rsa3072"), stored_key("bank-rsa3072")
    home = GpgHome(wharf, bank)
    work = Path(tempfile.mkdtemp(prefix="wharf-bench-pgplib-"))
    try:
        plain = work / "plain.csv"
        row = b"".join(b"%08d,DE89370400440532013000,%d.50,some text here\n" % (i, i) for i in range(16384))
        with plain.open("wb") as fh:
            for _ in range(a.mib * 2**20 // len(row) + 1):
                fh.write(row)
            fh.truncate(a.mib * 2**20)
        expected = _sha256(plain)
        message = work / "from-bank.pgp"
        home.sign_encrypt(plain, message, signer=bank, recipient=wharf, options=("-z", str(a.z)))
        runs: dict[str, list[dict[str, object]]] = {f"{lib} {op}": [] for lib in LIBS for op in ("decrypt",
                                                                                               "encrypt")}
        interop: dict[str, str] = {}
        for _ in range(a.n):
            for lib in LIBS:
                out = work / "out.bin"
                r = _child(lib, "decrypt", str(message), str(out))
                if not r["error"] and _sha256(out) != expected:
                    r["error"] = "plaintext differs"
                runs[f"{lib} decrypt"].append(r)
                interop[f"{lib} decrypt"] = str(r["error"]) or "ok: reads gpg's signed, compressed message"
                out.unlink(missing_ok=True)
                r = _child(lib, "encrypt", str(plain), str(out))
                if not r["error"]:
                    check = work / "check.bin"
                    done = home.gpg("--passphrase", PASSPHRASE, "--status-fd", "2", "-o", str(check), "--decrypt",
                                    str(out), check=False)
                    good = done.returncode == 0 and _sha256(check) == expected and b"GOODSIG" in done.stderr
                    check.unlink(missing_ok=True)
                    r["error"] = "" if good else "gpg cannot decrypt/verify it"
                interop[f"{lib} encrypt"] = str(r["error"]) or "ok: gpg decrypts and verifies it"
                runs[f"{lib} encrypt"].append(r)
                out.unlink(missing_ok=True)
        summary = {}
        for name, rs in runs.items():
            ok = [r for r in rs if not r["error"]]
            summary[name] = {
                "median_s": statistics.median(float(str(r["seconds"])) for r in ok) if ok else None,
                "peak_rss_mib": max(float(str(r["rss_mib"])) for r in rs),
                "gpg_peak_rss_mib": max(float(str(r["children_rss_mib"])) for r in rs) if name.startswith(
                    "python-gnupg") else None,
                "interop": interop[name]}
        result = {"file_mib": a.mib, "compression": a.z, "runs": a.n, "load": os.getloadavg()[0], "results": summary}
        if a.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{a.mib} MiB file, RSA 3072, gpg -z {a.z}, {a.n} run(s), load {result['load']:.1f}")
            for name, s in summary.items():
                t = f"{s['median_s']:7.2f} s" if s["median_s"] is not None else "   failed"
                print(f"  {name:22} {t}  peak RSS {s['peak_rss_mib']:7.1f} MiB  {s['interop']}")
    finally:
        home.close()
        for p in work.iterdir():
            p.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
