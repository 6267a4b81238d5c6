#!/usr/bin/env bash
# The workflow on a real SLURM cluster, checked against a local run of the same config.
#
# Installs Debian's slurm-wlm and munge (and the pinned SLURM executor plugin into the
# project's venv), starts a one-node cluster on this machine (no GPU), runs the tiny sweep
# through `snakemake --executor slurm --profile profiles/slurm` (plus the CPU overlay
# tests/slurm/profile-cpu) in a private copy of the workflow, runs the same config locally
# in another copy, and compares: the same table files, the same cells (and
# workers), the same row counts, and cell jobs that SLURM ran with what the profiles ask.
# The numbers themselves may differ (they are timings).
#
# Usage (as root): tests/slurm/run_slurm_test.sh [--reduced | --full]
#   --full     the whole tiny sweep (tests/data/tiny.yaml: 3 cells)
#   --reduced  the same with one cell (tests/slurm/one_cell.yaml on top); the CI default
# Environment: PYTHON (default .venv/bin/python), SLURM_TEST_TIMEOUT_S (each snakemake run,
# default 900), SLURM_TEST_KEEP=1 keeps the temporary folder, SLURM_TEST_PORT (default 16817;
# slurmctld uses it, slurmd the next one), SLURM_TEST_LOCK_WAIT_S (default 1200: how long
# to wait for another run of this script on the same machine).
#
# Every wait is bounded; the daemons started here are stopped by process id on exit,
# failure included. Exit status 0 only when everything matched.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=${1:---full}
PY=${PYTHON:-$ROOT/.venv/bin/python}
RUN_TIMEOUT=${SLURM_TEST_TIMEOUT_S:-900}
PORT=${SLURM_TEST_PORT:-16817}
T0=$SECONDS

log() { echo "run_slurm_test [$((SECONDS - T0))s]: $*" >&2; }
die() {
    echo "run_slurm_test: FAILED: $*" >&2
    exit 1
}

case "$MODE" in
--full) CONFIGS=(tests/data/tiny.yaml) ;;
--reduced) CONFIGS=(tests/data/tiny.yaml "$ROOT/tests/slurm/one_cell.yaml") ;;
*) die "unknown argument '$MODE' (expected --full or --reduced)" ;;
esac

[ "$(id -u)" = 0 ] || die "needs root: it installs packages and starts slurmctld, slurmd and munged"
[ -x "$PY" ] || die "no Python at $PY (run 'make test' once to create .venv, or set PYTHON)"

# One test cluster per machine at a time: munged's socket, /run/slurm/conf and the ports are
# shared. A second run waits for the first (bounded), then starts its own cluster.
mkdir -p /run/lock
exec 9>/run/lock/lorasweep-slurm-test.lock
if ! flock -n 9; then
    echo "run_slurm_test: another run_slurm_test is running on this machine; waiting for it (at most ${SLURM_TEST_LOCK_WAIT_S:-1200}s)" >&2
    flock -w "${SLURM_TEST_LOCK_WAIT_S:-1200}" 9 || die "another run_slurm_test still held /run/lock/lorasweep-slurm-test.lock after ${SLURM_TEST_LOCK_WAIT_S:-1200}s"
fi

WORK=$(mktemp -d /tmp/lorasweep-slurm.XXXXXX)
chmod 755 "$WORK"
DAEMON_PIDS=() # started here, stopped in reverse order on exit
CLUSTER_UP=0
CTLD_PID=
RUN_PID= # the workflow run in progress (its timeout process)

