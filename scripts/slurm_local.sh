#!/usr/bin/env bash
# A two-node SLURM cluster on this machine, for developers and CI: the real sbatch/srun/scancel, so the
# pipeline's SLURM launcher and multi-node DDP run here as on a cluster (tests marked `slurm`).
#   scripts/slurm_local.sh start    install slurm-wlm and munge when missing (apt, as root), start munged,
#                                   slurmctld and two slurmd ("node1", "node2", both this machine), wait
#                                   until both nodes are idle; does nothing when the cluster already runs
#   scripts/slurm_local.sh stop     cancel its jobs and stop exactly the daemons it started
#   scripts/slurm_local.sh status   sinfo, or why there is no cluster
# Its files live in $SLURM_LOCAL_DIR (default /tmp/slurm-local; logs in log/). The configuration is linked
# as /etc/slurm/slurm.conf, where sbatch and sinfo look for it; a slurm.conf that is not this script's is
# never touched (that machine has SLURM of its own). Bash, not Python: it is a few daemons and apt.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
SYSTEM_CONF=/etc/slurm/slurm.conf
NODES=(node1 node2)
HOSTS_MARK="# slurm_local.sh"  # ends the /etc/hosts line that makes the node names resolve here

fail() { echo "slurm_local: $*" >&2; exit 1; }
say() { echo "slurm_local: $*"; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

ours() { [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$DIR/slurm.conf" ]]; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    [[ $(id -u) == 0 ]] || fail "slurm-wlm and munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || fail "slurm-wlm and munge are not installed and there is no apt-get"
    say "installing slurm-wlm and munge with apt"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q slurm-wlm munge || { apt-get update -q && apt-get install -y -q slurm-wlm munge; }; } \
        >"$DIR/log/apt.log" 2>&1 || fail "apt-get install slurm-wlm munge failed: see $DIR/log/apt.log"
}

write_config() {
    local host cpus memory_mb
    host=$(hostname -s)
    cpus=$(nproc)
    memory_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / ${#NODES[@]}))  # the nodes share it
    cat >"$DIR/slurm.conf" <<EOF
# written by scripts/slurm_local.sh: two nodes on this one machine, no cgroups, no accounting
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=node[1-${#NODES[@]}] NodeHostname=$host NodeAddr=127.0.0.1 Port=[6818-$((6817 + ${#NODES[@]}))] CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

resolve_node_names() {
    # Lightning's DDP under SLURM connects to the first node by its name, as on a real cluster
    local missing=()
    for node in "${NODES[@]}"; do getent hosts "$node" >/dev/null || missing+=("$node"); done
    if ((${#missing[@]})); then echo "127.0.0.1 ${missing[*]} $HOSTS_MARK" >>/etc/hosts; fi
}

forget_node_names() {
    local kept
    kept=$(grep -v -- "$HOSTS_MARK\$" /etc/hosts) || true
    printf '%s\n' "$kept" >/etc/hosts  # rewritten in place: /etc/hosts may be a mount that cannot be renamed
}

start_munged() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged already answers: use it, and leave it running on stop
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start: see /var/log/munge/munged.log"
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
}

wait_idle() {
    for _ in $(seq 60); do
        if [[ $(sinfo -h -o '%t' 2>/dev/null | sort -u) == idle ]]; then
            return
        fi
        sleep 1
    done
    fail "the nodes did not become idle within 60 s: see $DIR/log/"
}

start() {
    if ours && alive "$DIR/run/slurmctld.pid"; then
        say "already running"; sinfo; return
    fi
    [[ -e $SYSTEM_CONF ]] && ! ours && fail "$SYSTEM_CONF exists and is not this script's: this machine has its own SLURM"
    [[ $(id -u) == 0 ]] || fail "starting the daemons needs root"
    rm -rf "$DIR" && mkdir -p "$DIR"/{log,run,state} "${NODES[@]/#/$DIR/spool/}"
    install_packages
    write_config
    mkdir -p "$(dirname "$SYSTEM_CONF")" && ln -sfn "$DIR/slurm.conf" "$SYSTEM_CONF"
    resolve_node_names
    start_munged
    slurmctld || fail "slurmctld did not start: see $DIR/log/slurmctld.log"
    for node in "${NODES[@]}"; do
        slurmd -N "$node" || fail "slurmd $node did not start: see $DIR/log/slurmd-$node.log"
    done
    wait_idle
    say "started (${#NODES[@]} nodes, $(nproc) CPUs each, files in $DIR)"
    sinfo
}

stop() {
    if ours; then
        scancel --full --signal=KILL --partition=local 2>/dev/null || true
    fi
    local pid_file
    for pid_file in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
        if alive "$pid_file"; then
            kill "$(cat "$pid_file")"
            for _ in $(seq 30); do alive "$pid_file" || break; sleep 0.5; done
        fi
        rm -f "$pid_file"
    done
    if ours; then rm -f "$SYSTEM_CONF"; fi
    forget_node_names
    say "stopped"
}

status() {
    ours || fail "no cluster of this script's is configured (scripts/slurm_local.sh start)"
    sinfo
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) fail "usage: scripts/slurm_local.sh start|stop|status" ;;
esac
