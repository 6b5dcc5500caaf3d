#!/usr/bin/env bash
# Local Wharf stack: Azurite (blob/queue/table) and an OpenSSH SFTP server.
#
#   scripts/stack.sh start    start what is not running yet (idempotent), write .local/stack.env
#   scripts/stack.sh stop     stop only the processes this script started (pid files in .local/run/)
#   scripts/stack.sh status   print the state of each service
#   scripts/stack.sh restart  stop, then start
#   scripts/stack.sh env      print the path of .local/stack.env (after start)
#
# Everything lives under .local/ (git-ignored). Settings (environment):
#   STACK_HOST            listen address               (default 127.0.0.1)
#   AZURITE_BLOB_PORT     Azurite blob port             (default 10000)
#   AZURITE_QUEUE_PORT    Azurite queue port            (default 10001)
#   AZURITE_TABLE_PORT    Azurite table port            (default 10002)
#   AZURITE_SILENT=1      no per-request access log in .local/logs/azurite.log
#   SFTP_PORT             OpenSSH port                  (default 2222)
#   STACK_START_TIMEOUT   seconds to wait for each port (default 60)
#   WHARF_SFTP_PASSWORD_USER=1   (root only) also create a dedicated local account
#                         "wharfpw" with a random password (SFTP only, no shell) so
#                         password authentication can be tested; see README.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="${ROOT_DIR}/.local"
RUN_DIR="${LOCAL_DIR}/run"
LOG_DIR="${LOCAL_DIR}/logs"
AZURITE_DIR="${LOCAL_DIR}/azurite"
SSHD_DIR="${LOCAL_DIR}/sshd"
SFTP_ROOT="${LOCAL_DIR}/sftp"
DEMO_DIR="${SFTP_ROOT}/demo"
STACK_ENV="${LOCAL_DIR}/stack.env"

# While the stack runs, the ports it was started with are remembered in .local/run/ports.env,
# so `stop`/`status`/a second `start` find it without repeating the overrides.
PORTS_FILE="${RUN_DIR}/ports.env"
_stack_alive=no
for _f in "${RUN_DIR}/azurite.pid" "${RUN_DIR}/sshd.pid"; do
    [[ -f "$_f" ]] || continue
    _pid="$(tr -dc '0-9' <"$_f")"
    [[ -n "$_pid" && -d "/proc/${_pid}" ]] && _stack_alive=yes
done
if [[ "$_stack_alive" == yes && -f "$PORTS_FILE" ]]; then
    while IFS='=' read -r _k _v; do
        case "$_k" in
            STACK_HOST | AZURITE_BLOB_PORT | AZURITE_QUEUE_PORT | AZURITE_TABLE_PORT | SFTP_PORT)
                [[ -n "${!_k:-}" ]] || printf -v "$_k" '%s' "$_v" ;;
        esac
    done <"$PORTS_FILE"
fi

HOST="${STACK_HOST:-127.0.0.1}"
AZURITE_BLOB_PORT="${AZURITE_BLOB_PORT:-10000}"
AZURITE_QUEUE_PORT="${AZURITE_QUEUE_PORT:-10001}"
AZURITE_TABLE_PORT="${AZURITE_TABLE_PORT:-10002}"
SFTP_PORT="${SFTP_PORT:-2222}"
START_TIMEOUT="${STACK_START_TIMEOUT:-60}"

AZURITE_BIN="${ROOT_DIR}/node_modules/.bin/azurite"
SSHD_BIN="/usr/sbin/sshd"
SSHD_CONFIG="${SSHD_DIR}/sshd_config"
HOST_KEY="${SSHD_DIR}/ssh_host_ed25519_key"
CLIENT_KEY="${SSHD_DIR}/client_ed25519"
AUTHORIZED_KEYS="${SSHD_DIR}/authorized_keys"
KNOWN_HOSTS="${SSHD_DIR}/known_hosts"
PASSWORD_FILE="${SSHD_DIR}/sftp_password"
PASSWORD_USER="wharfpw"
PASSWORD_USER_HOME="${SFTP_ROOT}/${PASSWORD_USER}"

