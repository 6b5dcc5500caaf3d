#!/usr/bin/env bash
# Install the system packages the local Wharf stack needs, only when missing:
#   openssh-server (/usr/sbin/sshd) + openssh-client (ssh-keygen)  - the local SFTP server
#   rclone                                                          - used by benchmarks
#   gnupg (gpg, gpg-agent, gpgconf)                                 - OpenPGP (shared/adapters/pgp.py)
#   python3-venv                                                    - `python3 -m venv` on Debian
#   nodejs + npm                                                    - Azurite (only if node/npm are absent)
#   make                                                            - the Makefile
#   chromium + chromium-driver                                      - the console's browser tests (Selenium)
# Debian/Ubuntu (apt-get). Runs `apt-get update` first, non-interactively. Needs root when
# something is missing; as a normal user it prints what to install and fails.
set -euo pipefail

log() { printf '[system] %s\n' "$*"; }

missing=()
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
{ command -v gpg && command -v gpg-agent && command -v gpgconf; } >/dev/null 2>&1 || missing+=(gnupg)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
else
    missing+=(python3 python3-venv)
fi
node_from_apt=no
if ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs)
    node_from_apt=yes
fi
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]} == 0)); then
    log "all system dependencies present (sshd, ssh-keygen, rclone, gpg, make, chromium, chromedriver, python3-venv, node, npm)"
    exit 0
fi

log "missing: ${missing[*]}"
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        log "ERROR: not running as root. Install them with:" >&2
        log "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
else
    SUDO=()
fi
command -v apt-get >/dev/null 2>&1 || {
    log "ERROR: apt-get not found; install these packages with your package manager: ${missing[*]}" >&2
    exit 1
}

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
"${SUDO[@]}" apt-get update -q
log "apt-get install ${missing[*]}"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

if [[ "$node_from_apt" == yes ]]; then
    log "note: installed the distribution's Node.js ($(node --version 2>/dev/null || echo '?'));"
    log "      azurite 3.37 declares node >= 22 - if it fails to start, install a newer Node.js."
fi
# The Debian package may have started a system sshd on port 22 (not in containers without
# systemd). The local stack runs its own sshd on 127.0.0.1:2222 and does not need it.
log "done"
