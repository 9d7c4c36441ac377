#!/usr/bin/env bash
# bench/gpu-check.sh's own flow, without a GPU: a stand-in runner answers `--device vulkan` on
# the CPU (and has no cuda), so every step of the check runs, at its tiny sizes, on the test
# fixture. The check is meant for a GPU session's one call; this keeps an edit to it from
# breaking it unseen. Checks that
#   1. every row comes out (vulkan, vulkan+burn-conv, vulkan+step-adam, vulkan+read-10,
#      vulkan+graph, and each setting's step time over the default's), the
#      two 3-step comparisons find the CPU's own losses (difference 0: the stand-in is the CPU) and the FID line has a number;
#   2. what a device call would bring back from $OUT fits its limits (at most 8 files, none in
#      a folder here): the table, the rows, the log, the compared runs' losses and the profile
#      (the stand-in writes a profile log as cubecl's profiler would, where a cubecl.toml asks);
#   3. with a budget too small for the later steps, those are named as skipped and the table
#      still prints;
#   4. GPU_CHECK_STEPS runs only the steps it names (and the profile step finds a runner and
#      a scratch folder named relative to the repository);
#   5. a device that answers the probe (the MLP GAN) but fails the report's DCGAN (here a
#      "cuda" whose convolutions do not compile) leaves the comparisons, the FID and the
#      profile to the next device, and the table says so;
#   6. CUDA headers without crt/ (PyTorch's CUDA 13 wheels) get the carried crt/ beside
#      them, and a "cuda" whose DCGAN kernels include crt/mma.h steps every model.
# Usage: tests/gpu-check.sh [path/to/runner]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNNER=$(realpath "${1:-${CARGO_TARGET_DIR:-$HOME/.cache/ganrunner-target}/release/runner}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$WORK/runner" <<EOF
#!/usr/bin/env bash
# cubecl's profiler, asked by a cubecl.toml where the runner starts: a line per kernel run, five
# steps of two kernels (one a matrix product, named by its last cell), the first step compiling.
log=\$(sed -n 's/^file = "\(.*\)"/\1/p' cubecl.toml 2>/dev/null)
if [ -n "\$log" ]; then
    printf '| 2.5s       | ReduceKernel | TensorArgs_d1217d7c\n| 40ms | MatmulEntry | TensorArgs | Simple_4a2870b6\n' > "\$log"
    for step in 1 2 3 4; do
        printf '| 1.5ms      | ReduceKernel | TensorArgs_d1217d7c\n| 20µs | MatmulEntry | TensorArgs | Simple_4a2870b6\n' >> "\$log"
    done
fi
cuda=no
if [[ " \$* " == *" cuda "* ]]; then
    case "\${STANDIN_CUDA:-}" in
        gan-only) cuda=yes;;
        # The matrix products' kernels include crt/mma.h: the DCGANs need it, the MLP GAN not.
        needs-crt)
            if [[ " \$* " =~ dcgan|" train "|" eval " ]] && [ ! -f "\$CUDA_PATH/include/crt/mma.h" ]; then
                echo "error: cuda: cannot open source file \"crt/mma.h\" (stand-in)" >&2
                exit 101
            fi;;
        *) echo "error: --device cuda: not in this stand-in" >&2; exit 1;;
    esac
fi
args=() dropped=no
for arg in "\$@"; do
    case "\$arg" in
        cuda|vulkan) arg=cpu;;
        # The CPU has nothing to capture: the stand-in times plain steps for these rows.
        --graph) continue;;
        --model=dcgan*) [ \$cuda = yes ] && { dropped=yes; continue; };;
    esac
    args+=("\$arg")
done
if [ \$cuda = yes ]; then
    # A CUDA whose MLP GAN steps but whose convolutions' kernels fail to compile: bench
    # prints the rows of the models before the first that fails, as the runner does.
    failure="error: cuda: a kernel failed to compile (stand-in)"
    case " \$* " in *" --model dcgan "*|" train "*|" eval "*) echo "\$failure" >&2; exit 101;; esac
    if [ \$dropped = yes ]; then
        [[ " \${args[*]} " == *" --model="* ]] && { "$RUNNER" "\${args[@]}" || exit; }
        echo "\$failure" >&2; exit 101
    fi
