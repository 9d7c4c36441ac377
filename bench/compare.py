#!/usr/bin/env python3
"""`make bench`: our training step against the PyTorch reference, side by side.

Runs `runner bench --format json` and, when torch is importable by $TORCH_PYTHON (default
python3), bench/pytorch_reference.py, for 1 thread and for all cores, and prints ms per step
and the ratio ours / PyTorch. Neither side gets allocator tunables (GLIBC_TUNABLES is cleared).
"""
import json
import os
import subprocess
import sys

RUNNER = sys.argv[1]
STEPS = os.environ.get("BENCH_STEPS", "10")
MODELS = ["gan", "dcgan", "dcgan-classic"]
HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON = os.environ.get("TORCH_PYTHON", "python3")


def json_lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {row["model"]: row for row in map(json.loads, filter(None, out.splitlines()))}


def main():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    os.environ.clear()
    os.environ.update(env)
    has_torch = subprocess.run([TORCH_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0
    if not has_torch:
        print(f"(torch is not importable by {TORCH_PYTHON}: printing ours only; `pip install torch` to compare)")
    cores = os.cpu_count() or 1
    rows = []
    for threads in sorted({1, cores}):
        model_args = [a for m in MODELS for a in ("--model", m)]
        ours = json_lines([RUNNER, "bench", *model_args, "--steps", STEPS, "--threads", str(threads), "--format", "json"])
        theirs = {}
        if has_torch:
            theirs = json_lines([TORCH_PYTHON, os.path.join(HERE, "pytorch_reference.py"), *model_args,
                                 "--steps", STEPS, "--threads", str(threads)])
        for model in MODELS:
            o, t = ours[model], theirs.get(model)
            rows.append((model, threads, o["median_ms"], o["gflop_per_s"], o["percent_of_peak"],
                         t["median_ms"] if t else None))
        peak = next(iter(ours.values()))["machine_peak_gflop_per_s"]
        print(f"machine peak with {threads} thread(s): {peak:.1f} GFLOP/s (2048^3 f32 matmul through burn)")
    print(f"{'model':<13} {'threads':>7} {'ours ms':>9} {'GFLOP/s':>8} {'%peak':>6} {'torch ms':>9} {'ours/torch':>10}")
    for model, threads, ours_ms, gflops, peak, torch_ms in rows:
        torch_cell = f"{torch_ms:9.1f}" if torch_ms else f"{'-':>9}"
        ratio = f"{ours_ms / torch_ms:10.2f}" if torch_ms else f"{'-':>10}"
        print(f"{model:<13} {threads:>7} {ours_ms:9.1f} {gflops:8.1f} {peak:6.1f} {torch_cell} {ratio}")


if __name__ == "__main__":
    main()
