#!/usr/bin/env bash
# Host B: a second docker engine on this machine, acting as another host (see DESIGN.md, "The
# environment the tests run in"). Run after scripts/docker-env.sh, which brings up host A (the
# machine's own dockerd) and the local registry on 127.0.0.1:5000.
#
# Host B has its own data root, exec root, socket, pid file, config file, containerd, cgroup
# parent and network, mount and UTS namespaces (`unshare --net --mount --uts`; hostname
# envsnap-hostb). It shares no image with host A: images reach it only through the registry,
# which is forwarded into its network namespace with socat, so that 127.0.0.1:5000 inside it
# reaches the registry (plain HTTP: docker treats 127.0.0.0/8 registries as insecure):
#
#   host B's dockerd --pull--> 127.0.0.1:5000 (socat, in B's netns)
#     --> /run/envsnap-hostb/registry.sock (socat, in the machine's netns) --> 127.0.0.1:5000
#
# Its network namespace has only a loopback: no bridge (`--bridge=none`, which is safe there
# alone: in the machine's own namespace it would delete docker0, host A's bridge), no iptables
# rules. Containers on host B run with no network or loopback only.
#
# Idempotent: when host B already answers (and reaches the registry) it only prints its address
# (about a second). Otherwise it starts it, waits until `docker -H ... info` answers and a small
# probe image pushed from host A pulls on host B, and fails loudly with the log tail if not.
# Prints `ENVSNAP_HOST_B=unix:///run/envsnap-hostb/docker.sock` on stdout; use it as DOCKER_HOST.
#
# Usage: scripts/host-b.sh [--stop]     (--stop: stop host B and its registry forwarding; its
#                                        images stay in its data root for the next start)
# Environment:
#   DOCKER_ENV_LOG_DIR  (default /var/log) for host B's dockerd and socat logs
# Needs root. Installs Debian's socat (and iproute2) with apt when missing.

set -euo pipefail

REGISTRY_ADDR="127.0.0.1:5000"
STATE_DIR="/run/envsnap-hostb"            # socket, pid files, exec root, config: gone at reboot
DATA_ROOT="/var/lib/envsnap-hostb"        # host B's images and containers
SOCK="$STATE_DIR/docker.sock"
HOST_B="unix://$SOCK"
PID_FILE="$STATE_DIR/dockerd.pid"
EXEC_ROOT="$STATE_DIR/exec"
CONFIG_FILE="$STATE_DIR/daemon.json"      # its own: /etc/docker/daemon.json is host A's
RELAY_SOCK="$STATE_DIR/registry.sock"
RELAY_HOST_PID="$STATE_DIR/relay-host.pid"  # socat in the machine's netns: RELAY_SOCK -> registry
RELAY_B_PID="$STATE_DIR/relay-b.pid"        # socat in host B's netns: 127.0.0.1:5000 -> RELAY_SOCK
HOSTNAME_B="envsnap-hostb"
PROBE="$REGISTRY_ADDR/envsnap-hostb/probe:1"
LOG_DIR="${DOCKER_ENV_LOG_DIR:-/var/log}"
DOCKERD_LOG="$LOG_DIR/envsnap-hostb-dockerd.log"
RELAY_LOG="$LOG_DIR/envsnap-hostb-relay.log"

STOP=0
for arg in "$@"; do
  case "$arg" in
    --stop) STOP=1 ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "host-b: ERROR: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

die() { echo "host-b: ERROR: $*" >&2; exit 1; }
log() { echo "host-b: $*" >&2; }
[ "$(id -u)" = 0 ] || die "host B needs root (namespaces, a second dockerd): run as root or with sudo"

# One run at a time (parallel test workers may all call this script). The daemons started below
# must not inherit fd 8, or they would hold the lock.
LOCK_FILE="${TMPDIR:-/tmp}/envsnap-host-b.lock"
exec 8>"$LOCK_FILE" || die "cannot open lock file $LOCK_FILE"
if ! flock -n 8; then
  log "waiting for another host-b.sh run (lock $LOCK_FILE)"
  flock -w 900 8 || die "timed out waiting for another host-b.sh run (lock $LOCK_FILE)"
fi