SFTP_USER="$(id -un)"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT="devstoreaccount1"
AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

log() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    # the comment block at the top of this file
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
}

is_valid_port() { [[ "$1" =~ ^[0-9]+$ ]] && (( $1 > 0 && $1 < 65536 )); }
for _p in "$AZURITE_BLOB_PORT" "$AZURITE_QUEUE_PORT" "$AZURITE_TABLE_PORT" "$SFTP_PORT"; do
    is_valid_port "$_p" || die "invalid port '${_p}'"
done

# ---------------------------------------------------------------- process helpers

# port_open PORT -> 0 when something accepts TCP connections on HOST:PORT
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/${HOST}/$1" 2>/dev/null
}

# pid_of NAME MARKER -> prints the pid recorded for NAME if that process is alive and is
# the one we started (its command line mentions our marker); else nothing.
pid_of() {
    local name="$1" marker="$2" pidfile="${RUN_DIR}/$1.pid" pid cmdline
    [[ -f "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" && -r "/proc/${pid}/cmdline" ]] || return 0
    cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null || true)"
    [[ "$cmdline" == *"$marker"* ]] || return 0
    printf '%s\n' "$pid"
}

# children PID -> direct child pids (via /proc, no procps needed)
children() {
    local parent="$1" stat rest ppid d
    for d in /proc/[0-9]*; do
        stat="$(cat "$d/stat" 2>/dev/null)" || continue
        rest="${stat##*) }"          # fields after "pid (comm) "
        read -r _ ppid _ <<<"$rest"
        [[ "$ppid" == "$parent" ]] && printf '%s\n' "${d#/proc/}"
    done
    return 0
}

