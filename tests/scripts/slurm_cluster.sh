#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (controller + compute node in one), so that
# `python src/train.py -m hydra/launcher=slurm ...` and tests/test_slurm.py run real SLURM jobs.
#
#   sudo tests/scripts/slurm_cluster.sh          # start (idempotent: a running cluster is kept)
#   sudo tests/scripts/slurm_cluster.sh --stop   # stop slurmctld, slurmd and munged
#
# Needs root (daemons, /etc/slurm). Installs Debian's slurm-wlm and munge when missing.
# No accounting (no slurmdbd): `squeue` and `scontrol show job` show jobs, `sacct` does not.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by classicnets tests/scripts/slurm_cluster.sh"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
NODE=$(hostname -s)

say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: ERROR: $*" >&2; exit 1; }

# Stop one daemon by the pid it wrote, never by name: other slurm/munge processes may exist.
stop_pidfile() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        say "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_cluster() {
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
    stop_pidfile "$MUNGE_PID" munged
}

show_logs() {
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        [[ -f $f ]] && { echo "---- last lines of $f"; tail -n 25 "$f"; }
    done
    return 0
}

case "${1:-}" in
    --stop) [[ $EUID -eq 0 ]] || die "run as root"; stop_cluster; exit 0 ;;
    "") ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown option $1 (use --stop or nothing)" ;;
esac
[[ $EUID -eq 0 ]] || die "run as root (it starts system daemons and writes $CONF)"

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v srun >/dev/null; then
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# ---------------------------------------------------------------- munge (authenticates every RPC)
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f "$MUNGE_PID"
    # as the munge user, as packaged; root needs --force (munged refuses root otherwise)
    runuser -u munge -- /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n | unmunge >/dev/null || die "munged does not answer; see /var/log/munge/munged.log"
    say "munged started"
fi

# ---------------------------------------------------------------- slurm.conf
# SLURM and the jobs' DDP rendezvous (MASTER_ADDR = the node's name) need the name to resolve
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts
NCPU=$(nproc)
# Twice the cores: two 2-task DDP jobs (a 2-job sweep) run at once, as array jobs do on a real
# cluster, instead of queueing behind each other; small test jobs spend most of their time
# starting Python, so overlapping them halves the wall time. config_overrides lets slurmd accept
# a node description larger than the hardware.
CPUS=$((2 * NCPU))
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
NEW=$(mktemp)
trap 'rm -f "$NEW"' EXIT
cat >"$NEW" <<EOF
$MARK
ClusterName=classicnets
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups: linuxproc tracks a job's processes by parent pid, task/none binds nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# jobs may be requeued (preemption; classicnets' SlurmRequeue at the time-limit signal)
JobRequeue=1
# no accounting database: squeue/scontrol only
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
# seconds between SIGTERM and SIGKILL when a job ends, is cancelled or requeued
KillWait=30
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

if [[ -f $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real cluster's config"
fi
CHANGED=0
if ! cmp -s "$NEW" "$CONF" 2>/dev/null; then
    CHANGED=1
    mkdir -p "$(dirname "$CONF")"
    install -m 0644 "$NEW" "$CONF"
    say "wrote $CONF (node $NODE, CPUs=$CPUS, RealMemory=${MEM_MB}MB)"
fi
mkdir -p "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"

# ---------------------------------------------------------------- daemons
if [[ $CHANGED == 1 ]]; then
    # a running cluster with another config must restart to read this one
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
fi
if ! alive "$CTLD_PID"; then
    slurmctld || { show_logs; die "slurmctld did not start"; }
    say "slurmctld started"
fi
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || { show_logs; die "slurmctld does not answer (scontrol ping)"; }
if ! alive "$SLURMD_PID"; then
    slurmd || { show_logs; die "slurmd did not start"; }
    say "slurmd started"
fi

state=""
for _ in $(seq 60); do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1)
    case $state in
        idle|mix|alloc) break ;;
        # a node left down/drained by an earlier run (e.g. killed slurmd) is fine to resume
        down*|drain*|drng*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
[[ $state =~ ^(idle|mix|alloc)$ ]] || { show_logs; die "node $NODE is '$state', not idle"; }
out=$(timeout 60 srun -n 2 -t 1 hostname 2>&1) || { echo "$out"; show_logs; die "srun -n 2 failed"; }
[[ $(grep -c . <<<"$out") -eq 2 ]] || { echo "$out"; die "srun -n 2 did not run 2 tasks"; }

sinfo
say "ready: one node '$NODE' with $CPUS CPUs in partition 'debug'"
say "logs: $LOG_DIR/slurmctld.log, $LOG_DIR/slurmd.log; stop with: $0 --stop"