# ------------------------------------------------------------------ helpers
read_pid() { [ -r "$1" ] && tr -dc '0-9' <"$1" || true; }
# PID is a live process named NAME whose command line mentions WORD (never kill a reused pid).
is_ours() {
  local pid="$1" name="$2" word="$3"
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word"
}
# Stop PID (when it is ours): TERM, up to WAIT seconds, then KILL.
stop_pid() {
  local pid="$1" name="$2" word="$3" wait_s="$4"
  is_ours "$pid" "$name" "$word" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((wait_s * 5))); do
    is_ours "$pid" "$name" "$word" || return 0
    sleep 0.2
  done
  log "$name ($pid) ignored SIGTERM for ${wait_s} s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
}
dockerd_pid() {
  local pid
  pid="$(read_pid "$PID_FILE")"
  is_ours "$pid" dockerd "$SOCK" && echo "$pid"
}
b_answers() { timeout 10 docker -H "$HOST_B" info >/dev/null 2>&1; }
registry_answers_in() {  # NETNS_FILE: the registry's /v2/ answers at 127.0.0.1:5000 inside it
  nsenter --net="$1" curl -s --noproxy '*' -m 3 -o /dev/null -D - "http://$REGISTRY_ADDR/v2/" \
    2>/dev/null | grep -qi '^Docker-Distribution-Api-Version:'
}
relays_stop() {
  stop_pid "$(read_pid "$RELAY_B_PID")" socat "$RELAY_SOCK" 5
  stop_pid "$(read_pid "$RELAY_HOST_PID")" socat "$RELAY_SOCK" 5
  rm -f "$RELAY_B_PID" "$RELAY_HOST_PID" "$RELAY_SOCK"
}
b_stop() {
  relays_stop
  stop_pid "$(read_pid "$PID_FILE")" dockerd "$SOCK" 60
  # Its containerd (supervised by dockerd; left behind when dockerd was killed).
  stop_pid "$(read_pid "$EXEC_ROOT/containerd/containerd.pid")" containerd "$EXEC_ROOT" 20
  rm -f "$PID_FILE" "$SOCK" "$EXEC_ROOT/containerd/containerd.pid"
}
tail_logs() {
  [ -f "$DOCKERD_LOG" ] && { echo "--- last lines of $DOCKERD_LOG:"; tail -n 20 "$DOCKERD_LOG"; } >&2
  [ -f "$RELAY_LOG" ] && { echo "--- last lines of $RELAY_LOG:"; tail -n 8 "$RELAY_LOG"; } >&2
  return 0
}
fail() { tail_logs; die "$*"; }

# Both socats: the machine's side connects to the registry per connection, so a registry that
# restarts is picked up; host B's side listens on its loopback.
relays_start() {
  local netns="$1"
  relays_stop
  mkdir -p "$LOG_DIR"
  setsid nohup socat "UNIX-LISTEN:$RELAY_SOCK,fork,unlink-early,mode=600" "TCP:$REGISTRY_ADDR" \
    >>"$RELAY_LOG" 2>&1 </dev/null 8>&- &
  echo $! >"$RELAY_HOST_PID"
  for _ in $(seq 1 50); do [ -S "$RELAY_SOCK" ] && break; sleep 0.1; done
  setsid nohup nsenter --net="$netns" \
    socat "TCP-LISTEN:${REGISTRY_ADDR##*:},bind=${REGISTRY_ADDR%:*},fork,reuseaddr" \
    "UNIX-CONNECT:$RELAY_SOCK" >>"$RELAY_LOG" 2>&1 </dev/null 8>&- &
  echo $! >"$RELAY_B_PID"
  for _ in $(seq 1 50); do
    registry_answers_in "$netns" && return 0
    sleep 0.1
  done
  fail "the registry ($REGISTRY_ADDR) does not answer inside host B's network namespace through socat"
}

if [ "$STOP" = 1 ]; then
  b_stop
  log "host B stopped (its images stay in $DATA_ROOT)"
  exit 0
fi

# ------------------------------------------------------- fast path: already up
pid="$(dockerd_pid || true)"
if [ -n "$pid" ] && b_answers; then
  netns="/proc/$pid/ns/net"
  [ "$(readlink "$netns")" != "$(readlink /proc/self/ns/net)" ] \
    || die "the dockerd on $SOCK ($pid) runs in the machine's own network namespace: stop it (--stop)"
  if ! registry_answers_in "$netns"; then
    log "host B answers but does not reach the registry: restarting the socat forwarding"
    relays_start "$netns"
  fi
  echo "ENVSNAP_HOST_B=$HOST_B"
  exit 0
fi

# ----------------------------------------------------------- 1. prerequisites
timeout 20 docker info >/dev/null 2>&1 \
  || die "host A (docker info) does not answer: run scripts/docker-env.sh first"
curl -s --noproxy '*' -m 3 -o /dev/null -D - "http://$REGISTRY_ADDR/v2/" 2>/dev/null \
  | grep -qi '^Docker-Distribution-Api-Version:' \
  || die "no registry answers on http://$REGISTRY_ADDR/v2/: run scripts/docker-env.sh first"
command -v dockerd >/dev/null 2>&1 || die "dockerd not found: run scripts/docker-env.sh first"
for tool in unshare nsenter flock findmnt; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian's util-linux)"
done
missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} with apt"
  apt_log="$(mktemp)"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    die "apt-get install ${missing[*]} failed (log above)"
  fi
  rm -f "$apt_log"
fi

# ------------------------------------------------------------- 2. host B's dockerd
b_stop  # whatever is left of an earlier host B (dead, hung, or without its forwarding)
mkdir -p "$STATE_DIR" "$EXEC_ROOT" "$DATA_ROOT" "$LOG_DIR"
chmod 711 "$STATE_DIR"
echo '{}' >"$CONFIG_FILE"