fi
exec "$RUNNER" "\${args[@]}"
EOF
chmod +x "$WORK/runner"

check() {
    OUT="$WORK/out" GPU_CHECK_WORK="$WORK/scratch" RUNNER="$WORK/runner" DATA="$ROOT/tests/fixtures/mnist-mini" \
        GPU_CHECK_SIZES=tiny "$@" bash "$ROOT/bench/gpu-check.sh" 2> "$WORK/log" > "$WORK/table" \
        || fail "gpu-check.sh exited $? (log: $(tail -3 "$WORK/log"))"
}

check env
for row in "^dcgan .* vulkan " "^dcgan-classic .* vulkan+burn-conv " "^gan .* vulkan " \
    "^dcgan .* vulkan+step-adam " "^dcgan .* vulkan+read-10 " "^dcgan .* vulkan+graph "; do
    grep -q "$row" "$WORK/table" || fail "no row matching '$row' in: $(cat "$WORK/table")"
done
for run in vulkan vulkan-burn-conv; do
    grep -q "^$run vs CPU, same seed, 3 steps: max |loss difference| 0.00e+00 at step 1" "$WORK/table" \
        || fail "no 3-step comparison of $run with the CPU's own losses in: $(cat "$WORK/table")"
done
grep -q "^dcgan batch [0-9]* on vulkan, GANRUNNER_READ_EVERY=10: [0-9.]*x the default's step time" "$WORK/table" \
    || fail "no line setting +read-10 against the default in: $(cat "$WORK/table")"
grep -q "^dcgan batch [0-9]* on vulkan, one step captured as a graph and replayed (bench --graph): [0-9.]*x the default's step time" "$WORK/table" \
    || fail "no line setting +graph against the default in: $(cat "$WORK/table")"
grep -q "^quickstart-sized DCGAN, 3 steps on vulkan: [0-9]* s, LeNet-FID [0-9]" "$WORK/table" \
    || fail "no LeNet-FID line in: $(cat "$WORK/table")"
grep -q skipped "$WORK/table" && fail "a step was skipped at the default budget: $(cat "$WORK/table")"
echo "ok: every step of the GPU check runs and its table comes out"

returned=$(cd "$WORK/out" && find . -mindepth 1 | sort | paste -sd' ')
[ "$returned" = "./log.txt ./losses-cpu.csv ./losses-vulkan-burn-conv.csv ./losses-vulkan.csv ./profile.txt ./rows.jsonl ./table.txt" ] \
    || fail "\$OUT holds other than the seven files a device call brings back: $returned"
# The last step's kernels, each summed, the largest first; the compiling first step left out.
grep -q "^kernel time per step 1.52 ms, 2 kernels" "$WORK/out/profile.txt" \
    && grep -q "^    1.50  98.7%      1   1500.0  ReduceKernel" "$WORK/out/profile.txt" \
    && grep -q "^    0.02   1.3%      1     20.0  Simple$" "$WORK/out/profile.txt" \
    || fail "profile.txt is not the last step's kernels: $(cat "$WORK/out/profile.txt")"
grep -q "^profile of a DCGAN step on vulkan (profile.txt): kernel time per step 1.52 ms" "$WORK/table" \
    || fail "the table does not name the profile: $(cat "$WORK/table")"
cmp -s "$WORK/table" "$WORK/out/table.txt" || fail "table.txt is not what the check printed"
grep -q "bench vulkan batch 16" "$WORK/out/log.txt" || fail "log.txt lacks the progress lines"
# The quickstart-sized run is timed training alone: its one evaluation comes after it (on a
# software GPU its own, 10 000 images twice at the end, had taken longer than the whole check).
grep -q "step 3: FID" "$WORK/out/log.txt" && fail "the quickstart-sized run evaluated while it trained"
echo "ok: \$OUT holds the seven files a device call brings back"

