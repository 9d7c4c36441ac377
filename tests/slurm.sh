#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost, and `runner sweep --executor slurm` against it.
#
# Installs Debian's slurm-wlm and munge if missing, starts munged, slurmctld and slurmd with a
# minimal slurm.conf in a temporary directory, then:
#   1. submits a 4-point tiny sweep with --wait: all four runs finished, each exactly once;
#   2. trains one of those runs again here (--force), then merges the old job again: all four
#      stay finished;
#   3. submits a 2-point sweep whose runs take a while, cancels one task mid-run (scancel),
#      collects: that run is failed with its job id and log tail, the other finished;
#      a rerun submits and completes only the cancelled point;
#   4. a local sweep and a Slurm sweep of one spec at once: each run trained once;
#   5. a local sweep after a Slurm job ended unmerged: it merges the job, skipping its runs;
#   6. a TPE search with --wait: startup trials, then each proposed batch, as jobs.
# All of it in a project directory whose path holds a space and single quotes.
# Every daemon it started is stopped on exit. Usage: tests/slurm.sh [path/to/runner]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNNER=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/ganrunner-target}/release/runner}
RUNNER=$(realpath "$RUNNER")
FIXTURE=$ROOT/tests/fixtures/mnist-mini

fail() { echo "FAIL: $*" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

T=$(mktemp -d /tmp/ganrunner-slurm.XXXXXX)
STARTED_MUNGE=
cleanup() {
    set +e
    [ -f "$T/slurmd.pid" ] && kill "$(cat "$T/slurmd.pid")" 2>/dev/null
    [ -f "$T/slurmctld.pid" ] && kill "$(cat "$T/slurmctld.pid")" 2>/dev/null
    [ -n "$STARTED_MUNGE" ] && kill "$STARTED_MUNGE" 2>/dev/null
    sleep 1
    pkill -f "slurmstepd.*$T" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# munge: a key if the package did not make one, and a daemon on our own socket.
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! munge -n >/dev/null 2>&1; then
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=/run/munge/munged.pid"
    else
        /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    fi
    STARTED_MUNGE=$(cat /run/munge/munged.pid)
    munge -n >/dev/null || fail "munged does not answer"
fi

HOST=$(hostname -s)
mkdir -p "$T/state" "$T/spool" "$T/log"
cat > "$T/slurm.conf" <<CONF
ClusterName=ganrunner-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$T/slurm.conf
/usr/sbin/slurmctld -i -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 30); do
    sinfo -h -o %t 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo -h -o %t | grep -q idle || { cat "$T"/log/*.log; fail "the Slurm node never became idle"; }
echo "slurm up: $(sinfo -h -o '%P %D %t')"

# A project path with a space and quotes, as users have: the batch script must quote it.
WORK="$T/o'brien's work"
mkdir -p "$WORK"
cd "$WORK"
spec() { # name steps seeds
    cat > "$1.toml" <<SPEC
name = "$1"
[data]
dir = "$FIXTURE"
[model]
arch = "gan"
latent_dim = 8
g_hidden = [8, 16]
d_hidden = [16, 8]
[train]
steps = $2
batch_size = 16
[log]
sample_every = 1000
checkpoint_every = 1000
metrics_every = 50
eval_samples = 0
[sweep]
"train.seed" = $3
SPEC
}
sql() { "$RUNNER" query --format csv "$1" | tail -n +2; }

# 1. Four points, waited for and merged.
spec four 40 "[1, 2, 3, 4]"
"$RUNNER" sweep four.toml --executor slurm --max-parallel 2 --wait --no-report
[ "$(sql "SELECT count(*) FROM runs WHERE experiment = 'four' AND status = 'finished'")" = 4 ] \
    || { "$RUNNER" runs; fail "four finished runs expected"; }
[ "$(sql "SELECT count(*) FROM runs")" = 4 ] || fail "each run recorded once"
[ "$(sql "SELECT count(DISTINCT slurm_task) FROM runs")" = 4 ] || fail "each run has its task"
rows=$(sql "SELECT count(*) FROM metrics")
"$RUNNER" sweep four.toml --executor slurm --collect --no-report
[ "$(sql "SELECT count(*) FROM metrics")" = "$rows" ] || fail "collecting twice added rows"
"$RUNNER" sweep four.toml --executor slurm --wait --no-report | grep -q "4 skipped" \
    || fail "a second sweep skips the finished runs"
echo "ok: 4-point sweep finished once each, collect is idempotent"

# 2. A run trained again here after its Slurm task ended: merging that old job again must not
#    take the task's absence from the run's (new) records for a task that died.
"$RUNNER" sweep four.toml --force --set 'sweep.train.seed=[1]' --no-report >/dev/null
"$RUNNER" sweep four.toml --executor slurm --collect --no-report
[ "$(sql "SELECT count(*) FROM runs WHERE experiment = 'four' AND status = 'finished'")" = 4 ] \
    || { "$RUNNER" runs; fail "collecting an old job after a local rerun keeps the runs finished"; }
echo "ok: collecting an old job leaves a run trained again since alone"

# 3. Cancel one task mid-run; it is failed; a rerun completes only it.
spec two 40000 "[1, 2]"   # about 9 s a run here: long enough to cancel one mid-run
out=$("$RUNNER" sweep two.toml --executor slurm --no-report 2>&1)
echo "$out"
job=$(echo "$out" | sed -n 's/.*submitted Slurm job \([0-9]*\).*/\1/p')
[ -n "$job" ] || fail "no job id"
for _ in $(seq 60); do
    running=$(squeue -h -r -j "$job" -t RUNNING -o %i | wc -l)
    [ "$running" = 2 ] && break
    sleep 1
done
sleep 1
scancel "${job}_0"
# The collected failure makes the command exit 1.
if "$RUNNER" sweep two.toml --executor slurm --collect --wait --no-report; then
    fail "collecting a failed run exits non-zero"
fi
[ "$(sql "SELECT status FROM runs WHERE slurm_task = '${job}_0'")" = failed ] \
    || { "$RUNNER" runs; fail "the cancelled task's run is failed"; }
error=$(sql "SELECT error FROM runs WHERE slurm_task = '${job}_0'")
echo "recorded error: $error"
echo "$error" | grep -q "Slurm task ${job}_0" || fail "the failure names the Slurm task"
echo "$error" | grep -q "CANCELLED" || fail "the failure shows the log's tail"
[ "$(sql "SELECT status FROM runs WHERE slurm_task = '${job}_1'")" = finished ] \
    || { "$RUNNER" runs; fail "the other task finished"; }
cancelled=$(sql "SELECT id FROM runs WHERE slurm_task = '${job}_0'")
out=$("$RUNNER" sweep two.toml --executor slurm --wait --no-report 2>&1)
echo "$out"
echo "$out" | grep -q "submitted Slurm job [0-9]*: 1 task;" || fail "the rerun submits only the failed point"
echo "$out" | grep -q "2 runs: 1 finished, 1 skipped" || fail "the rerun's summary counts its own run"
[ "$(sql "SELECT status FROM runs WHERE id = '$cancelled'")" = finished ] || fail "the rerun finished it"
[ "$(sql "SELECT count(*) FROM runs WHERE experiment = 'two'")" = 2 ] || fail "still two runs"
echo "ok: a cancelled task is recorded as failed and a rerun completes only that point"

# 4. A local sweep and a Slurm sweep of one spec at once: each run is trained by one of them,
#    once, and ends finished.
spec both 15000 "[1, 2, 3]"   # about 3 s a run here
"$RUNNER" sweep both.toml --jobs 1 --no-report > local.log 2>&1 &
local=$!
for _ in $(seq 60); do
    [ "$(sql "SELECT count(*) FROM runs WHERE experiment = 'both' AND status = 'running'")" = 1 ] && break
    sleep 0.5
done
"$RUNNER" sweep both.toml --executor slurm --wait --no-report > slurm-both.log 2>&1 \
    || { cat slurm-both.log; fail "the Slurm sweep beside a local one"; }
wait "$local" || { cat local.log; fail "the local sweep beside a Slurm one"; }
cat local.log slurm-both.log
[ "$(sql "SELECT count(*) FROM runs WHERE experiment = 'both' AND status = 'finished'")" = 3 ] \
    || { "$RUNNER" runs; fail "three finished runs"; }
for records in results/both/*/records.jsonl; do
    [ "$(grep -c '"RunStarted"' "$records")" = 1 ] || { cat "$records"; fail "$records: trained twice"; }
done
echo "ok: a local and a Slurm sweep of one spec at once train each run once"

# 5. A local sweep after a Slurm job ended unmerged: it merges the job and skips its runs.
spec later 40 "[1, 2]"
out=$("$RUNNER" sweep later.toml --executor slurm --no-report 2>&1)
job=$(echo "$out" | sed -n 's/.*submitted Slurm job \([0-9]*\).*/\1/p')
[ -n "$job" ] || { echo "$out"; fail "no job id"; }
for _ in $(seq 60); do
    [ "$(squeue -h -r -j "$job" -o %i 2>/dev/null | wc -l)" = 0 ] && break
    sleep 0.5
done
out=$("$RUNNER" sweep later.toml --no-report 2>&1)
echo "$out"
echo "$out" | grep -q "2 runs: 0 finished, 2 skipped" \
    || fail "a local sweep merges an ended Slurm job and skips its runs"
echo "ok: a local sweep merges an ended Slurm job first"

# 6. A TPE search with --wait: the startup trials as one job, then a job per proposed batch.
spec tpe 40 "[1]"
sed -i -e '/^\[sweep\]/,$d' -e 's/^eval_samples = 0/eval_samples = 50/' tpe.toml
cat >> tpe.toml <<'SPEC'
[search]
strategy = "tpe"
trials = 5
startup = 3
batch = 2
[search.space]
"train.lr" = { log_uniform = [1e-5, 1e-1] }
SPEC
out=$("$RUNNER" sweep tpe.toml --executor slurm --wait --no-report 2>&1)
echo "$out"
[ "$(echo "$out" | grep -c 'submitted Slurm job')" = 2 ] \
    || fail "TPE submits its startup trials, then the proposed batch"
echo "$out" | grep -q "5 runs: 5 finished" || fail "every TPE trial finished"
echo "ok: a TPE search through Slurm proposes from merged results"
echo "slurm tests passed"