# The storage and cgroup drivers that work for host A work for host B.
a_root="$(docker info -f '{{.DockerRootDir}}' 2>/dev/null || true)"
storage="$(docker info -f '{{.Driver}}' 2>/dev/null || true)"
cgroup_driver="$(docker info -f '{{.CgroupDriver}}' 2>/dev/null || true)"
[ "$a_root" != "$DATA_ROOT" ] || die "host A's data root is $DATA_ROOT, host B's own"
opts=(--host "$HOST_B" --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PID_FILE"
      --config-file "$CONFIG_FILE"
      --containerd-namespace envsnap-hostb --containerd-plugins-namespace envsnap-hostb-plugins
      --bridge none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false)
[ -n "$storage" ] && opts+=(--storage-driver "$storage")
case "$cgroup_driver" in
  systemd) opts+=(--exec-opt native.cgroupdriver=systemd --cgroup-parent envsnap-hostb.slice) ;;
  cgroupfs) opts+=(--exec-opt native.cgroupdriver=cgroupfs --cgroup-parent /envsnap-hostb) ;;
esac

# Runs inside the new namespaces, then becomes dockerd. It refuses to go on where it still sees
# the machine's network (the docker0 check: --bridge=none there would delete host A's bridge).
# In its private mount namespace it drops its copies of host A's container mounts (so it never
# pins them) and hides /run/containerd, so that dockerd starts its own containerd (a system
# containerd runs in the machine's mount namespace, where host B's mounts are not seen).
# shellcheck disable=SC2016
inner='
set -eu
[ "$(readlink /proc/self/ns/net)" != "$MACHINE_NETNS" ] || { echo "host-b: not in a new network namespace" >&2; exit 1; }
if ip link show docker0 >/dev/null 2>&1; then echo "host-b: docker0 visible: not in a new network namespace" >&2; exit 1; fi
hostname "$HOSTNAME_B"
ip link set lo up
for root in "$A_ROOT" /run/docker /var/run/docker; do
  [ -n "$root" ] || continue
  findmnt -rn -o TARGET | awk -v r="$root/" "index(\$0, r) == 1" | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
done
mkdir -p /run/containerd
mount -t tmpfs -o mode=711 envsnap-hostb /run/containerd
exec "$@"
'
log "starting host B: dockerd in its own network/mount/UTS namespaces (log: $DOCKERD_LOG)"
t0=$SECONDS
echo "--- $(date -u '+%F %T') scripts/host-b.sh: starting host B's dockerd" >>"$DOCKERD_LOG"
MACHINE_NETNS="$(readlink /proc/self/ns/net)" HOSTNAME_B="$HOSTNAME_B" A_ROOT="$a_root" \
  setsid nohup unshare --net --mount --uts --propagation private \
  sh -c "$inner" host-b-init dockerd "${opts[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null 8>&- &
launched=$!

pid=""
for _ in $(seq 1 120); do
  pid="$(dockerd_pid || true)"
  if [ -n "$pid" ] && b_answers; then break; fi
  if [ -z "$pid" ] && ! kill -0 "$launched" 2>/dev/null; then
    fail "host B's dockerd exited during startup (log above)"
  fi
  sleep 0.5
done
[ -n "$pid" ] && b_answers || fail "host B's dockerd did not answer on $SOCK within 60 s"
netns="/proc/$pid/ns/net"
[ "$(readlink "$netns")" != "$(readlink /proc/self/ns/net)" ] \
  || { b_stop; die "host B's dockerd runs in the machine's network namespace"; }
ip link show docker0 >/dev/null 2>&1 || log "WARNING: host A's docker0 is not there (had it one?)"

# ------------------------------------------------- 3. registry into host B's netns
relays_start "$netns"

# ----------------------------------------- 4. an image pushed from A pulls on B
if ! docker image inspect "$PROBE" >/dev/null 2>&1; then
  probe_dir="$(mktemp -d)"
  echo "envsnap host B probe" >"$probe_dir/probe"
  tar -C "$probe_dir" -c probe | docker import -m "envsnap scripts/host-b.sh probe" - "$PROBE" \
    >/dev/null || { rm -rf "$probe_dir"; die "docker import of the probe image failed on host A"; }
  rm -rf "$probe_dir"
fi
timeout 120 docker push -q "$PROBE" >/dev/null 2>&1 \
  || die "host A cannot push $PROBE to the registry"
pull_out="$(timeout 120 docker -H "$HOST_B" pull -q "$PROBE" 2>&1)" \
  || fail "host B cannot pull $PROBE from the registry: $pull_out"

log "host B up in $((SECONDS - t0)) s: $HOST_B (dockerd $pid, data root $DATA_ROOT)"
echo "ENVSNAP_HOST_B=$HOST_B"
