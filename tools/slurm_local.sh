#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the paper rehearsal (README: "Rehearse before
# you book GPUs"): munged, MariaDB (accounting storage), slurmdbd, slurmctld and slurmd, every one
# bound to 127.0.0.1, all state under one directory. Debian's packages (slurmctld, slurmd,
# slurm-client, slurmdbd, munge, mariadb-server) are installed with apt when missing.
#
#   tools/slurm_local.sh start [STATE_DIR]    write the configs, start the daemons, wait until the node is idle
#   tools/slurm_local.sh stop  [STATE_DIR]    stop every daemon started from STATE_DIR
#   tools/slurm_local.sh env   [STATE_DIR]    print `export SLURM_CONF=...` for this cluster
#
# STATE_DIR defaults to /tmp/refine-slurm. The cluster is named "rehearsal", its one partition
# "rehearsal" (the node: this machine's CPUs and 3/4 of its memory, no GPUs), its account
# "rehearsal" (the user who starts it is added to it). Ports: slurmctld 16817, slurmd 16818,
# slurmdbd 16819, MariaDB 16820 (127.0.0.1 only).
set -euo pipefail

cmd="${1:-}"
STATE="${2:-/tmp/refine-slurm}"
CONF="$STATE/etc/slurm.conf"
NODE=localhost

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    for bin in slurmctld slurmd sbatch slurmdbd munged mariadbd; do
        command -v "$bin" > /dev/null || missing+=("$bin")
    done
    if ((${#missing[@]})); then
        echo "installing SLURM, munge and MariaDB (missing: ${missing[*]})"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client slurmdbd munge \
            mariadb-server > "$STATE/log/apt.log" 2>&1 || die "apt-get install failed, see $STATE/log/apt.log"
    fi
}

write_configs() {
    local cpus mem
    cpus=$(nproc)
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) * 3 / 4 / 1024))
    cat > "$CONF" << EOF
# Written by tools/slurm_local.sh: one node (this machine), accounting in slurmdbd.
ClusterName=rehearsal
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=3600
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=16819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStoreFlags=job_comment
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=rehearsal Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$STATE/etc/slurmdbd.conf" << EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=16820
StorageUser=slurm
StoragePass=rehearsal
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$seconds"); do
        if "$@" > /dev/null 2>&1; then return 0; fi
        sleep 1
    done
    die "$what did not come up within ${seconds}s (logs in $STATE/log)"
}

start() {
    mkdir -p "$STATE"/{etc,ctld,spool,run,log,db}
    install_packages
    write_configs
    export SLURM_CONF="$CONF"
    # Job steps (srun inside an sbatch job) do not see SLURM_CONF: link the default location,
    # unless a real cluster's config is there.
    if [ -e /etc/slurm/slurm.conf ] && ! grep -q "Written by tools/slurm_local.sh" /etc/slurm/slurm.conf; then
        die "/etc/slurm/slurm.conf exists and is not a rehearsal cluster's: not overwriting it"
    fi
    mkdir -p /etc/slurm
    ln -sfn "$CONF" /etc/slurm/slurm.conf
    # munge: its socket directory lives in /run
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create --force 2> /dev/null || create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key
    pgrep -x munged > /dev/null || runuser -u munge -- /usr/sbin/munged --force
    wait_for 20 munged sh -c 'munge -n | unmunge'
    # MariaDB for accounting (sacct), run as root: STATE_DIR may sit below folders that only root
    # can enter (pytest's temporary folders are 0700)
    if [ ! -d "$STATE/db/mysql" ]; then
        mariadb-install-db --user=root --datadir="$STATE/db" > "$STATE/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed, see $STATE/log/mariadb-install.log"
    fi
    if ! mariadb --socket="$STATE/db/mysql.sock" -uroot -e 'select 1' > /dev/null 2>&1; then
        mariadbd --user=root --datadir="$STATE/db" --socket="$STATE/db/mysql.sock" --bind-address=127.0.0.1 \
            --port=16820 --pid-file="$STATE/db/mariadb.pid" > "$STATE/log/mariadb.log" 2>&1 &
        wait_for 30 MariaDB mariadb --socket="$STATE/db/mysql.sock" -uroot -e 'select 1'
    fi
    mariadb --socket="$STATE/db/mysql.sock" -uroot -e "create user if not exists 'slurm'@'localhost' \
        identified by 'rehearsal'; create user if not exists 'slurm'@'127.0.0.1' identified by 'rehearsal'; \
        grant all on slurm_acct_db.* to 'slurm'@'localhost'; grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1';"
    [ -f "$STATE/run/slurmdbd.pid" ] && kill -0 "$(cat "$STATE/run/slurmdbd.pid")" 2> /dev/null || slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster rehearsal > /dev/null 2>&1 || true
    sacctmgr -i add account rehearsal cluster=rehearsal description=rehearsal organization=refine > /dev/null 2>&1 \
        || true
    sacctmgr -i add user "$(id -un)" account=rehearsal cluster=rehearsal defaultaccount=rehearsal > /dev/null 2>&1 \
        || true
    [ -f "$STATE/run/slurmctld.pid" ] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2> /dev/null || slurmctld
    [ -f "$STATE/run/slurmd.pid" ] && kill -0 "$(cat "$STATE/run/slurmd.pid")" 2> /dev/null || slurmd -N "$NODE"
    wait_for 60 "the SLURM node" sh -c "sinfo -h -N -o %t | grep -qx idle"
    echo "SLURM is up: export SLURM_CONF=$CONF"
}

stop() {
    export SLURM_CONF="$CONF"
    for daemon in slurmd slurmctld slurmdbd; do
        if [ -f "$STATE/run/$daemon.pid" ]; then
            kill "$(cat "$STATE/run/$daemon.pid")" 2> /dev/null || true
            rm -f "$STATE/run/$daemon.pid"
        fi
    done
    if [ -f "$STATE/db/mariadb.pid" ]; then
        kill "$(cat "$STATE/db/mariadb.pid")" 2> /dev/null || true
    fi
    # wait until the daemons of this STATE_DIR are gone (a next start reuses their ports)
    for _ in $(seq 20); do
        pgrep -f -- "$STATE" > /dev/null || break
        sleep 1
    done
    pkill -9 -f -- "--datadir=$STATE/db" 2> /dev/null || true
    [ "$(readlink /etc/slurm/slurm.conf 2> /dev/null)" = "$CONF" ] && rm -f /etc/slurm/slurm.conf
    echo "SLURM stopped ($STATE)"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "usage: tools/slurm_local.sh start|stop|env [STATE_DIR]" ;;
esac
