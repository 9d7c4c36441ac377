#!/usr/bin/env bash
# The GPU check: one prepared script for a machine with an NVIDIA GPU that cannot reach any
# registry. It needs what `make build-gpu` leaves in dist/ (the stripped runner with the GPU
# features, and the Vulkan loader's .deb) and data/mnist, or what `make gpu-carry` packs into
# dist/carry/ for a machine that gets 64 MiB at most (the runner and MNIST gzipped: carry
# `dist/carry` alone). It prints one table, within GPU_CHECK_BUDGET seconds (7.5 minutes).
#
#   bash bench/gpu-check.sh            # from the repository root
#
# What comes back is in ${OUT:-/tmp/gpu-check}, seven files, none in a folder (a device call
# returns at most 8 files from $OUT): table.txt (what it prints), rows.jsonl (every timing),
# log.txt (its progress and every step's messages), losses-<run>.csv (the three compared runs)
# and profile.txt (where a GPU step's time goes). The runs, binary and libraries go to
# ${GPU_CHECK_WORK:-/tmp/gpu-check-work}.
#
# Steps, most important first, each within what is left of GPU_CHECK_BUDGET seconds (default
# 450; 2400 at tiny sizes, for a software GPU; a step that no longer fits is skipped and
# named): unpack the Vulkan loader; at batch 64,
# `runner bench --device vulkan` (and cuda when this runner has it) for gan, dcgan and
# dcgan-classic, dcgan and dcgan-classic again with burn's convolution kernels (rows
# `vulkan+burn-conv`), all three with Adam as one operation a parameter (`+step-adam`), gan
# and dcgan with their losses read every 10 steps rather than every step (`+read-10`, what
# training does with GANRUNNER_READ_EVERY=10), dcgan and gan as one step captured as a graph and
# replayed (`+graph`, `runner bench --graph`: the device's share of a step, without the
# host's per-step work), the
# CPU (all its cores, and 2 as on the project's machines), and
# bench/pytorch_reference.py --device cuda when torch imports; 50 steps of the report's DCGAN
# on the GPU (each way of convolving) and on the CPU from the same seed, losses compared; a
# 2000-step quickstart-sized DCGAN on the GPU and its LeNet-FID; batch 256 (ours and
# PyTorch); cubecl's profile of the report's DCGAN step on the first GPU device. (CUDA first;
# after step 1, the first device that stepped the report's DCGAN there, the table says so.)
# GPU_CHECK_STEPS (default "1 2 3 4 5") runs only the numbered steps below, e.g. "1 5" to time
# a change and see its profile in a short call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check-work}
RUNNER=${RUNNER:-dist/runner-gpu}
DATA=${DATA:-data/mnist}
# Runs start afresh: a run directory left by an earlier check would be resumed, not timed (and
# an earlier profile read as this one's).
mkdir -p "$WORK" "$OUT"
# Absolute: the profile step runs the runner from a folder of its own.
WORK=$(cd "$WORK" && pwd)
rm -rf "$WORK"/dcgan50-* "$WORK"/quick-* "$OUT"/losses-*.csv "$OUT"/profile.txt
LOG="$OUT/log.txt"
: > "$LOG"
# What `make gpu-carry` packed, when the plain files did not travel.
if [ ! -x "$RUNNER" ] && [ -f dist/carry/runner-gpu.gz ]; then
    gzip -dc dist/carry/runner-gpu.gz > "$WORK/runner-gpu" && chmod +x "$WORK/runner-gpu"
    RUNNER="$WORK/runner-gpu"
fi
[ -d "$DATA" ] || DATA=dist/carry/mnist
START=$(date +%s)
# Sizes. `GPU_CHECK_SIZES=tiny` runs every step small, to check this script itself on a software
# GPU (with bench/vulkan-smoke.sh's lavapipe runner) before a real GPU's time is spent on it.
if [ "${GPU_CHECK_SIZES:-full}" = tiny ]; then
    # (quickstart's half-width G for the comparison: the report's asks lavapipe for a larger
    # buffer than it allows)
    BATCHES="16" BENCH_STEPS=2 COMPARE_STEPS=3 QUICK_STEPS=3 EVAL_SAMPLES=200
    COMPARE_SPEC=experiments/quickstart.toml
    # A software GPU compiles every kernel slowly, and no device call limits it.
    CAP_SCALE=5 DEFAULT_BUDGET=2400