# wait_port NAME PID PORT LOGFILE
wait_port() {
    local name="$1" pid="$2" port="$3" logfile="$4" waited=0
    until port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$logfile" >&2 || true
            die "${name} exited during startup; see ${logfile}"
        fi
        if (( waited >= START_TIMEOUT * 2 )); then
            tail -n 20 "$logfile" >&2 || true
            die "${name} did not answer on ${HOST}:${port} within ${START_TIMEOUT}s; see ${logfile}"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

# warn_if_closed NAME PORT... : a running service that does not answer on the requested ports
# was probably started with other port settings.
warn_if_closed() {
    local name="$1" p
    shift
    for p in "$@"; do
        port_open "$p" || die "${name} is running but ${HOST}:${p} does not answer (started with other ports?);" \
            "run '$0 stop' then start again"
    done
}

# stop_service NAME MARKER [KILL_CHILDREN=yes|no]
stop_service() {
    local name="$1" marker="$2" kill_children="${3:-no}" pid c i
    pid="$(pid_of "$name" "$marker")"
    if [[ -z "$pid" ]]; then
        if [[ -f "${RUN_DIR}/${name}.pid" ]]; then
            log "${name}: not running (removing stale pid file)"
            rm -f "${RUN_DIR}/${name}.pid"
        else
            log "${name}: not running"
        fi
        return 0
    fi
    local -a pids=("$pid")
    if [[ "$kill_children" == yes ]]; then
        # sshd forks one child per connection; end the sessions it serves too.
        while read -r c; do [[ -n "$c" ]] && pids+=("$c"); done < <(children "$pid")
    fi
    log "${name}: stopping pid ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        local alive=0
        for c in "${pids[@]}"; do kill -0 "$c" 2>/dev/null && alive=1; done
        (( alive == 0 )) && break
        sleep 0.25
    done
    for c in "${pids[@]}"; do
        if kill -0 "$c" 2>/dev/null; then
            log "${name}: pid ${c} ignored SIGTERM, sending SIGKILL"
            kill -KILL "$c" 2>/dev/null || true
        fi
    done
    rm -f "${RUN_DIR}/${name}.pid"
    log "${name}: stopped"
}

# ---------------------------------------------------------------- Azurite

AZURITE_MARKER="${AZURITE_DIR}"

start_azurite() {
    local pid
    pid="$(pid_of azurite "$AZURITE_MARKER")"
    if [[ -n "$pid" ]]; then
        log "azurite: already running (pid ${pid}), nothing to do"
        warn_if_closed azurite "$AZURITE_BLOB_PORT" "$AZURITE_QUEUE_PORT" "$AZURITE_TABLE_PORT"
        return 0
    fi
    [[ -x "$AZURITE_BIN" ]] || die "azurite not found at ${AZURITE_BIN}; run 'make node' (npm ci) first"
    command -v node >/dev/null || die "node is not installed; run 'make system' or install Node.js >= 20"
    local port
    for port in "$AZURITE_BLOB_PORT" "$AZURITE_QUEUE_PORT" "$AZURITE_TABLE_PORT"; do
        port_open "$port" && die "port ${HOST}:${port} is already in use by a process this script did not start;" \
            "stop it or choose other ports (AZURITE_BLOB_PORT/AZURITE_QUEUE_PORT/AZURITE_TABLE_PORT)"
    done
    mkdir -p "$AZURITE_DIR" "$LOG_DIR" "$RUN_DIR"
    local -a args=(
        --location "$AZURITE_DIR"
        --blobHost "$HOST" --blobPort "$AZURITE_BLOB_PORT"
        --queueHost "$HOST" --queuePort "$AZURITE_QUEUE_PORT"
        --tableHost "$HOST" --tablePort "$AZURITE_TABLE_PORT"
        --disableTelemetry --skipApiVersionCheck --loose
    )
    [[ "${AZURITE_SILENT:-0}" == 1 ]] && args+=(--silent)
    local logfile="${LOG_DIR}/azurite.log"
    printf '\n===== %s starting azurite %s\n' "$(date -u +%FT%TZ)" "${args[*]}" >>"$logfile"
    # setsid: own session, so Ctrl-C in the terminal (e.g. `make run`) does not take it down;
    # 9>&-: do not hand the stack lock to the daemon.
    ( cd "$ROOT_DIR" && exec setsid "$AZURITE_BIN" "${args[@]}" </dev/null >>"$logfile" 2>&1 9>&- ) &
    pid=$!
    echo "$pid" >"${RUN_DIR}/azurite.pid"
    for port in "$AZURITE_BLOB_PORT" "$AZURITE_QUEUE_PORT" "$AZURITE_TABLE_PORT"; do
        wait_port azurite "$pid" "$port" "$logfile"
    done
    log "azurite: running (pid ${pid}) blob=${AZURITE_BLOB_PORT} queue=${AZURITE_QUEUE_PORT} table=${AZURITE_TABLE_PORT}; log ${logfile}"
}

# ---------------------------------------------------------------- OpenSSH

SSHD_MARKER="${SSHD_CONFIG}"

# With `UsePAM no`, sshd rejects accounts whose shadow password field starts with "!"
# ("account is locked"). Container images often ship root as "!" or "!*" (no password
# at all, merely locked). Replacing *those* with "*" (no password can ever match) lets
# key authentication work without enabling any password. A field like "!$6$..." is a
# real password that someone locked on purpose: we leave it alone and explain.
fix_locked_account() {
    local user="$1" field
    if ! field="$(getent shadow "$user" 2>/dev/null | cut -d: -f2)"; then
        return 0   # cannot read shadow (not root) or no shadow entry: nothing we can check
    fi
    case "$field" in
        '!' | '!!' | '!*' | '*LK*' | '!*LK*')
            if [[ "$(id -u)" -ne 0 ]]; then
                log "WARNING: account '${user}' is locked (shadow field '${field}'); sshd (UsePAM no) will refuse it."
                log "         As root run: usermod -p '*' ${user}"
                return 0
            fi
            log "sshd: account '${user}' is locked without a password (shadow field '${field}');"
            log "      setting it to '*' (still no password; key login only) so sshd with UsePAM=no accepts it"
            usermod -p '*' "$user"
            ;;
        '!'*)
            log "WARNING: account '${user}' has a locked password (shadow field starts with '!');"
            log "         sshd (UsePAM no) will refuse it. Not changing it automatically."
            ;;
    esac
}

