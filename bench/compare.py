#!/usr/bin/env python3
"""`make bench`: our training step against the PyTorch reference, side by side.

Runs `runner bench --format json` and, when torch is importable by $TORCH_PYTHON (default
python3), bench/pytorch_reference.py, for 1 thread and for all cores, and prints ms per step
and the ratio ours / PyTorch. PyTorch runs twice: with glibc's allocator as it comes
(GLIBC_TUNABLES cleared), and tuned as ../shared/SEED.md measured it (large buffers kept
instead of handed back to the kernel and faulted in again every step), which makes its DCGAN
steps much faster; ours uses mimalloc either way.
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
TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def json_lines(cmd, env=None):
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    out = done.stdout
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
        theirs, tuned = {}, {}
        if has_torch:
            torch_cmd = [TORCH_PYTHON, os.path.join(HERE, "pytorch_reference.py"), *model_args,
                         "--steps", STEPS, "--threads", str(threads)]
            theirs = json_lines(torch_cmd)
            tuned = json_lines(torch_cmd, env={**os.environ, "GLIBC_TUNABLES": TUNED})
        for model in MODELS:
            o = ours[model]
            torch_ms = [t[model]["median_ms"] if model in t else None for t in (theirs, tuned)]
            rows.append((model, threads, o["median_ms"], o["gflop_per_s"], o["percent_of_peak"], *torch_ms))
        peak = next(iter(ours.values()))["machine_peak_gflop_per_s"]
        print(f"machine peak with {threads} thread(s): {peak:.1f} GFLOP/s (2048^3 f32 matmul through burn)")
    print(f"{'model':<13} {'threads':>7} {'ours ms':>9} {'GFLOP/s':>8} {'%peak':>6} "
          f"{'torch ms':>9} {'ours/torch':>10} {'tuned ms':>9} {'ours/tuned':>10}")
    for model, threads, ours_ms, gflops, peak, torch_ms, tuned_ms in rows:
        cells = ""
        for ms in (torch_ms, tuned_ms):
            cells += f" {ms:9.1f} {ours_ms / ms:10.2f}" if ms else f" {'-':>9} {'-':>10}"
        print(f"{model:<13} {threads:>7} {ours_ms:9.1f} {gflops:8.1f} {peak:6.1f}{cells}")
    if has_torch:
        print("torch: glibc's allocator as it comes; tuned: GLIBC_TUNABLES=" + TUNED)


if __name__ == "__main__":
    main()