else
    BATCHES="64 256" BENCH_STEPS=20 COMPARE_STEPS=50 QUICK_STEPS=2000 EVAL_SAMPLES=10000
    COMPARE_SPEC=experiments/dcgan.toml
    CAP_SCALE=1 DEFAULT_BUDGET=450
fi
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG" >&2; }
[ -x "$RUNNER" ] || { echo "no $RUNNER (nor dist/carry): run \`make gpu-carry\` first" >&2; exit 1; }
RUNNER=$(realpath "$RUNNER")

# The Vulkan loader and glvnd's libraries from the .deb files beside the binary (no apt on the
# GPU machine needed; see the Makefile's VULKAN_DEBS).
LOADER="$WORK/vulkan-loader"
mkdir -p "$LOADER"
for deb in dist/vulkan/*.deb dist/carry/vulkan/*.deb; do
    [ -f "$deb" ] && dpkg-deb -x "$deb" "$LOADER"
done
export LD_LIBRARY_PATH="$LOADER/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVIDIA's Vulkan driver: its ICD manifest where the driver installed one (a container's
# driver mount, /usr/local/nvidia, is not on the loader's search path), else one written here
# for the driver library the container runtime mounted.
MOUNTED_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$MOUNTED_ICD" ]; then
    export VK_DRIVER_FILES="$MOUNTED_ICD" VK_ICD_FILENAMES="$MOUNTED_ICD"
elif ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
    lib=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
    if [ -n "$lib" ]; then
        cat > "$WORK/nvidia_icd.json" <<EOF
{"file_format_version": "1.0.0", "ICD": {"library_path": "$lib", "api_version": "1.3"}}
EOF
        export VK_ICD_FILENAMES="$WORK/nvidia_icd.json"
    fi
fi
# CUDA for --device cuda (the driver's libcuda.so.1 is found on its own): NVRTC, and the CUDA
# headers the generated kernels include (cubecl-cuda reads them under $CUDA_PATH/include, else
# /usr/local/cuda), from a CUDA toolkit or else PyTorch's CUDA wheels: site-packages/nvidia/cu13
# holds both; older wheels split them over site-packages/nvidia/*/.
SITE_NVIDIA=$(python3 -c 'import glob, os, site
print("\n".join(d for root in site.getsitepackages() for d in sorted(glob.glob(os.path.join(root, "nvidia", "*")))))' 2>/dev/null)
NVRTC_DIRS=$( (ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null
    for dir in $SITE_NVIDIA; do ls "$dir"/lib/libnvrtc.so* >/dev/null 2>&1 && echo "$dir/lib"; done) | sort -u | paste -sd: -)
[ -n "$NVRTC_DIRS" ] && export LD_LIBRARY_PATH="$NVRTC_DIRS:$LD_LIBRARY_PATH"
if [ -z "${CUDA_PATH:-}" ] && [ ! -d /usr/local/cuda ]; then
    for dir in $SITE_NVIDIA; do
        [ -f "$dir/include/cuda_fp16.h" ] && export CUDA_PATH="$dir" && break
    done
fi
# CUDA 13's wheels put the `crt/` headers, which mma.h includes (and so cubecl's matrix
# products' kernels), in a wheel PyTorch does not bring (nvidia-cuda-crt): headers found
# without them get the ones `make gpu-carry` packed, beside links to theirs.
HEADERS=${CUDA_PATH:-/usr/local/cuda}
CRT=${CUDA_CRT:-}
for dir in dist/carry/cuda-crt dist/cuda-crt/nvidia/cu13/include; do
    [ -z "$CRT" ] && [ -f "$dir/crt/mma.h" ] && CRT=$dir
done
if [ -d "$HEADERS/include" ] && [ ! -f "$HEADERS/include/crt/mma.h" ] && [ -n "$CRT" ]; then
    rm -rf "$WORK/cuda" && mkdir -p "$WORK/cuda/include"
    for entry in "$HEADERS"/include/*; do
        [ "$(basename "$entry")" = crt ] || ln -s "$(realpath "$entry")" "$WORK/cuda/include/"
    done
    ln -s "$(realpath "$CRT")/crt" "$WORK/cuda/include/crt"
    export CUDA_PATH="$WORK/cuda"
    HEADERS="$HEADERS, with crt/ from $CRT"
fi
log "NVRTC search path: ${NVRTC_DIRS:-none found (cuda needs libnvrtc.so)}; CUDA headers: $HEADERS"
log "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"

DEVICES=()
# CUDA first when it answers: the comparisons, the quickstart-sized run and the profile take the
# first device (on the H200 it ran the report's DCGAN faster than Vulkan, 38 ms to 42).
for device in cuda vulkan; do
    if "$RUNNER" bench --device "$device" --model gan --steps 1 --warmup 0 --format json \
        > "$WORK/probe-$device.json" 2> "$WORK/probe-$device.err"; then
        DEVICES+=("$device")
    else
        log "--device $device unavailable: $(tail -1 "$WORK/probe-$device.err")"
    fi
done

ROWS="$OUT/rows.jsonl"
: > "$ROWS"
# The device machine's call limit is 600 s and a session's device time 900 s, starts included:
# every step gets what is left of GPU_CHECK_BUDGET (less 20 s for the table), and one that
# would get under 10 s is skipped and named, so a slow GPU still ends with the table and time
# to rerun. Steps run most important first: what the issue's goals compare (batch 64 against
# the CPU and PyTorch, each way of convolving), the losses against the CPU, the FID, then
# batch 256 and the profile.
BUDGET=${GPU_CHECK_BUDGET:-$DEFAULT_BUDGET}
SKIPPED=""
STEPS=" ${GPU_CHECK_STEPS:-1 2 3 4 5} "
# `step N`: whether GPU_CHECK_STEPS asks for step N.
step() { [[ "$STEPS" == *" $1 "* ]]; }
# `allow CAP WHAT`: sets ALLOW to CAP seconds (times CAP_SCALE) or what the budget has left,
# whichever is less; fails (and notes WHAT as skipped) when that is under 10 s.
allow() {
    local left=$(( BUDGET - 20 - ($(date +%s) - START) )) cap=$(( $1 * CAP_SCALE ))
    ALLOW=$(( left < cap ? left : cap ))
    (( ALLOW >= 10 )) && return 0
    SKIPPED+="skipped (out of GPU_CHECK_BUDGET=$BUDGET s): $2"$'\n'
    return 1
}
FIRST_BATCH=${BATCHES%% *}
# `bench_rows SIDE DEVICE BATCH STEPS MODEL...`: our step times as rows (SIDE ours; burn-conv
# for GANRUNNER_GPU_CONV=burn; step-adam for GANRUNNER_GPU_ADAM=step; read-10 for the losses
# read every 10 steps, the steps between queued behind each other; graph for one step captured
# as a graph and replayed; two-cores for 2 threads,
# as on this project's 2-core machines, which the issue's "20x our CPU step" means, beside
# all of this machine's cores).
bench_rows() {
    local side=$1 device=$2 batch=$3 steps=$4 conv=im2col adam=burn threads=() reads=(--read-every 1)
    shift 4
    [ "$side" = burn-conv ] && conv=burn
    [ "$side" = step-adam ] && adam=step
    [ "$side" = read-10 ] && reads=(--read-every 10)
    [ "$side" = graph ] && reads=(--graph)
    [ "$side" = two-cores ] && threads=(--threads 2)
    allow 120 "bench $device batch $batch ($side)" || return 0
    log "bench $device batch $batch ($side)"
    GANRUNNER_GPU_CONV=$conv GANRUNNER_GPU_ADAM=$adam timeout "$ALLOW" "$RUNNER" bench \
        --device "$device" "${@/#/--model=}" "${threads[@]}" --batch "$batch" --steps "$steps" \
        "${reads[@]}" --warmup 2 --format json 2>> "$LOG" \
        | sed "s/^{/{\"side\":\"$side\",\"device\":\"$device\",/" >> "$ROWS"
}
# `torch_rows BATCH`: PyTorch's step times on the same GPU, side by side.
TORCH=no
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && TORCH=yes
[ $TORCH = no ] && log "torch with CUDA is not importable here: no PyTorch column"
torch_rows() {
    [ $TORCH = yes ] || return 0
    allow 120 "pytorch cuda batch $1" || return 0
    log "pytorch cuda batch $1"
    timeout "$ALLOW" python3 bench/pytorch_reference.py --device cuda --model gan --model dcgan \
        --model dcgan-classic --batch "$1" --steps "$BENCH_STEPS" \
        | sed 's/^{/{"side":"pytorch","device":"cuda",/' >> "$ROWS"
}

# 1. The first batch size (64): each GPU device both ways of convolving, the CPU, PyTorch.
if step 1; then
    for device in "${DEVICES[@]}"; do
        bench_rows ours "$device" "$FIRST_BATCH" "$BENCH_STEPS" gan dcgan dcgan-classic
        bench_rows burn-conv "$device" "$FIRST_BATCH" "$BENCH_STEPS" dcgan dcgan-classic
        bench_rows step-adam "$device" "$FIRST_BATCH" "$BENCH_STEPS" gan dcgan dcgan-classic
        bench_rows read-10 "$device" "$FIRST_BATCH" "$BENCH_STEPS" gan dcgan
        # the report's DCGAN first: a bench stops at its first model that fails
        bench_rows graph "$device" "$FIRST_BATCH" "$BENCH_STEPS" dcgan gan
    done
    bench_rows ours cpu "$FIRST_BATCH" 3 gan dcgan dcgan-classic
    bench_rows two-cores cpu "$FIRST_BATCH" 3 gan dcgan dcgan-classic
    torch_rows "$FIRST_BATCH"
    # The later steps' device: the first that stepped the report's DCGAN here. Probed with
    # the MLP GAN alone, a device may still fail in the convolutions' or BatchNorm's kernels
    # (the CUDA compiler builds them from another source than Vulkan's): the comparisons, the
    # FID and the profile then go to a device that works, and the table says why.
    for device in "${DEVICES[@]}"; do
        if grep -q "\"side\":\"ours\",\"device\":\"$device\",.*\"model\":\"dcgan\"" "$ROWS"; then
            if [ "$device" != "${DEVICES[0]}" ]; then
                NOTE="${DEVICES[0]} stepped no report's DCGAN at batch $FIRST_BATCH (log.txt): the later steps ran on $device"
                log "$NOTE"
                others=()
                for other in "${DEVICES[@]}"; do [ "$other" = "$device" ] || others+=("$other"); done
                DEVICES=("$device" "${others[@]}")
            fi
            break
        fi
    done
fi

# 2. The report's DCGAN for 50 steps from the same seed on the GPU (each way of convolving)
# and on the CPU, losses compared.
COMPARE=""
if [ ${#DEVICES[@]} -gt 0 ] && step 2; then
    gpu=${DEVICES[0]}
    for run in "$gpu" "$gpu-burn-conv" cpu; do
        device=${run%-burn-conv} conv=im2col
        [ "$run" = "$gpu-burn-conv" ] && conv=burn
        allow 240 "$COMPARE_STEPS DCGAN steps on $device ($conv convolutions)" || continue
        log "$COMPARE_STEPS DCGAN steps on $device ($conv convolutions)"
        GANRUNNER_GPU_CONV=$conv timeout "$ALLOW" "$RUNNER" train "$COMPARE_SPEC" --device "$device" \
            --steps "$COMPARE_STEPS" --set log.eval_samples=0 --data-dir "$DATA" \
            --out "$WORK/dcgan50-$run" >> "$LOG" 2>&1
        cp "$WORK/dcgan50-$run/losses.csv" "$OUT/losses-$run.csv" 2>/dev/null
    done
    for run in "$gpu" "$gpu-burn-conv"; do
        COMPARE+=$(python3 - "$OUT/losses-$run.csv" "$OUT/losses-cpu.csv" "$run" <<'EOF'
import csv, sys
def load(p):
    try:
        return {int(r["step"]): (float(r["d_loss"]), float(r["g_loss"])) for r in csv.DictReader(open(p))}
    except OSError:
        return {}
gpu, cpu = load(sys.argv[1]), load(sys.argv[2])
steps = sorted(set(gpu) & set(cpu))
if not steps:
    print(f"{sys.argv[3]} vs CPU losses: not compared (a run failed or was skipped; see log.txt)")
else:
    def worst(upto):
        return max(max(abs(gpu[s][0] - cpu[s][0]), abs(gpu[s][1] - cpu[s][1])) for s in steps if s <= upto)
    print(f"{sys.argv[3]} vs CPU, same seed, {len(steps)} steps: max |loss difference| "
          f"{worst(1):.2e} at step 1, {worst(10):.2e} up to step 10, {worst(steps[-1]):.2e} up to step {steps[-1]}")
EOF
)$'\n'
    done
fi

# 3. The quickstart-sized run on the GPU, and its LeNet-FID.
if [ ${#DEVICES[@]} -gt 0 ] && step 3; then
    gpu=${DEVICES[0]}
    if allow 200 "$QUICK_STEPS-step quickstart-sized DCGAN on $gpu"; then
        log "$QUICK_STEPS-step quickstart-sized DCGAN on $gpu"
        begin=$(date +%s)
        # No evaluations while it trains (the quickstart's come every 400 steps and at the end,
        # 10 000 samples each of G's average and of G): the time is the training's, and the
        # LeNet-FID comes from the one `eval` after it.
        timeout "$ALLOW" "$RUNNER" train experiments/quickstart.toml --device "$gpu" \
            --steps "$QUICK_STEPS" --set log.eval_samples=0 --data-dir "$DATA" \
            --out "$WORK/quick-$gpu" >> "$LOG" 2>&1
        QUICK_S=$(( $(date +%s) - begin ))
        allow 150 "LeNet-FID of the quickstart-sized run" \
            && FID=$(timeout "$ALLOW" "$RUNNER" eval "$WORK/quick-$gpu" --device "$gpu" --data-dir "$DATA" \
                --samples "$EVAL_SAMPLES" --format csv 2>>"$LOG" \
                | python3 -c "import csv,sys; r=list(csv.DictReader(sys.stdin)); print(r[0].get('fid','?') if r else '?')")
    fi
fi

# 4. The other batch sizes, on the GPU devices and PyTorch (the CPU only at the first).
step 4 && for batch in ${BATCHES#"$FIRST_BATCH"}; do
    for device in "${DEVICES[@]}"; do
        bench_rows ours "$device" "$batch" "$BENCH_STEPS" gan dcgan dcgan-classic
    done
    torch_rows "$batch"
done

# 5. Where the report's DCGAN step's time goes on the first GPU device: cubecl's profiler (a
# cubecl.toml where the runner starts): each kernel's time in the last of 5 steps (compiling
# slowed kernels into the third step on the H200), summed by kernel.
if [ ${#DEVICES[@]} -gt 0 ] && step 5 && allow 60 "profile of a DCGAN step on ${DEVICES[0]}"; then
    log "profile of a DCGAN step on ${DEVICES[0]}"
    mkdir -p "$WORK/profile" && rm -f "$WORK/profile.log"
    printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "$WORK/profile.log" > "$WORK/profile/cubecl.toml"
    (cd "$WORK/profile" && timeout "$ALLOW" "$RUNNER" bench --device "${DEVICES[0]}" --model dcgan \
        --batch "$FIRST_BATCH" --steps 1 --warmup 4 --format json) >> "$LOG" 2>&1
    [ -s "$WORK/profile.log" ] || log "no profile: the runner wrote none (cubecl's, GPU backends only)"
    [ -s "$WORK/profile.log" ] && python3 bench/profile_summary.py "$WORK/profile.log" 5 1 \
        > "$OUT/profile.txt" 2>> "$LOG"
fi

{
python3 - "$ROWS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
key = lambda r: (r["model"], r["batch"])
cpu = {key(r): r for r in rows if r["device"] == "cpu" and r["side"] == "ours"}
two = {key(r): r for r in rows if r["device"] == "cpu" and r["side"] == "two-cores"}
torch = {key(r): r for r in rows if r["side"] == "pytorch"}
threads = next((r["threads"] for r in cpu.values()), "?")
print(f"CPU: this machine's {threads} threads; 2 cores: 2 threads, as on the project's machines")
print(f"{'model':<14} {'batch':>5} {'device':<16} {'ours ms':>7} {'CPU ms':>9} {'CPU/GPU':>8} "
      f"{'2-core ms':>9} {'2c/GPU':>7} {'torch ms':>9} {'ours/torch':>10}")
cell = lambda v, f: f.format(v) if v is not None else f"{'-':>{len(f.format(0.0))}}"
# The opt-in settings the rows time beside the default (their SIDE in bench_rows), and the
# captured step replayed (under the default's time: what the host's work a step costs).
setting = {"burn-conv": "GANRUNNER_GPU_CONV=burn", "step-adam": "GANRUNNER_GPU_ADAM=step",
           "read-10": "GANRUNNER_READ_EVERY=10",
           "graph": "one step captured as a graph and replayed (bench --graph)"}
for r in rows:
    if r["side"] == "pytorch" or r["device"] == "cpu":
        continue
    c, c2, t = cpu.get(key(r)), two.get(key(r)), torch.get(key(r))
    device = r["device"] + (f"+{r['side']}" if r["side"] in setting else "")
    print(f"{r['model']:<14} {r['batch']:>5} {device:<16} {r['median_ms']:7.2f} "
          f"{cell(c and c['median_ms'], '{:9.1f}')} {cell(c and c['median_ms'] / r['median_ms'], '{:8.1f}')} "
          f"{cell(c2 and c2['median_ms'], '{:9.1f}')} {cell(c2 and c2['median_ms'] / r['median_ms'], '{:7.1f}')} "
          f"{cell(t and t['median_ms'], '{:9.2f}')} {cell(t and r['median_ms'] / t['median_ms'], '{:10.2f}')}")
# Each opt-in setting against the default on the same device: what decides its default.
default = {(r["device"],) + key(r): r for r in rows if r["side"] == "ours" and r["device"] != "cpu"}
for r in rows:
    d = default.get((r["device"],) + key(r))
    if r["side"] in setting and d:
        print(f"{r['model']} batch {r['batch']} on {r['device']}, {setting[r['side']]}: "
              f"{r['median_ms'] / d['median_ms']:.2f}x the default's step time")
EOF
[ -n "${NOTE:-}" ] && echo "$NOTE"
[ -n "$SKIPPED" ] && printf '%s' "$SKIPPED"
[ -n "$COMPARE" ] && printf '%s' "$COMPARE"
[ -s "$OUT/profile.txt" ] && echo "profile of a DCGAN step on ${DEVICES[0]} (profile.txt): $(head -1 "$OUT/profile.txt")"
[ -n "${QUICK_S:-}" ] && echo "quickstart-sized DCGAN, $QUICK_STEPS steps on ${DEVICES[0]}: ${QUICK_S} s, LeNet-FID ${FID:-?}"
} | tee "$OUT/table.txt"
log "done"