ensure_password_user() {
    # Opt-in, root only: a dedicated SFTP-only account with a random password.
    [[ "${WHARF_SFTP_PASSWORD_USER:-0}" == 1 ]] || return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        log "WHARF_SFTP_PASSWORD_USER=1 needs root (creates a local account); skipping password user"
        return 0
    fi
    if ! getent passwd "$PASSWORD_USER" >/dev/null; then
        log "sshd: creating SFTP-only account '${PASSWORD_USER}' (no shell) for password-auth tests"
        useradd --system --no-create-home --home-dir "$PASSWORD_USER_HOME" \
            --shell /usr/sbin/nologin --comment "Wharf local SFTP password test" "$PASSWORD_USER"
    fi
    mkdir -p "$PASSWORD_USER_HOME/outbound" "$PASSWORD_USER_HOME/inbound"
    chown -R "$PASSWORD_USER" "$PASSWORD_USER_HOME"
    # The account must be able to reach its home (a clone under /root is not traversable
    # by other users); otherwise use a home outside the repository.
    if ! runuser -u "$PASSWORD_USER" -- test -w "$PASSWORD_USER_HOME/inbound" 2>/dev/null; then
        PASSWORD_USER_HOME="/var/lib/wharf-sftp/${PASSWORD_USER}"
        log "sshd: ${PASSWORD_USER} cannot reach ${SFTP_ROOT}; using ${PASSWORD_USER_HOME} as its home"
        mkdir -p "$PASSWORD_USER_HOME/outbound" "$PASSWORD_USER_HOME/inbound"
        chown -R "$PASSWORD_USER" "$PASSWORD_USER_HOME"
    fi
    if [[ "$(getent passwd "$PASSWORD_USER" | cut -d: -f6)" != "$PASSWORD_USER_HOME" ]]; then
        usermod -d "$PASSWORD_USER_HOME" "$PASSWORD_USER"
    fi
    if [[ ! -s "$PASSWORD_FILE" ]]; then
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$PASSWORD_FILE")
    fi
    printf '%s:%s\n' "$PASSWORD_USER" "$(cat "$PASSWORD_FILE")" | chpasswd
}

# requested for this start: opt-in, root, account exists (after ensure_password_user)
password_user_requested() {
    [[ "${WHARF_SFTP_PASSWORD_USER:-0}" == 1 && "$(id -u)" -eq 0 ]] && getent passwd "$PASSWORD_USER" >/dev/null
}

# enabled in the sshd that runs: its generated config lets the account in
password_user_enabled() {
    [[ -f "$SSHD_CONFIG" ]] && grep -Eq "^AllowUsers .* ${PASSWORD_USER}( |\$)" "$SSHD_CONFIG" \
        && getent passwd "$PASSWORD_USER" >/dev/null
}

seed_demo() {
    mkdir -p "${DEMO_DIR}/outbound" "${DEMO_DIR}/inbound"
    if [[ -z "$(ls -A "${DEMO_DIR}/outbound")" ]]; then
        cat >"${DEMO_DIR}/outbound/invoices-demo.csv" <<'CSV'
invoice_id,customer,amount,currency,issued_on
1001,Acme Corp,1250.00,EUR,2024-05-01
1002,Globex Ltd,89.90,USD,2024-05-02
1003,Initech,4300.50,EUR,2024-05-03
1004,Umbrella plc,12.00,GBP,2024-05-04
CSV
        log "sftp: seeded ${DEMO_DIR}/outbound/invoices-demo.csv"
    fi
}

