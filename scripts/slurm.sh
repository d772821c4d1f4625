#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages (slurm-wlm, munge), for the
# tests of `envsnap rerun --on slurm`, `collect` and `matrix` (see DESIGN.md, "The environment the
# tests run in"). The node is this machine; its container runtime is host A's docker engine
# (scripts/docker-env.sh brings it up first), and its shared filesystem is this machine's.
#
# Two partitions share the node so a matrix can name two: `debug` (the default) and `batch`. No
# GPUs (no gres). select/cons_tres with CR_Core, so two one-CPU jobs run at once. No accounting
# database: job states come from slurmctld (`scontrol show job`), which keeps a finished job for
# MinJobAge (an hour here).
#
# Idempotent: when the cluster already answers with its node up it only prints what it is (about
# a second). Otherwise it installs what is missing, writes /etc/slurm/slurm.conf (only when absent
# or written by this script: a machine's own cluster is never touched), starts munged, slurmctld
# and slurmd, waits until the node is idle and a trivial job ran, and fails loudly with the log
# tails if not. Prints `ENVSNAP_SLURM_PARTITIONS=debug,batch` on stdout.
#
# Usage: scripts/slurm.sh [--stop]
# Environment:
#   DOCKER_ENV_LOG_DIR  (default /var/log) for the daemons' logs
# Needs root.

set -euo pipefail

MARKER="# Written by envsnap's scripts/slurm.sh: a one-node test cluster."
CONF="/etc/slurm/slurm.conf"
STATE_DIR="/var/lib/envsnap-slurm"
RUN_DIR="/run/envsnap-slurm"
LOG_DIR="${DOCKER_ENV_LOG_DIR:-/var/log}"
CTLD_LOG="$LOG_DIR/envsnap-slurmctld.log"
SLURMD_LOG="$LOG_DIR/envsnap-slurmd.log"
MUNGE_LOG="/var/log/munge/munged.log"      # munged runs as munge and writes its own log
PARTITIONS="debug,batch"

STOP=0
for arg in "$@"; do
  case "$arg" in
    --stop) STOP=1 ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "slurm: ERROR: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

die() {
  echo "slurm: ERROR: $*" >&2
  for f in "$CTLD_LOG" "$SLURMD_LOG" "$MUNGE_LOG"; do
    [ -f "$f" ] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}
log() { echo "slurm: $*" >&2; }
[ "$(id -u)" = 0 ] || die "the test cluster needs root (daemons, /etc/slurm): run as root or with sudo"

stop_daemons() {
  for pidfile in "$RUN_DIR/slurmd.pid" "$RUN_DIR/slurmctld.pid"; do
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

if [ "$STOP" = 1 ]; then
  stop_daemons
  log "stopped slurmctld and slurmd (munged is left running)"
  exit 0
fi

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true; }

if scontrol ping 2>/dev/null | grep -q 'is UP' && [ "$(node_state)" = idle ] \
  && grep -qxF "$MARKER" "$CONF" 2>/dev/null; then
  echo "ENVSNAP_SLURM_PARTITIONS=$PARTITIONS"
  exit 0
fi

# --- packages ----------------------------------------------------------------------------------
missing=()
for pkg in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (Debian's packages)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}" >&2; } || die "apt-get install ${missing[*]} failed (log above)"
  fi
fi

# --- configuration -----------------------------------------------------------------------------
if [ -f "$CONF" ] && ! grep -qxF "$MARKER" "$CONF"; then
  die "$CONF exists and was not written by this script; envsnap's tests will not touch a machine's own cluster (point them at a machine without one)"
fi
node="$(hostname -s)"
cpus="$(nproc)"
mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/spool" "$RUN_DIR" "$LOG_DIR" /etc/slurm
cat > "$CONF.tmp" <<EOF
$MARKER
ClusterName=envsnap
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=10
MinJobAge=3600
SlurmdTimeout=60
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$node Default=NO MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"
chmod 644 "$CONF"

# --- daemons -----------------------------------------------------------------------------------
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  [ -s /etc/munge/munge.key ] || { mungekey --create --force >&2 || die "mungekey failed"; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0700 /etc/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --log-file="$MUNGE_LOG" >&2 || die "munged did not start"
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not answer"
fi

stop_daemons
log "starting slurmctld and slurmd (node $node, $cpus CPUs, partitions $PARTITIONS)"
/usr/sbin/slurmctld -i >&2 || die "slurmctld did not start"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
scontrol ping 2>/dev/null | grep -q 'is UP' || die "slurmctld does not answer"
/usr/sbin/slurmd >&2 || die "slurmd did not start"
for _ in $(seq 150); do
  state="$(node_state)"
  [ "$state" = idle ] && break
  case "$state" in down*|drain*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;; esac
  sleep 0.2
done
[ "$(node_state)" = idle ] || die "the node did not come up idle (state: $(node_state))"

# A trivial job, so that a broken node is found here and not in a test.
out="$(srun -p debug -N1 -n1 -t 1 --quit-on-interrupt /bin/echo envsnap-slurm-ok 2>&1)" \
  || die "a trivial job failed: $out"
[ "$out" = envsnap-slurm-ok ] || die "a trivial job printed $out"
log "cluster up"
echo "ENVSNAP_SLURM_PARTITIONS=$PARTITIONS"
