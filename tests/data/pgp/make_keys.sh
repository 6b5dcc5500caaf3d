#!/usr/bin/env bash
# Makes the OpenPGP TEST keys in this folder with the real gpg (never use them for anything else).
# Stored so the tests do not spend a minute generating RSA 3072 keys; no expiry, so they keep working.
# Passphrase of every secret key: "correct horse". Usage: bash tests/data/pgp/make_keys.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
home="$(mktemp -d)"; trap 'gpgconf --homedir "$home" --kill all >/dev/null 2>&1 || true; rm -rf "$home"' EXIT
g() { gpg --homedir "$home" --batch --yes --pinentry-mode loopback --passphrase "correct horse" "$@"; }
for who in wharf bank stranger; do
  for kind in ed25519 rsa3072; do
    [[ "$who" == stranger && "$kind" == rsa3072 ]] && continue
    uid="Test $who $kind <$who-$kind@example.test>"
    if [[ "$kind" == ed25519 ]]; then primary=ed25519; sub=cv25519; else primary=rsa3072; sub=rsa3072; fi
    g --quick-gen-key "$uid" "$primary" sign never
    fpr="$(g --with-colons --list-keys "$uid" | awk -F: '/^fpr/{print $10; exit}')"
    g --quick-add-key "$fpr" "$sub" encr never
    g --armor --export "$fpr" > "$here/$who-$kind.pub.asc"
    g --armor --export-secret-keys "$fpr" > "$here/$who-$kind.sec.asc"
  done
done