write_sshd_config() {
    local allow_users="$SFTP_USER"
    password_user_requested && allow_users+=" ${PASSWORD_USER}"
    cat >"$SSHD_CONFIG" <<EOF
# Generated by scripts/stack.sh - local development only. Do not edit; it is rewritten on start.
ListenAddress ${HOST}
Port ${SFTP_PORT}
HostKey ${HOST_KEY}
PidFile ${RUN_DIR}/sshd.daemon.pid
UsePAM no
StrictModes no
AuthorizedKeysFile ${AUTHORIZED_KEYS}
PubkeyAuthentication yes
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers ${allow_users}
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
GatewayPorts no
PermitTunnel no
X11Forwarding no
PrintMotd no
PermitUserEnvironment no
LogLevel VERBOSE
# parallel tests and benchmarks open many connections at once
MaxStartups 100:30:200
MaxSessions 50
MaxAuthTries 10
Subsystem sftp internal-sftp
Match User ${PASSWORD_USER}
    AuthenticationMethods password
    ForceCommand internal-sftp
EOF
}

prepare_sshd() {
    [[ -x "$SSHD_BIN" ]] || die "${SSHD_BIN} not found; run 'make system' (scripts/install-system-deps.sh)"
    command -v ssh-keygen >/dev/null || die "ssh-keygen not found; run 'make system'"
    mkdir -p "$SSHD_DIR" "$RUN_DIR" "$LOG_DIR"
    chmod 700 "$SSHD_DIR"
    if [[ ! -f "$HOST_KEY" ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "wharf-local-sshd" -f "$HOST_KEY"
        log "sshd: generated host key ${HOST_KEY}"
    fi
    if [[ ! -f "$CLIENT_KEY" ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "wharf-local-client" -f "$CLIENT_KEY"
        log "sshd: generated client key ${CLIENT_KEY}"
    fi
    chmod 600 "$HOST_KEY" "$CLIENT_KEY"
    # restrict: no forwarding/pty/agent; SFTP (and plain commands) still work.
    printf 'restrict %s\n' "$(cat "${CLIENT_KEY}.pub")" >"$AUTHORIZED_KEYS"
    chmod 600 "$AUTHORIZED_KEYS"
    local host_pub kt kb
    read -r kt kb _ <"${HOST_KEY}.pub"
    host_pub="${kt} ${kb}"
    if [[ "$SFTP_PORT" == 22 ]]; then
        printf '%s %s\n' "$HOST" "$host_pub" >"$KNOWN_HOSTS"
    else
        printf '[%s]:%s %s\n' "$HOST" "$SFTP_PORT" "$host_pub" >"$KNOWN_HOSTS"
    fi
    if [[ "$(id -u)" -eq 0 ]]; then
        mkdir -p /run/sshd      # privilege separation directory, required when sshd runs as root
        chmod 755 /run/sshd
    fi
    fix_locked_account "$SFTP_USER"
    ensure_password_user
    seed_demo
    write_sshd_config
    "$SSHD_BIN" -t -f "$SSHD_CONFIG" || die "sshd rejected ${SSHD_CONFIG}"
}

host_fingerprint() { ssh-keygen -l -E sha256 -f "${HOST_KEY}.pub" | awk '{print $2}'; }

start_sshd() {
    local pid
    pid="$(pid_of sshd "$SSHD_MARKER")"
    if [[ -n "$pid" ]]; then
        log "sshd: already running (pid ${pid}), nothing to do"
        warn_if_closed sshd "$SFTP_PORT"
        return 0
    fi
    port_open "$SFTP_PORT" && die "port ${HOST}:${SFTP_PORT} is already in use by a process this script did not start;" \
        "stop it or set SFTP_PORT"
    prepare_sshd
    local logfile="${LOG_DIR}/sshd.log"
    printf '\n===== %s starting sshd on %s:%s\n' "$(date -u +%FT%TZ)" "$HOST" "$SFTP_PORT" >>"$logfile"
    # -D: stay in the foreground so the pid we record is the listener; -e: log to stderr (our log file).
    ( exec setsid "$SSHD_BIN" -D -e -f "$SSHD_CONFIG" </dev/null >>"$logfile" 2>&1 9>&- ) &
    pid=$!
    echo "$pid" >"${RUN_DIR}/sshd.pid"
    wait_port sshd "$pid" "$SFTP_PORT" "$logfile"
    log "sshd: running (pid ${pid}) on ${HOST}:${SFTP_PORT} as user '${SFTP_USER}'; log ${logfile}"
}

# ---------------------------------------------------------------- stack.env

# env_line KEY VALUE: raw when shell-safe, single-quoted otherwise (bash and python-dotenv read both)
env_line() {
    local key="$1" value="$2"
    if [[ "$value" =~ ^[A-Za-z0-9_./:@%+,=-]*$ ]]; then
        printf '%s=%s\n' "$key" "$value"
    else
        [[ "$value" != *"'"* ]] || die "cannot write ${key}: value contains a single quote"
        printf "%s='%s'\n" "$key" "$value"
    fi
}

write_stack_env() {
    local blob="http://${HOST}:${AZURITE_BLOB_PORT}/${AZURITE_ACCOUNT}"
    local queue="http://${HOST}:${AZURITE_QUEUE_PORT}/${AZURITE_ACCOUNT}"
    local table="http://${HOST}:${AZURITE_TABLE_PORT}/${AZURITE_ACCOUNT}"
    local conn="DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};"
    conn+="BlobEndpoint=${blob};QueueEndpoint=${queue};TableEndpoint=${table};"
    local tmp="${STACK_ENV}.tmp.$$"
    {
        echo "# Generated by scripts/stack.sh start - effective settings of the local stack."
        env_line WHARF_STACK_ROOT "$LOCAL_DIR"
        env_line STACK_HOST "$HOST"
        env_line AZURITE_HOST "$HOST"
        env_line AZURITE_BLOB_PORT "$AZURITE_BLOB_PORT"
        env_line AZURITE_QUEUE_PORT "$AZURITE_QUEUE_PORT"
        env_line AZURITE_TABLE_PORT "$AZURITE_TABLE_PORT"
        env_line AZURITE_ACCOUNT_NAME "$AZURITE_ACCOUNT"
        env_line AZURITE_ACCOUNT_KEY "$AZURITE_KEY"
        env_line AZURITE_BLOB_ENDPOINT "$blob"
        env_line AZURITE_QUEUE_ENDPOINT "$queue"
        env_line AZURITE_TABLE_ENDPOINT "$table"
        env_line AZURITE_CONNECTION_STRING "$conn"
        env_line AzureWebJobsStorage "$conn"
        env_line AZURITE_LOG "${LOG_DIR}/azurite.log"
        env_line SFTP_HOST "$HOST"
        env_line SFTP_PORT "$SFTP_PORT"
        env_line SFTP_USER "$SFTP_USER"
        env_line SFTP_CLIENT_KEY "$CLIENT_KEY"
        env_line SFTP_KNOWN_HOSTS "$KNOWN_HOSTS"
        env_line SFTP_HOST_KEY_FINGERPRINT "$(host_fingerprint)"
        env_line SFTP_ROOT "$SFTP_ROOT"
        env_line SFTP_DEMO_DIR "$DEMO_DIR"
        env_line SFTP_DEMO_OUTBOUND "${DEMO_DIR}/outbound"
        env_line SFTP_DEMO_INBOUND "${DEMO_DIR}/inbound"
        env_line SFTP_LOG "${LOG_DIR}/sshd.log"
        # The demo partner of partners.yaml reads these (catalogue ${...} interpolation and local secrets).
        env_line WHARF_DEMO_SFTP_USER "$SFTP_USER"
        env_line WHARF_DEMO_SFTP_HOST_KEY "$(head -n 1 "$KNOWN_HOSTS")"
        env_line WHARF_DEMO_SFTP_ROOT "$DEMO_DIR"
        env_line WHARF_SECRET_DEMO_SFTP_KEY "@${CLIENT_KEY}"
        if password_user_enabled; then
            env_line SFTP_PASSWORD_USER "$PASSWORD_USER"
            env_line SFTP_PASSWORD_FILE "$PASSWORD_FILE"
            env_line SFTP_PASSWORD_USER_HOME "$(getent passwd "$PASSWORD_USER" | cut -d: -f6)"
        fi
    } >"$tmp"
    mv -f "$tmp" "$STACK_ENV"
}

# ---------------------------------------------------------------- commands

cmd_start() {
    mkdir -p "$LOCAL_DIR" "$RUN_DIR" "$LOG_DIR"
    start_azurite
    start_sshd
    printf 'STACK_HOST=%s\nAZURITE_BLOB_PORT=%s\nAZURITE_QUEUE_PORT=%s\nAZURITE_TABLE_PORT=%s\nSFTP_PORT=%s\n' \
        "$HOST" "$AZURITE_BLOB_PORT" "$AZURITE_QUEUE_PORT" "$AZURITE_TABLE_PORT" "$SFTP_PORT" >"$PORTS_FILE"
    write_stack_env
    log "sftp: ${SFTP_USER}@${HOST}:${SFTP_PORT} host key $(host_fingerprint)"
    log "sftp: demo partner folder ${DEMO_DIR} (outbound/ = partner drops, inbound/ = Wharf delivers)"
    log "env:  ${STACK_ENV}"
}

cmd_stop() {
    stop_service sshd "$SSHD_MARKER" yes
    stop_service azurite "$AZURITE_MARKER"
    # stack.env means "the stack is up": remove it so tests skip/fail fast instead of timing out.
    rm -f "$PORTS_FILE" "${RUN_DIR}/sshd.daemon.pid" "$STACK_ENV"
}

status_line() {
    local name="$1" marker="$2" ports="$3" pid state p
    pid="$(pid_of "$name" "$marker")"
    if [[ -n "$pid" ]]; then
        state="running (pid ${pid})"
        for p in $ports; do port_open "$p" || state+=", port ${p} NOT answering"; done
    elif [[ -f "${RUN_DIR}/${name}.pid" ]]; then
        state="stopped (stale pid file)"
    else
        state="stopped"
        for p in $ports; do port_open "$p" && state+=", port ${p} in use by another process"; done
    fi
    printf '%-8s %-40s %s\n' "$name" "$state" "${HOST}:${ports// /,}"
    [[ -n "$pid" ]]
}

cmd_status() {
    local rc=0
    status_line azurite "$AZURITE_MARKER" "$AZURITE_BLOB_PORT $AZURITE_QUEUE_PORT $AZURITE_TABLE_PORT" || rc=3
    status_line sshd "$SSHD_MARKER" "$SFTP_PORT" || rc=3
    [[ -f "$STACK_ENV" ]] && printf '%-8s %s\n' env "$STACK_ENV"
    return "$rc"
}

# One start/stop at a time per checkout (parallel `make test` runs share .local/).
lock_stack() {
    mkdir -p "$RUN_DIR"
    exec 9>"${RUN_DIR}/stack.lock"
    flock -w 180 9 || die "another scripts/stack.sh is still running (lock ${RUN_DIR}/stack.lock)"
}

main() {
    case "${1:-}" in
        start | stop | restart) lock_stack ;;
    esac
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        restart) cmd_stop; cmd_start ;;
        status) cmd_status ;;
        env) [[ -f "$STACK_ENV" ]] || die "no ${STACK_ENV}; run '$0 start'"; echo "$STACK_ENV" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

# Run only when executed, so the functions can be sourced (e.g. for debugging).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
