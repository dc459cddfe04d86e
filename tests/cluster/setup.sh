#!/usr/bin/env bash
# Install and start a single-node SLURM and a single-node Grid Engine on this machine
# (Debian, as root), for the tests marked `slurm` and `sge`. Safe to run again: a
# scheduler that already answers is left alone.
#
#   tests/cluster/setup.sh [slurm] [sge]     (both by default)
#
# Exits non-zero when a scheduler could not be started; .ci/run warns and goes on (the
# tests that need it then skip).
set -uo pipefail

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(slurm sge)
host=$(hostname)
status=0

say() { printf '[cluster setup] %s\n' "$*"; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "not root: cannot install schedulers"
        exit 1
    fi
}

apt_install() {
    if [ -z "${_apt_updated:-}" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

wait_for() {  # wait_for SECONDS COMMAND...
    local limit=$1
    shift
    for _ in $(seq 1 "$((limit * 2))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

slurm_idle() { sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

setup_slurm() {
    if slurm_idle; then
        say "SLURM is already running"
        return 0
    fi
    command -v slurmctld >/dev/null || apt_install slurm-wlm munge || {
        say "installing slurm-wlm failed"
        return 1
    }
    mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    fi
    chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
    # more CPUs than the machine has (config_overrides lets slurmd accept that): the
    # tests' jobs mostly sleep, and several of them must run at once
    local cpus
    cpus=$(nproc)
    [ "$cpus" -lt 8 ] && cpus=8
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat >/etc/slurm/slurm.conf <<CONF
ClusterName=scriptflow
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MinJobAge=300
SlurmdParameters=config_overrides
KillWait=5
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    if wait_for 30 slurm_idle; then
        say "SLURM is up: $(sinfo -h -o '%P %D %t' | tr '\n' ' ')"
        return 0
    fi
    say "SLURM did not come up; last lines of its logs:"
    tail -n 5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log 2>/dev/null
    return 1
}

# the queue instance exists and is neither unknown (no exec daemon) nor in error
sge_ready() {
    qstat -f 2>/dev/null | grep -q 'all.q@' && ! qstat -f | grep 'all.q@' | grep -qE ' (au|u|E)$'
}

setup_sge() {
    export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
    # as for SLURM: more slots than cores, the tests' jobs mostly sleep
    local slots
    slots=$(nproc)
    [ "$slots" -lt 8 ] && slots=8
    if qstat >/dev/null 2>&1 && qhost 2>/dev/null | grep -q "$host"; then
        qconf -mattr queue slots "$slots" all.q >/dev/null 2>&1 || true
        qconf -mattr queue shell_start_mode unix_behavior all.q >/dev/null 2>&1 || true
        if ! sge_ready; then  # the master answers, but the exec daemon is gone
            say "Grid Engine's exec daemon is down: restarting it"
            /etc/init.d/gridengine-exec restart >/dev/null 2>&1 || /etc/init.d/gridengine-exec start
            wait_for 30 sge_ready || { say "Grid Engine's queue stays unavailable"; return 1; }
        fi
        say "Grid Engine is already running"
        return 0
    fi
    if ! command -v sge_qmaster >/dev/null && [ ! -x /usr/lib/gridengine/sge_qmaster ]; then
        for pkg in gridengine-common gridengine-master gridengine-client; do
            echo "$pkg shared/gridenginemaster string $host"
            echo "$pkg shared/gridenginecell string default"
            echo "$pkg shared/gridengineconfig boolean true"
        done | debconf-set-selections
        apt_install gridengine-master gridengine-exec gridengine-client || {
            say "installing gridengine failed"
            return 1
        }
    fi
    echo "$host localhost" >"$SGE_ROOT/$SGE_CELL/common/host_aliases"
    echo "$host" >"$SGE_ROOT/$SGE_CELL/common/act_qmaster"
    /etc/init.d/gridengine-master restart >/dev/null 2>&1 || /etc/init.d/gridengine-master start
    wait_for 30 qconf -sh || { say "the Grid Engine master did not start"; return 1; }
    local tmp
    tmp=$(mktemp -d)
    qconf -ah "$host" >/dev/null 2>&1 || true
    qconf -as "$host" >/dev/null 2>&1 || true
    if ! qconf -se "$host" >/dev/null 2>&1; then
        printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' "$host" >"$tmp/exec"
        qconf -Ae "$tmp/exec" >/dev/null
    fi
    # root submits the test jobs
    qconf -sconf global | sed -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' >"$tmp/global"
    qconf -Mconf "$tmp/global" >/dev/null 2>&1 || true
    # schedule every second, not every 15
    qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' >"$tmp/sched"
    qconf -Msconf "$tmp/sched" >/dev/null 2>&1 || true
    if ! qconf -sq all.q >/dev/null 2>&1; then
        # shell_start_mode unix_behavior: job scripts run by their #! line, as with
        # SLURM, not as login shells (which read the submitter's profile; a job killed
        # meanwhile can leave its locks behind)
        cat >"$tmp/queue" <<QUEUE
qname                 all.q
hostlist              $host
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               NONE
rerun                 FALSE
slots                 $slots
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
QUEUE
        qconf -Aq "$tmp/queue" >/dev/null
    else
        qconf -mattr queue slots "$slots" all.q >/dev/null 2>&1 || true
        qconf -mattr queue shell_start_mode unix_behavior all.q >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
    mkdir -p "$SGE_ROOT/$SGE_CELL/spool"
    chown -R sgeadmin:sgeadmin "$SGE_ROOT/$SGE_CELL/spool" 2>/dev/null || true
    /etc/init.d/gridengine-exec restart >/dev/null 2>&1 || /etc/init.d/gridengine-exec start
    if wait_for 30 sge_ready; then
        say "Grid Engine is up: $(qstat -f | grep all.q@ | tr -s ' ')"
        return 0
    fi
    say "Grid Engine did not come up:"
    qstat -f 2>&1 | tail -n 5
    return 1
}

need_root
for s in "${want[@]}"; do
    case "$s" in
    slurm) setup_slurm || status=1 ;;
    sge) setup_sge || status=1 ;;
    *) say "unknown scheduler $s (slurm, sge)"; status=2 ;;
    esac
done
exit $status
