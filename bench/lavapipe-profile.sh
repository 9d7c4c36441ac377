#!/usr/bin/env bash
# How many kernels a training step launches on a GPU, counted without one: the Vulkan runner
# that `make vulkan-smoke` built (dist/vulkan-smoke/runner) on Mesa's lavapipe, with cubecl's
# profiler on, for the last of 5 steps (bench/profile_summary.py). The kernels are those a GPU
# runs (fusion may choose a little differently on another driver); their times are the CPU's.
#
#   bash bench/lavapipe-profile.sh [MODEL] [BATCH]    # default: dcgan 16
#
# With FUSION_LOG=1 it also leaves burn's fusion log (each segment's blocks, fused or not, and
# why each fuser closed) in dist/vulkan-smoke/profile/fusion.log. A change to the runner
# rebuilds with `make vulkan-smoke` (or its cargo line alone, about 9 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$PWD/dist/vulkan-smoke"
RUNNER="$WORK/runner" MESA="$WORK/mesa"
[ -x "$RUNNER" ] && [ -f "$MESA/lvp_icd.json" ] || {
    echo "no lavapipe runner: run make vulkan-smoke first" >&2
    exit 1
}
export VK_ICD_FILENAMES="$MESA/lvp_icd.json" VK_DRIVER_FILES="$MESA/lvp_icd.json"
export LD_LIBRARY_PATH="$MESA/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GANRUNNER_VULKAN_ADAPTER=cpu

DIR="$WORK/profile"
mkdir -p "$DIR" && rm -f "$DIR/profile.log" "$DIR/fusion.log" "$DIR/burn.toml"
printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "$DIR/profile.log" > "$DIR/cubecl.toml"
if [ "${FUSION_LOG:-0}" = 1 ]; then
    printf '[fusion.logger]\nlevel = "full"\nfile = "%s"\n' "$DIR/fusion.log" > "$DIR/burn.toml"
fi
(cd "$DIR" && "$RUNNER" bench --device vulkan --model "${1:-dcgan}" --batch "${2:-16}" \
    --steps 1 --warmup 4 --format json > bench.json)
python3 bench/profile_summary.py "$DIR/profile.log" 5 1
