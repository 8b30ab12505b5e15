#!/usr/bin/env bash
# Start (or re-check) a one-node Slurm cluster on this machine for treadle's tests
# and benchmarks: `make slurm-up`. Needs root; Debian 12 with no systemd.
#
# The node is this host, reached on 127.0.0.1. Running it again while the daemons
# are up only checks them, unless the configuration changed (then they restart).
# `ci/slurm-down.sh` stops everything this script started, by PID file.
#
# Settings, all optional:
#   SLURM_CPUS         CPUs the node advertises (default 8, more than the machine
#                      has: the tests want several jobs at once on a 2-core VM)
#   SLURM_ACCOUNTING   1 also runs slurmdbd on a local MariaDB, so sacct works
#   SLURM_SMOKE        0 skips the final test job
# Docs: docs/batch.md, "A test cluster on one machine".
set -euo pipefail

cpus=${SLURM_CPUS:-8}
accounting=${SLURM_ACCOUNTING:-0}
smoke=${SLURM_SMOKE:-1}
node=$(hostname -s)
logs=/var/log/slurm
conf=/etc/slurm/slurm.conf
export DEBIAN_FRONTEND=noninteractive

say() { echo "slurm-up: $*"; }
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$(id -u)" != 0 ]; then
    echo "slurm-up: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

# 1. Packages, without recommends (those pull in dozens of plugin and -dev packages).
wanted="slurmctld slurmd slurm-client munge"
[ "$accounting" = 1 ] && wanted="$wanted slurmdbd mariadb-server"
absent=$(for p in $wanted; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"
done)
if [ -n "$absent" ]; then
    say "installing" $absent
    # No daemon may start from a package's install script: we start them ourselves.
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $absent >/dev/null
    if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# 2. munge: a key, its run directory, the daemon, and a round trip.
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
if ! running /run/munge/munged.pid; then
    rm -f /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || { echo "slurm-up: munge does not work" >&2; exit 1; }

# 3. Accounting (optional): MariaDB on its socket only, and slurmdbd.
if [ "$accounting" = 1 ]; then
    storage="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux"
    install -d -o mysql -g mysql /run/mysqld
    if ! running /run/mysqld/mysqld.pid; then
        (mysqld_safe --skip-networking --pid-file=/run/mysqld/mysqld.pid >/dev/null 2>&1 &)
        for _ in $(seq 150); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'treadle';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    cat >/etc/slurm/slurmdbd.conf <<DBD
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$logs/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=treadle
DBD
    chmod 600 /etc/slurm/slurmdbd.conf
else
    storage="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

# 4. slurm.conf. The controller's name must be `hostname -s`; the node advertises
# $cpus CPUs (config_overrides lets slurmd accept more than the machine has).
memory=$(awk '/^MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
overrides=""
[ "$cpus" -gt "$(nproc)" ] && overrides="SlurmdParameters=config_overrides"
install -d -m 755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$logs"
candidate=$(mktemp)
cat >"$candidate" <<CONF
# Written by treadle's ci/slurm-up.sh: a one-node test cluster on 127.0.0.1.
ClusterName=treadle
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=600
JobCompType=jobcomp/filetxt
JobCompLoc=$logs/jobcomp.log
$storage
$overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$candidate" "$conf"; then
    # A changed node (CPUs, memory) needs restarted daemons, not a reconfigure.
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidfile"; then
            pid=$(cat "$pidfile")
            say "configuration changed: restarting $(basename "$pidfile" .pid)"
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
fi
mv "$candidate" "$conf"
chmod 644 "$conf"

# 5. Daemons, as plain background processes.
if [ "$accounting" = 1 ] && ! running /run/slurmdbd.pid; then
    slurmdbd
    for _ in $(seq 150); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
fi
if ! running /run/slurmctld.pid; then
    say "starting slurmctld"
    rm -rf /var/spool/slurmctld/*
    slurmctld -c
fi
if [ "$accounting" = 1 ]; then
    sacctmgr -i add cluster treadle >/dev/null 2>&1 || true
fi
if ! running /run/slurmd.pid; then
    say "starting slurmd"
    slurmd -c -N "$node"
fi

# 6. Ready when the node is usable; then one real job through the whole path.
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    case "$state" in idle|mixed|allocated) break ;; esac
    state=""
    sleep 0.2
done
if [ -z "$state" ]; then
    echo "slurm-up: node $node is not ready; see $logs/slurmctld.log and $logs/slurmd.log" >&2
    exit 1
fi
if [ "$smoke" = 1 ]; then
    job=$(sbatch --parsable --job-name=treadle-smoke -o /dev/null --wrap true)
    job=${job%%;*}
    for _ in $(seq 150); do
        state=$(scontrol show job -o "$job" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        [ "$state" = COMPLETED ] && break
        sleep 0.1
    done
    [ "$state" = COMPLETED ] || { echo "slurm-up: test job $job ended $state" >&2; exit 1; }
fi
say "ready: $(sinfo -h -o '%P %T %N %c CPUs')"