stop_pid() { # pid name: TERM, up to 15 s, then KILL
    local pid=$1 name=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || {
            log "stopped $name (pid $pid)"
            return 0
        }
        sleep 0.5
    done
    log "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
        # SIGINT: timeout hands it to snakemake, which cancels its SLURM jobs and stops
        local child
        child=$(pgrep -P "$RUN_PID" | head -n 1)
        kill -INT "$RUN_PID" 2>/dev/null
        timeout 90 bash -c "while kill -0 $RUN_PID 2>/dev/null; do sleep 1; done" ||
            { log "the workflow run ignored SIGINT for 90 s: SIGKILL"; kill -KILL "$RUN_PID" ${child:+"$child"} 2>/dev/null; }
    fi
    if [ "$CLUSTER_UP" = 1 ] && [ -n "$CTLD_PID" ] && kill -0 "$CTLD_PID" 2>/dev/null; then
        # our private cluster: every job in it was submitted by this test
        timeout 20 scancel --user=root >/dev/null 2>&1
        timeout 30 bash -c 'while [ -n "$(squeue -h -o %i 2>/dev/null)" ]; do sleep 1; done'
    fi
    local i
    for ((i = ${#DAEMON_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${DAEMON_PIDS[$i]%%:*}" "${DAEMON_PIDS[$i]#*:}"
    done
    # the link our slurmd made to its configuration cache
    if [ -L /run/slurm/conf ] && [[ "$(readlink /run/slurm/conf)" == "$WORK"/* ]]; then
        rm -f /run/slurm/conf
    fi
    if [ "$rc" != 0 ]; then
        for f in "$WORK"/slurmctld.log "$WORK"/slurmd.log "$WORK"/slurm-run.log "$WORK"/local-run.log; do
            [ -s "$f" ] && {
                echo "----- last lines of $f" >&2
                tail -n 40 "$f" >&2
            }
        done
        echo "run_slurm_test: failed after $((SECONDS - T0)) s; files kept in $WORK" >&2
    elif [ "${SLURM_TEST_KEEP:-0}" = 1 ]; then
        log "files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null ||
    ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get to install it"
    log "installing slurm-wlm and munge (apt-get)"
    timeout 600 apt-get update -qq >"$WORK/apt.log" 2>&1 || die "apt-get update failed, see $WORK/apt.log"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq slurm-wlm munge >>"$WORK/apt.log" 2>&1 ||
        die "apt-get install slurm-wlm munge failed, see $WORK/apt.log"
fi
if ! "$PY" -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    log "installing the SLURM executor plugin (requirements-slurm.txt)"
    timeout 600 "$PY" -m pip install --quiet -r "$ROOT/requirements-slurm.txt" >"$WORK/pip.log" 2>&1 ||
        die "pip install -r requirements-slurm.txt failed, see $WORK/pip.log"
fi
log "slurm $(slurmctld -V | awk '{print $2}'), $("$PY" -m pip show snakemake-executor-plugin-slurm 2>/dev/null | awk '/^Version/{print "executor plugin " $2}')"

# ---------------------------------------------------------------- munge
for port in "$PORT" "$((PORT + 1))"; do
    if timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
        die "port $port is in use (another SLURM?); choose others with SLURM_TEST_PORT"
    fi
done
if timeout 10 munge -n 2>/dev/null | timeout 10 unmunge >/dev/null 2>&1; then
    log "a munged is already running: using it"
else
    id munge >/dev/null 2>&1 || die "no user 'munge' (the munge package creates it)"
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        timeout 30 mungekey --create --keyfile=/etc/munge/munge.key || die "mungekey --create failed"
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    setpriv --reuid=munge --regid=munge --init-groups munged --foreground >"$WORK/munged.out" 2>&1 &
    DAEMON_PIDS+=("$!:munged")
    timeout 20 bash -c 'until munge -n 2>/dev/null | unmunge >/dev/null 2>&1; do sleep 0.5; done' ||
        die "munged does not answer after 20 s: $(cat "$WORK/munged.out"; tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
    log "munged up (pid ${DAEMON_PIDS[-1]%%:*})"
fi

# ---------------------------------------------------------------- slurm.conf
# a job step reads /etc/slurm/slurm.conf before the configless copy: it must not exist
[ ! -e /etc/slurm/slurm.conf ] ||
    die "/etc/slurm/slurm.conf exists: this machine has a SLURM setup of its own, which this test will not touch"
NODE_LINE=$(timeout 30 slurmd -C | head -n 1)
[[ "$NODE_LINE" == NodeName=* ]] || die "slurmd -C gave no node line: '$NODE_LINE'"
NODE=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$NODE_LINE")
CPUS=$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$NODE_LINE")
mkdir -p "$WORK/state" "$WORK/spool"
export SLURM_CONF=$WORK/slurm.conf
cat >"$SLURM_CONF" <<EOF
# one-node test cluster written by tests/slurm/run_slurm_test.sh
ClusterName=lorasweeptest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
# slurmd fetches this file from slurmctld and links it at /run/slurm/conf: the job steps find
# it there (the executor plugin drops SLURM_CONF from the environment of its job steps)
SlurmctldParameters=enable_configless
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
log "slurm.conf for node $NODE: $NODE_LINE"

# ---------------------------------------------------------------- daemons
slurmctld -D -i -f "$SLURM_CONF" >"$WORK/slurmctld.out" 2>&1 &
DAEMON_PIDS+=("$!:slurmctld")
CTLD_PID=$!
timeout 30 bash -c 'until scontrol ping 2>/dev/null | grep -q "is UP"; do sleep 0.5; done' ||
    die "slurmctld does not answer after 30 s: $(cat "$WORK/slurmctld.out")"
kill -0 "$CTLD_PID" 2>/dev/null || die "slurmctld exited: $(tail -n 5 "$WORK/slurmctld.out")"
CLUSTER_UP=1
env -u SLURM_CONF slurmd -D --conf-server "127.0.0.1:$PORT" >"$WORK/slurmd.out" 2>&1 &
DAEMON_PIDS+=("$!:slurmd")
SLURMD_PID=$!
timeout 60 bash -c 'until [ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] || ! kill -0 '"$SLURMD_PID"' 2>/dev/null; do sleep 1; done' || true
kill -0 "$SLURMD_PID" 2>/dev/null || die "slurmd exited: $(tail -n 5 "$WORK/slurmd.out")"
[ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] ||
    die "node $NODE is not idle after 60 s: $(sinfo -N -o '%N %t %E' 2>&1) $(cat "$WORK/slurmd.out")"
timeout 60 srun --time=1 --ntasks=1 true >"$WORK/srun.out" 2>&1 ||
    die "a trivial job (srun true) failed: $(cat "$WORK/srun.out")"
log "one-node cluster up: $NODE, $CPUS CPUs, a trivial job ran"
T_CLUSTER=$((SECONDS - T0))

# ---------------------------------------------------------------- the two runs
copy() { # dest: a private copy of the workflow (the same files the end-to-end test copies)
    PYTHONPATH="$ROOT/tests" "$PY" -c "import sys; from pathlib import Path; from workflow import copy_workflow; copy_workflow(Path(sys.argv[1]))" "$1"
}
copy "$WORK/slurm"
copy "$WORK/local"

run_bounded() { # dir log command...: in the background, so that a signal to this script acts at once
    local dir=$1 log=$2
    shift 2
    (cd "$dir" && exec timeout --signal=INT --kill-after=60 "$RUN_TIMEOUT" "$@") >"$log" 2>&1 &
    RUN_PID=$!
    local rc=0
    wait "$RUN_PID" || rc=$?
    RUN_PID=
    return "$rc"
}

# One after the other: a cell owns all cores of the machine while it runs (docs/design.md §3).
log "snakemake through SLURM (${CONFIGS[*]})"
T=$SECONDS
run_bounded "$WORK/slurm" "$WORK/slurm-run.log" \
    "$PY" -m snakemake --executor slurm --profile profiles/slurm --profile "$ROOT/tests/slurm/profile-cpu" \
    --set-threads "cell=$CPUS" "pretrain=$CPUS" --configfile "${CONFIGS[@]}" ||
    die "the SLURM run failed or ran past ${RUN_TIMEOUT}s (exit $?), log $WORK/slurm-run.log"
T_SLURM=$((SECONDS - T))
scontrol show job --oneliner >"$WORK/slurm-jobs.txt" 2>&1 || die "scontrol show job failed: $(cat "$WORK/slurm-jobs.txt")"
log "SLURM run done in ${T_SLURM}s; the same config locally"
T=$SECONDS
run_bounded "$WORK/local" "$WORK/local-run.log" "$PY" -m snakemake --cores all --configfile "${CONFIGS[@]}" ||
    die "the local run failed or ran past ${RUN_TIMEOUT}s (exit $?), log $WORK/local-run.log"
T_LOCAL=$((SECONDS - T))
log "local run done in ${T_LOCAL}s"

# ---------------------------------------------------------------- compare
"$PY" - "$WORK/slurm" "$WORK/local" "$WORK/slurm-jobs.txt" "$CPUS" <<'EOF' || die "the SLURM run and the local run differ (above)"
import csv
import sys
from pathlib import Path

slurm, local = Path(sys.argv[1]), Path(sys.argv[2])
problems = []


def files(root, sub):
    base = root / sub
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


def cells(root):
    out = {}
    for summary in sorted((root / "results/cells").glob("*/*/summary.json")):
        cell = summary.parent
        out[str(cell.relative_to(root / "results/cells"))] = len(list((cell / "steps").glob("seed*.jsonl")))
    return out


def rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    return table[0] if table else [], len(table) - 1


for sub in ("results/tables", "results/plots"):
    a, b = files(slurm, sub), files(local, sub)
    if a != b:
        problems.append(f"{sub}: SLURM has {a}, local has {b}")
tables = files(local, "results/tables")
if not any(t.endswith(".csv") for t in tables):
    problems.append("no table (.csv) in results/tables of the local run")
for name in (t for t in tables if t.endswith(".csv") and (slurm / "results/tables" / t).is_file()):
    (ha, na), (hb, nb) = rows(slurm / "results/tables" / name), rows(local / "results/tables" / name)
    if (ha, na) != (hb, nb):
        problems.append(f"{name}: SLURM {na} rows {ha}, local {nb} rows {hb}")
    else:
        print(f"  {name}: {na} rows in both")
ca, cb = cells(slurm), cells(local)
if ca != cb or not ca:
    problems.append(f"cells (with their worker files): SLURM {ca}, local {cb}")
# the cells ran as SLURM jobs: the plugin kept one log per cell job (slurm-keep-successful-logs)
slurm_logs = sorted((slurm / ".snakemake/slurm_logs/rule_cell").rglob("*.log"))
if len(slurm_logs) < len(ca):
    problems.append(f"{len(ca)} cells but {len(slurm_logs)} SLURM job logs of rule cell in {slurm}/.snakemake/slurm_logs")
# and they got what the profiles ask for: the node's CPUs, n-dependent memory, no GPU
jobs = [line for line in Path(sys.argv[3]).read_text().splitlines() if "Comment=rule_cell_" in line]
if len(jobs) < len(ca):
    problems.append(f"{len(ca)} cells but {len(jobs)} cell jobs in scontrol show job")
for line in jobs:
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    n = int(fields["Comment"].rsplit("_n", 1)[1])
    mem = fields.get("MinMemoryNode", "0M")  # 8G, 6144M
    mem_mb = float(mem[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}.get(mem[-1], 0)
    if fields.get("JobState") != "COMPLETED" or "gpu" in line or fields.get("NumCPUs") != sys.argv[4] \
            or mem_mb != 2048 + 3072 * n:
        problems.append(f"cell job not as the profiles ask (COMPLETED, {sys.argv[4]} CPUs, {2048 + 3072 * n}M, no GPU): {line}")
if (local / ".snakemake/slurm_logs").exists():
    problems.append("the local run left SLURM logs: it did not run locally")
for problem in problems:
    print("  MISMATCH:", problem)
print(f"  {len(ca)} cell(s) {sorted(ca)}, {len(tables)} table file(s), {len(jobs)} SLURM cell job(s)")
sys.exit(1 if problems else 0)
EOF

log "PASSED ($MODE): cluster up in ${T_CLUSTER}s, SLURM run ${T_SLURM}s, local run ${T_LOCAL}s, total $((SECONDS - T0))s"
