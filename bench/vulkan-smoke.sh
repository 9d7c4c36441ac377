#!/usr/bin/env bash
# The Vulkan path checked without a GPU: Mesa's software Vulkan driver (lavapipe) runs the
# runner's Vulkan build on the CPU, every kernel a GPU would run, slowly. It catches what the
# GPU check would otherwise find on the lent GPU's clock: kernels that do not compile, losses
# that drift from the CPU's, a resume or an evaluation that breaks off the CPU, a bug in
# bench/gpu-check.sh itself (run last, at tiny sizes).
#
#   make vulkan-smoke        # 25 minutes to rebuild the runner (GPU crates built), 10 to check
#
# Needs apt (Debian 12) and the crates registry. Two things it fetches or patches, all under
# dist/vulkan-smoke/ (git-ignored), none of them part of the runner that ships:
# - Mesa 25 from bookworm-backports: Debian 12's lavapipe (Mesa 22.3) crashes compiling
#   cubecl's kernels.
# - cubecl-spirv 0.11.3 with bench/cubecl-spirv-workgroup.patch: on drivers without
#   VK_KHR_workgroup_memory_explicit_layout (lavapipe; NVIDIA, AMD and Intel drivers have it)
#   it declares shared memory as a pointer to a pointer, invalid SPIR-V (spirv-val: "reached
#   non-composite type"), and lavapipe crashes on the matmul kernels. The build patches it in
#   with `--config` and puts Cargo.lock back afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=dist/vulkan-smoke
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$WORK"
START=$(date +%s)
log() { echo "[$(( $(date +%s) - START ))s] $*" >&2; }

# Mesa's lavapipe, unpacked (nothing is installed).
MESA="$WORK/mesa"
ICD="$MESA/lvp_icd.json"
if [ ! -f "$ICD" ]; then
    log "fetching Mesa's lavapipe from bookworm-backports"
    APT="$WORK/apt"
    mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$WORK/debs"
    echo "deb http://deb.debian.org/debian bookworm-backports main" > "$APT/sources.list"
    opts=(-o Dir::Etc::sourcelist="$PWD/$APT/sources.list" -o Dir::Etc::sourceparts=-
          -o Dir::State::Lists="$PWD/$APT/lists" -o Dir::Cache="$PWD/$APT")
    apt-get "${opts[@]}" update -qq
    (cd "$WORK/debs" && apt-get "${opts[@]}" download -qq \
        mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports \
        libdrm-amdgpu1/bookworm-backports 2>/dev/null)
    for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$MESA"; done
    cat > "$ICD" <<EOF
{"file_format_version": "1.0.0", "ICD": {"library_path": "$PWD/$MESA/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so", "api_version": "1.3"}}
EOF
fi
# The Vulkan loader itself, where the system has none (a machine without libvulkan1 found no
# adapter at all): Debian's libvulkan1, unpacked beside Mesa, as gpu-check.sh does on the GPU.
if ! ldconfig -p | grep -q 'libvulkan\.so\.1 ' && [ ! -e "$MESA/usr/lib/x86_64-linux-gnu/libvulkan.so.1" ]; then
    log "fetching the Vulkan loader (libvulkan1)"
    mkdir -p "$WORK/loader"
    (cd "$WORK/loader" && { apt-get download -qq libvulkan1 2>/dev/null \
        || { apt-get update -qq && apt-get download -qq libvulkan1; }; })
    dpkg-deb -x "$WORK"/loader/libvulkan1_*.deb "$MESA"
fi
export VK_ICD_FILENAMES="$PWD/$ICD" VK_DRIVER_FILES="$PWD/$ICD"
export LD_LIBRARY_PATH="$PWD/$MESA/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GANRUNNER_VULKAN_ADAPTER=cpu

