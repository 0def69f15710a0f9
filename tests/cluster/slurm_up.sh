#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, on 127.0.0.1: `make test-slurm` runs
# tests/cluster/run_demo_data_half.sh, which calls this first.
#
#   sudo tests/cluster/slurm_up.sh [up|down|status]      (default: up)
#
# up: installs Debian's slurm-wlm, slurmdbd, munge and mariadb-server (apt, once), writes slurm.conf,
# slurmdbd.conf and cgroup.conf for this machine (its CPU topology and memory as `slurmd -C` reads
# them), starts munge, mariadb, slurmdbd, slurmctld and slurmd, registers the cluster, an account
# and this user in the accounting database, and waits until `sinfo` shows the node idle. It is
# idempotent: a daemon that is already running is left alone.
# down: stops the daemons this script started (by the pid files it wrote), nothing else.
#
# Why accounting (slurmdbd + mariadb): snakemake-executor-plugin-slurm reads job states with
# `sacct`; without accounting it falls back to `squeue`, which forgets a job minutes after it ends
# (MinJobAge), so a slow poll can lose a finished job. The test cluster has what a real one has.
#
# Process tracking is proctrack/linuxproc and task/none by default: they work in a container or a VM
# without a delegated cgroup tree. VLALERT_SLURM_CGROUP=1 uses proctrack/cgroup + task/cgroup
# instead (cgroup.conf below), as a production cluster would.
#
# Environment: VLALERT_SLURM_CLUSTER (default vlalert), VLALERT_SLURM_ACCOUNT (default vlalert),
# VLALERT_SLURM_PARTITION (default debug), VLALERT_SLURM_TIMEOUT_S (default 120: how long to wait
# for the node).
set -euo pipefail

CLUSTER=${VLALERT_SLURM_CLUSTER:-vlalert}
ACCOUNT=${VLALERT_SLURM_ACCOUNT:-vlalert}
PARTITION=${VLALERT_SLURM_PARTITION:-debug}
TIMEOUT_S=${VLALERT_SLURM_TIMEOUT_S:-120}
CONF_DIR=/etc/slurm
RUN_DIR=/run/vlalert-slurm      # pid files of the daemons started here
LOG_DIR=/var/log/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS_FILE=/etc/slurm/.vlalert_dbpass

