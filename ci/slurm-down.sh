#!/usr/bin/env bash
# Stop the test cluster of ci/slurm-up.sh (`make slurm-down`): cancel every job,
# then stop each daemon through its PID file (never by process name), KILL after 10 s.
set -uo pipefail

stop() {
    local pidfile=$1 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm-down: $pidfile ($pid) did not stop; killing it"
            kill -KILL "$pid"
        fi
    fi
    rm -f "$pidfile"
}

if [ -s /run/slurmctld.pid ] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        scancel $jobs
        for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
    fi
fi
stop /run/slurmd.pid &
stop /run/slurmctld.pid &
stop /run/slurmdbd.pid &
wait
if [ -s /run/mysqld/mysqld.pid ]; then
    mysqladmin shutdown 2>/dev/null || stop /run/mysqld/mysqld.pid
fi
stop /run/munge/munged.pid
echo "slurm-down: stopped"