# The Vulkan build with cubecl-spirv patched.
SPIRV="$WORK/cubecl-spirv"
registry_copy() { ls -d "$HOME"/.cargo/registry/src/*/cubecl-spirv-0.11.3 2>/dev/null | head -1; }
if [ ! -f "$SPIRV/.patched" ]; then
    src=$(registry_copy)
    [ -n "$src" ] || { cargo fetch -q && src=$(registry_copy); }
    rm -rf "$SPIRV" && cp -r "$src" "$SPIRV"
    patch -s -d "$SPIRV" -p1 < bench/cubecl-spirv-workgroup.patch
    touch "$SPIRV/.patched"
fi
cp Cargo.lock "$WORK/Cargo.lock.kept"
trap 'cp "$WORK/Cargo.lock.kept" Cargo.lock' EXIT
log "building the Vulkan runner with the patched cubecl-spirv"
cargo build -q --profile gpu --features "${GPU_FEATURES:-vulkan cuda}" \
    --config "patch.crates-io.cubecl-spirv.path=\"$PWD/$SPIRV\""
cp "$WORK/Cargo.lock.kept" Cargo.lock
RUNNER="$WORK/runner"
cp "$TARGET/gpu/runner" "$RUNNER"

# A tiny DCGAN on the test fixture: 6 steps, checkpoints every 3, a LeNet-FID at the end.
DATA=tests/fixtures/mnist-mini
RUNS="$WORK/runs"
rm -rf "$RUNS" && mkdir -p "$RUNS"
cat > "$RUNS/tiny.toml" <<'EOF'
name = "vulkan-smoke"
[model]
arch = "dcgan"
latent_dim = 8
g_channels = [8, 4]
d_channels = [4, 4, 8, 8]
bn_eps = 1e-5
[train]
steps = 6
batch_size = 16
seed = 3
[log]
sample_every = 3
checkpoint_every = 3
metrics_every = 1
eval_every = 6
eval_samples = 200
EOF
train() { "$RUNNER" train "$RUNS/tiny.toml" --data-dir "$DATA" "$@" >> "$RUNS/train.log" 2>&1; }

log "bench on the software GPU"
"$RUNNER" bench --device vulkan --model gan --batch 16 --steps 5 --warmup 1 | tee "$RUNS/bench.txt"
log "bench --graph: a step captured as a graph (wgpu's recorded commands) and replayed"
"$RUNNER" bench --device vulkan --graph --model gan --model dcgan --batch 16 --steps 2 --warmup 1 \
    --format json > "$RUNS/bench-graph.jsonl" 2>> "$RUNS/train.log" || true
log "6 steps on vulkan and on the CPU, from the same seed"
train --device vulkan --out "$RUNS/vulkan"
train --device cpu --out "$RUNS/cpu"
log "6 steps on vulkan with burn's convolution kernels (GANRUNNER_GPU_CONV=burn)"
GANRUNNER_GPU_CONV=burn train --device vulkan --out "$RUNS/vulkan-burn-conv"
log "6 steps with D spectrally normalized, on vulkan and on the CPU"
train --device vulkan --out "$RUNS/vulkan-sn" --set model.spectral_norm=true
train --device cpu --out "$RUNS/cpu-sn" --set model.spectral_norm=true
log "6 steps with WGAN-GP's and with R1's penalty, on vulkan and on the CPU"
for penalty in wgan-gp:train.loss=wgan-gp r1:train.r1_gamma=10; do
    train --device vulkan --out "$RUNS/vulkan-${penalty%%:*}" --set "${penalty#*:}"
    train --device cpu --out "$RUNS/cpu-${penalty%%:*}" --set "${penalty#*:}"
done
log "6 steps on vulkan with the losses read every 4 steps (GANRUNNER_READ_EVERY=4)"
GANRUNNER_READ_EVERY=4 train --device vulkan --out "$RUNS/read-4"
log "3 steps, then resumed to 6, on vulkan; and 3 on the CPU resumed on vulkan"
train --device vulkan --out "$RUNS/resumed" --steps 3
train --device vulkan --out "$RUNS/resumed"
train --device cpu --out "$RUNS/moved" --steps 3
train --device vulkan --out "$RUNS/moved"
log "generate and eval on vulkan"
"$RUNNER" generate --device vulkan --checkpoint "$RUNS/vulkan" --n 16 --out "$RUNS/grid.png" >> "$RUNS/train.log" 2>&1
"$RUNNER" eval --device vulkan "$RUNS/vulkan" --samples 200 --data-dir "$DATA" --format csv > "$RUNS/eval.csv" 2>> "$RUNS/train.log"

python3 - "$RUNS" <<'EOF'
import csv, json, sys
runs = sys.argv[1]
def losses(name):
    return {int(r["step"]): (float(r["d_loss"]), float(r["g_loss"]))
            for r in csv.DictReader(open(f"{runs}/{name}/losses.csv"))}
def worst(a, b):
    return max(abs(x - y) for s in a for x, y in zip(a[s], b[s]))
checks = [
    ("vulkan vs CPU, 6 steps", "vulkan", "cpu", 1e-3),
    ("vulkan with burn's convolutions vs CPU, 6 steps", "vulkan-burn-conv", "cpu", 1e-3),
    ("vulkan vs CPU, D spectrally normalized, 6 steps", "vulkan-sn", "cpu-sn", 1e-3),
    ("vulkan vs CPU, WGAN-GP, 6 steps", "vulkan-wgan-gp", "cpu-wgan-gp", 1e-3),
    ("vulkan vs CPU, R1, 6 steps", "vulkan-r1", "cpu-r1", 1e-3),
    ("vulkan resumed at 3 vs straight", "resumed", "vulkan", 1e-5),
    ("vulkan, losses read every 4 steps vs every step", "read-4", "vulkan", 1e-5),
    ("CPU to vulkan at 3 vs CPU straight", "moved", "cpu", 1e-3),
]
failed = False
for what, name, reference_name, tolerance in checks:
    run, reference = losses(name), losses(reference_name)
    diff = worst(run, reference)
    ok = len(run) == 6 and diff <= tolerance
    failed |= not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}: max |loss difference| {diff:.1e} (tolerance {tolerance:.0e})")
graphs = [json.loads(l) for l in open(f"{runs}/bench-graph.jsonl") if l.strip()]
ok = [r["model"] for r in graphs if r["graph"] and r["median_ms"] > 0] == ["gan", "dcgan"]
failed |= not ok
print(f"{'ok  ' if ok else 'FAIL'} bench --graph on vulkan: "
      + ", ".join(f"{r['model']} {r['median_ms']:.1f} ms a replayed step" for r in graphs)
      + ("" if ok else f" (see {runs}/train.log)"))
scores = list(csv.DictReader(open(f"{runs}/eval.csv")))
ok = bool(scores) and float(scores[0]["fid"]) > 0
failed |= not ok
print(f"{'ok  ' if ok else 'FAIL'} eval on vulkan: LeNet-FID {scores[0]['fid'] if scores else '?'}")
sys.exit(1 if failed else 0)
EOF

# The GPU check itself, small, with this runner: the script the lent GPU will run, end to end.
log "bench/gpu-check.sh at tiny sizes on lavapipe"
OUT="$WORK/gpu-check" GPU_CHECK_WORK="$WORK/gpu-check-work" RUNNER="$RUNNER" GPU_CHECK_SIZES=tiny bash bench/gpu-check.sh \
    2> "$WORK/gpu-check.log" | tee "$WORK/gpu-check.txt"
grep -q "^dcgan .* vulkan" "$WORK/gpu-check.txt" && grep -q "max |loss difference|" "$WORK/gpu-check.txt" \
    && grep -q "LeNet-FID [0-9]" "$WORK/gpu-check.txt" \
    || { echo "FAIL bench/gpu-check.sh: see $WORK/gpu-check.log" >&2; exit 1; }
log "done: the Vulkan path works on lavapipe (logs in $RUNS, $WORK/gpu-check.log)"