say() { printf '[slurm_up %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (sudo $0): it installs packages, writes /etc/slurm and starts daemons"

running() {  # running NAME: its pid file names a live process
    local pid_file=$RUN_DIR/$1.pid
    [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd slurmdbd munged mariadbd sacct; do
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) && return
    say "installing slurm-wlm slurmdbd munge mariadb-server (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q slurm-wlm slurmdbd munge mariadb-server mariadb-client >/dev/null
}

write_configs() {
    local node host topo mem proctrack task
    host=$(hostname -s)
    # What slurmd itself detects: the node line must not promise more than the machine has, or
    # slurmctld drains the node ("Low RealMemory", "Low socket*core*thread count").
    topo=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ RealMemory=[0-9]*//')
    mem=$(slurmd -C | head -1 | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem * 95 / 100))  # leave the OS its share: jobs are scheduled within this
    node="NodeName=$host NodeAddr=127.0.0.1 $topo RealMemory=$mem State=UNKNOWN"
    if [[ ${VLALERT_SLURM_CGROUP:-0} == 1 ]]; then
        proctrack=proctrack/cgroup task=task/cgroup,task/affinity
    else
        proctrack=proctrack/linuxproc task=task/none
    fi
    mkdir -p "$CONF_DIR" "$LOG_DIR" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd "$RUN_DIR"
    chown slurm:slurm "$LOG_DIR" /var/lib/slurm/slurmctld
    cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by tests/cluster/slurm_up.sh: a single-node test cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=$proctrack
TaskPlugin=$task
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Accounting through slurmdbd: what sacct (and so the Snakemake executor plugin) reads.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MinJobAge=300
$node
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/cgroup.conf" <<EOF
# Written by tests/cluster/slurm_up.sh. Read only with VLALERT_SLURM_CGROUP=1 (proctrack/cgroup,
# task/cgroup); the default proctrack/linuxproc + task/none needs no cgroup tree.
CgroupPlugin=autodetect
ConstrainCores=yes
ConstrainRAMSpace=yes
EOF
    [[ -s $DB_PASS_FILE ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASS_FILE")
    (
        umask 077
        cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# Written by tests/cluster/slurm_up.sh: accounting in the local mariadb.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$(cat "$DB_PASS_FILE")
StorageLoc=$DB_NAME
EOF
    )
    chown slurm:slurm "$CONF_DIR/slurmdbd.conf"  # slurmdbd refuses a file its SlurmUser does not own
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        /usr/sbin/mungekey --create --force >/dev/null
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    say "starting munged"
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    munge -n | unmunge >/dev/null || die "munge does not round-trip a credential"
    cp /run/munge/munged.pid "$RUN_DIR/munged.pid"  # munged's own pid file, once it answers
}

start_mariadb() {
    if ! mariadb-admin ping >/dev/null 2>&1; then
        say "starting mariadb"
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        # mysqld_safe restarts the server if it dies; its pid is what `down` stops.
        nohup mysqld_safe >/dev/null 2>&1 &
        echo $! >"$RUN_DIR/mysqld_safe.pid"
        for _ in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 1; done
        mariadb-admin ping >/dev/null 2>&1 || die "mariadb did not start"
    fi
    local pass
    pass=$(cat "$DB_PASS_FILE")
    mariadb -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
        ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
        GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
        FLUSH PRIVILEGES;"
}

start_daemon() {  # start_daemon NAME READY_COMMAND...: start /usr/sbin/NAME unless running, wait until ready
    local name=$1
    shift
    if ! running "$name"; then
        say "starting $name"
        "/usr/sbin/$name"
    fi
    for _ in $(seq "$TIMEOUT_S"); do "$@" >/dev/null 2>&1 && return; sleep 1; done
    die "$name is not ready after ${TIMEOUT_S}s: see $LOG_DIR/$name.log"
}

register_accounting() {
    # Each add fails harmlessly when the entry exists (sacctmgr has no "if not exists").
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="vlalert test" >/dev/null 2>&1 || true
    local user=${SUDO_USER:-$(id -un)}
    for u in $(printf '%s\n' root "$user" | sort -u); do
        sacctmgr -i add user "$u" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
    done
    sacctmgr -n -P list associations cluster="$CLUSTER" account="$ACCOUNT" format=user | grep -q . ||
        die "no association for account $ACCOUNT in cluster $CLUSTER"
}

wait_idle() {
    local host state
    host=$(hostname -s)
    for _ in $(seq "$TIMEOUT_S"); do
        state=$(sinfo -h -N -n "$host" -o '%T' 2>/dev/null | head -1)
        case $state in
            idle) say "node $host idle: $(sinfo -h -N -n "$host" -o '%c CPUs, %m MB, partition %P')"; return ;;
            drain* | down*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    die "node $host is '${state:-unknown}' after ${TIMEOUT_S}s, not idle: $(sinfo -h -N -R 2>&1)"
}

up() {
    install_packages
    mkdir -p "$RUN_DIR"
    write_configs
    start_munge
    start_mariadb
    start_daemon slurmdbd sacctmgr -n show cluster
    register_accounting
    start_daemon slurmctld scontrol ping
    # slurmctld registers the cluster with slurmdbd on start: the association shows up after it.
    start_daemon slurmd scontrol show node "$(hostname -s)"
    wait_idle
}

down() {
    # Only what this script started, newest first, by the pid files under $RUN_DIR.
    for name in slurmd slurmctld slurmdbd mysqld_safe munged; do
        local pid_file=$RUN_DIR/$name.pid
        [[ -f $pid_file ]] || continue
        local pid
        pid=$(cat "$pid_file")
        if kill -0 "$pid" 2>/dev/null; then
            say "stopping $name ($pid)"
            if [[ $name == mysqld_safe ]]; then
                mariadb-admin shutdown  # a clean server shutdown; mysqld_safe then exits by itself
            else
                kill "$pid"
            fi
        fi
        rm -f "$pid_file"
    done
}

case ${1:-up} in
    up) up ;;
    down) down ;;
    status) sinfo && sacctmgr -n show cluster ;;
    *) die "usage: $0 [up|down|status]" ;;
esac
