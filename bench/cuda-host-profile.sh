#!/usr/bin/env bash
# What a GPU training step costs the host, measured without a GPU: a runner built with the CUDA
# backend and its symbols steps `runner bench` against the stand-in CUDA driver of
# `make cuda-compile` (which runs no kernel) under `perf record`, and bench/host_profile.py
# gives each of the host's threads' work a step with its waiting left out: the caller's
# (autodiff, the operations), burn's fusion server's (ordering, fusing, launching) and cubecl's
# compute server's (allocating, submitting). The slowest is a floor under the step on a GPU whose
# host has cores to spare; the wall times here (2 cores, three threads spinning at handoffs)
# are not. Variants run alternated, RUNS times each, since 2-core timings drift.
#
#   bash bench/cuda-host-profile.sh [MODEL] [BATCH]      # default: dcgan 64
#   VARIANTS="GANRUNNER_GPU_ADAM=burn GANRUNNER_GPU_ADAM=step" RUNS=3 TOP=20 bash bench/...
#
# Needs perf (Debian's linux-perf) and `make cuda-compile` run once (its CUDA wheels and
# stand-in driver). Builds the runner with `cargo build --release --features cuda` (symbols
# kept; 14 minutes the first time, then the runner's own crate; the next plain release build
# relinks the CPU runner in its place): dist/runner-cuda-symbols. Its cubecl host crates are
# optimized for speed, dist/runner-gpu's for size (`make build-gpu`'s 60 MiB limit); built with
# the GPU profile's opt-levels it measured within the runs' spread (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODEL=${1:-dcgan} BATCH=${2:-64}
VARIANTS=${VARIANTS:-GANRUNNER_GPU_ADAM=burn GANRUNNER_GPU_ADAM=step}
RUNS=${RUNS:-2} STEPS=${STEPS:-150} TOP=${TOP:-0}
WORK="$ROOT/dist/cuda-compile"
CUDA="$WORK/toolkit-13.0/nvidia/cu13"
RUNNER="$ROOT/dist/runner-cuda-symbols"
FREQUENCY=4000
# The step median of `runner bench --format json`'s row.
MEDIAN="import json, sys; print(json.loads(sys.stdin.readline())['median_ms'])"

command -v perf > /dev/null || { echo "no perf: apt-get install linux-perf" >&2; exit 1; }
[ -f "$WORK/lib/libcuda.so.1" ] && [ -f "$CUDA/lib/libnvrtc.so.13" ] || {
    echo "no stand-in CUDA driver: run make cuda-compile first" >&2
    exit 1
}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ganrunner-target}
cargo build --release --features cuda --bin runner
cp "$CARGO_TARGET_DIR/release/runner" "$RUNNER"

export LD_LIBRARY_PATH="$WORK/lib:$CUDA/lib" CUDA_PATH="$CUDA" GANRUNNER_DEVICE=cuda
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for run in $(seq "$RUNS"); do
    for variant in $VARIANTS; do
        (cd "$OUT" && env "$variant" perf record -q -F "$FREQUENCY" -o perf.data "$RUNNER" bench \
            --model "$MODEL" --batch "$BATCH" --steps "$STEPS" --warmup 3 --format json \
            > bench.json 2> bench.log) || { cat "$OUT/bench.log" >&2; exit 1; }
        median=$(python3 -c "$MEDIAN" < "$OUT/bench.json")
        echo "== $MODEL, batch $BATCH, $variant (run $run): $median ms a step against the stand-in"
        python3 bench/host_profile.py "$OUT/perf.data" "$median" --frequency "$FREQUENCY" \
            --top "$TOP"
    done
done