# A budget that ends after the first steps: the rest are skipped, by name, and the table prints.
check env GPU_CHECK_BUDGET=31
grep -q "^model .* ours ms" "$WORK/table" || fail "no table with a small budget: $(cat "$WORK/table")"
grep -q "^skipped (out of GPU_CHECK_BUDGET=31 s): 3-step quickstart-sized DCGAN on vulkan" "$WORK/table" \
    || fail "the quickstart-sized run was not named as skipped: $(cat "$WORK/table")"
# Its profile step skipped too, the first check's profile must not pass for this one's.
[ ! -e "$WORK/out/profile.txt" ] || fail "the earlier check's profile.txt was left in \$OUT"
echo "ok: out of budget, the GPU check names what it skipped and still prints its table"

# Only the steps asked for: the profile alone, no timings, runs or comparisons. With the runner
# and the scratch folder named relative to the repository (as bench/vulkan-smoke.sh names
# them), where the profile step, which runs in a folder of its own, had found no runner.
check env GPU_CHECK_STEPS=5 GPU_CHECK_WORK="$(realpath --relative-to="$ROOT" "$WORK/scratch")" \
    RUNNER="$(realpath --relative-to="$ROOT" "$WORK/runner")"
grep -q "^profile of a DCGAN step on vulkan (profile.txt): kernel time per step" "$WORK/table" \
    || fail "GPU_CHECK_STEPS=5 made no profile: $(cat "$WORK/table")"
grep -qE "^(gan|dcgan)|vs CPU|quickstart-sized|skipped" "$WORK/table" \
    && fail "GPU_CHECK_STEPS=5 ran other steps: $(cat "$WORK/table")"
[ "$(cd "$WORK/out" && ls losses-*.csv 2>/dev/null)" = "" ] || fail "GPU_CHECK_STEPS=5 left loss files"
echo "ok: GPU_CHECK_STEPS runs only the steps it names"

# A cuda that steps the MLP GAN but not the DCGAN: the later steps go to vulkan, said in the table.
check env STANDIN_CUDA=gan-only
grep -q "^gan .* cuda " "$WORK/table" || fail "the stand-in's cuda was not timed on the MLP GAN: $(cat "$WORK/table")"
grep -q "^cuda stepped no report's DCGAN at batch 16 (log.txt): the later steps ran on vulkan$" "$WORK/table" \
    || fail "the table does not say the later steps left cuda: $(cat "$WORK/table")"
grep -q "^dcgan batch [0-9]* on vulkan, GANRUNNER_READ_EVERY=10: [0-9.]*x the default's step time" "$WORK/table" \
    || fail "no line setting +read-10 against the default in: $(cat "$WORK/table")"
grep -q "^vulkan vs CPU, same seed, 3 steps: max |loss difference| 0.00e+00 at step 1" "$WORK/table" \
    && grep -q "^quickstart-sized DCGAN, 3 steps on vulkan: [0-9]* s, LeNet-FID [0-9]" "$WORK/table" \
    && grep -q "^profile of a DCGAN step on vulkan (profile.txt)" "$WORK/table" \
    || fail "the comparisons, FID or profile did not run on vulkan: $(cat "$WORK/table")"
echo "ok: a device that fails the DCGAN leaves the later steps to one that steps it"

# CUDA headers without crt/ (as PyTorch's CUDA 13 wheels install them), crt/ carried: a cuda
# whose DCGAN kernels include crt/mma.h steps them all, the later steps on it.
mkdir -p "$WORK/wheel/include/cccl" "$WORK/carried/crt"
touch "$WORK/wheel/include/cuda_fp16.h" "$WORK/carried/crt/mma.h"
check env STANDIN_CUDA=needs-crt CUDA_PATH="$WORK/wheel" CUDA_CRT="$WORK/carried"
grep -q "CUDA headers: $WORK/wheel, with crt/ from $WORK/carried$" "$WORK/out/log.txt" \
    || fail "the carried crt/ was not put beside the headers: $(grep "CUDA headers" "$WORK/out/log.txt")"
grep -q "^dcgan .* cuda " "$WORK/table" && grep -q "^cuda vs CPU, same seed, 3 steps" "$WORK/table" \
    || fail "the cuda needing crt/ did not step the DCGAN: $(cat "$WORK/table")"
echo "ok: CUDA headers without crt/ get the carried ones"
