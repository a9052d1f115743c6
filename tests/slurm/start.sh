#!/usr/bin/env bash
# Starts a single-node Slurm on this machine (as root, no systemd): munge, slurmctld, slurmd,
# one node named after `hostname -s` with all its CPUs, one default partition `debug`.
# Used by .ci/run and by developers before `cargo test --release --test cli slurm::`.
# Idempotent: does nothing when `sinfo` already answers. Needs root; installs the Debian
# packages slurm-wlm and munge when they are missing.
set -euo pipefail

if command -v sinfo >/dev/null && sinfo -h >/dev/null 2>&1 && srun -t 1 true >/dev/null 2>&1; then
    echo "slurm: already running ($(sinfo -h -o '%P %D %T' | head -1))"
    exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a random key owned by munge, mode 400.
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 1024 * 9 / 10 ))
conf=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf" <<CONF
ClusterName=hone
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ReturnToService=2
MinJobAge=600
# Quick turnaround for small test jobs.
SchedulerParameters=defer_batch=0
MessageTimeout=20
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        break
    fi
    sleep 1
done
scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
if ! srun -t 1 true; then
    echo "slurm: started but cannot run a job; see /var/log/slurm/" >&2
    exit 1
fi
echo "slurm: running on $host ($cpus CPUs, ${mem} MB)"
