#!/usr/bin/env bash
# Whether every kernel that `--device cuda` launches compiles for an H200, checked without a
# GPU: the GPU build (dist/runner-gpu, `make build-gpu`) runs gpu-check's commands, a step or
# two each, against a stand-in CUDA driver (bench/cuda-compile/libcuda.c) that answers as an
# H200 and runs no kernel. Each kernel goes through what it would go through on the GPU: cubecl
# writes its CUDA C++, the real NVRTC compiles it to PTX (with the CUDA headers it includes),
# and the stand-in assembles that PTX for sm_90a with the real nvJitLink, as the driver would
# when loading it. Losses and samples are meaningless here (no kernel runs): only compiling is
# checked. Takes about 2 minutes warm.
#
#   bash bench/cuda-compile.sh            # or: make cuda-compile
#
# The CUDA pieces are NVIDIA's PyPI wheels, fetched once (bench/cuda-wheels.sh, 136 MB) into
# dist/cuda-compile/ (340 MB): NVRTC, the runtime's and CCCL's headers, the `crt/` headers (a
# wheel of their own since CUDA 13, which PyTorch's wheels do not bring, and which `mma.h`
# includes), nvJitLink. CUDA 13.0, as on the H200 (driver 580): CUDA_COMPILE_VERSION picks
# another 13.x. CUDA_COMPILE_SM="86 89 90" checks for other GPUs too (their compute
# capabilities, 90 the H200's and the default; about 2 minutes each).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNNER="$ROOT/dist/runner-gpu"
WORK="$ROOT/dist/cuda-compile"
VERSION=${CUDA_COMPILE_VERSION:-13.0}
# The GPUs answered, by compute capability (see bench/cuda-compile/libcuda.c): the H200's.
SMS=${CUDA_COMPILE_SM:-90}
TOOLKIT="$WORK/toolkit-$VERSION"
CUDA="$TOOLKIT/nvidia/cu13"
DATA=${DATA:-$ROOT/data/mnist}

[ -x "$RUNNER" ] || { echo "no $RUNNER: run make build-gpu first" >&2; exit 1; }
[ -d "$DATA" ] || { echo "no MNIST in $DATA: run make data first" >&2; exit 1; }

if [ ! -f "$CUDA/lib/libnvrtc.so.13" ] || [ ! -f "$CUDA/include/crt/mma.h" ]; then
    echo "fetching CUDA $VERSION's NVRTC, headers and nvJitLink (PyPI wheels) into $TOOLKIT"
    bash bench/cuda-wheels.sh "$VERSION" "$TOOLKIT" nvidia-cuda-nvrtc nvidia-cuda-runtime \
        nvidia-cuda-cccl nvidia-cuda-crt nvidia-nvjitlink
fi

# The stand-in driver, built against this nvJitLink.
LIB="$WORK/lib"
mkdir -p "$LIB"
cc -O1 -Wall -Wextra -Werror -shared -fPIC -I"$CUDA/include" -o "$LIB/libcuda.so.1" \
    bench/cuda-compile/libcuda.c "$CUDA/lib/libnvJitLink.so.13" -Wl,-rpath,"$CUDA/lib"

OUT="$WORK/out"
rm -rf "$OUT" && mkdir -p "$OUT/failed"
export LD_LIBRARY_PATH="$LIB:$CUDA/lib" CUDA_PATH="$CUDA"
export CUDA_COMPILE_FAILED="$OUT/failed" CUDA_COMPILE_ENTRIES="$OUT/entries.txt"
export GANRUNNER_DEVICE=cuda
LOG="$OUT/log.txt"
FAILED=()
# `check NAME COMMAND...`: runs one of gpu-check's commands, shortened, against the stand-in.
check() {
    local name=$1
    shift
    echo "== $name" >> "$LOG"
    if (cd "$OUT" && "$@") >> "$LOG" 2>&1; then
        echo "ok      $name"
    else
        echo "FAILED  $name (dist/cuda-compile/out/log.txt)"
        FAILED+=("$name")
    fi
}
# `captured MODEL`: `bench --graph`. No kernel runs here, so the replayed losses cannot be the
# step's and the bench stops at its first replay, as it should; what is checked is that the
# step was captured (with nothing a recording refuses: an allocation, a host copy, a sync) and
# replayed.
captured() {
    local said
    said=$("$RUNNER" bench --graph --model "$1" --steps 2 --warmup 1 2>&1) || true
    echo "$said"
    grep -q "1 graphs captured ([0-9]* launches recorded), 1 replays, 0 calls refused" <<< "$said"
}
for sm in $SMS; do
    export CUDA_STANDIN_SM=$sm
    for batch in 64 256; do
        check "sm_$sm: bench, batch $batch" "$RUNNER" bench --model gan --model dcgan \
            --model dcgan-classic --batch "$batch" --steps 1 --warmup 1
    done
    check "sm_$sm: bench, burn's convolutions" env GANRUNNER_GPU_CONV=burn "$RUNNER" bench \
        --model dcgan --model dcgan-classic --steps 1 --warmup 1
    for model in gan dcgan; do
        check "sm_$sm: bench --graph --model $model (a step captured as a CUDA graph)" \
            captured "$model"
    done
    for spec in dcgan quickstart; do
        check "sm_$sm: train experiments/$spec.toml, 2 steps" "$RUNNER" train \
            "$ROOT/experiments/$spec.toml" --steps 2 --set log.eval_samples=0 --data-dir "$DATA" \
            --out "$OUT/$spec-$sm"
    done
    check "sm_$sm: eval (LeNet-FID), 200 samples" "$RUNNER" eval "$OUT/quickstart-$sm" \
        --data-dir "$DATA" --samples 200
done

echo
grep "^fake libcuda" "$LOG" | tr -d '(' | awk '{modules += $3; refused += $8; launches += $13}
    END {printf "%d modules compiled and assembled (%d refused), %d launches\n",
        modules, refused, launches}'
touch "$OUT/entries.txt"
KERNELS=$(sed 's/_[0-9a-f]*$//' "$OUT/entries.txt" | sort -u)
echo "kernel families ($(echo "$KERNELS" | grep -c .)): $(echo "$KERNELS" | paste -sd' ' -)"
REFUSED=$(ls "$OUT/failed" | wc -l)
if [ ${#FAILED[@]} -gt 0 ] || [ "$REFUSED" -gt 0 ]; then
    echo "cuda-compile: FAILED: ${#FAILED[@]} of the commands above (dist/cuda-compile/out/log.txt);" \
        "$REFUSED modules' PTX refused (dist/cuda-compile/out/failed)" >&2
    exit 1
fi
echo "cuda-compile: every kernel compiled (NVRTC $VERSION) and assembled for sm_${SMS// /, sm_}"
