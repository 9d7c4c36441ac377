#!/usr/bin/env python3
"""Sums cubecl's profile log (a `cubecl.toml` with `[profiling.logger]` where the runner starts:
a line per kernel run) by kernel over the last steps of a run:

    python3 bench/profile_summary.py LOG TOTAL_STEPS TIMED_STEPS

Every step launches the same kernels, so the timed steps are the log's last lines. Used by
bench/gpu-check.sh (its profile.txt) and bench/lavapipe-profile.sh.
"""
import collections, re, sys
units = {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1e3}
kernels = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    cells = [c.strip() for c in line.split("|")]
    m = re.fullmatch(r"([0-9.]+)(ns|µs|ms|s)", cells[1]) if len(cells) > 2 else None
    if m:
        # A kernel's name is its first cell; a matrix product's last cell is its own.
        name = cells[-1] if cells[2] == "MatmulEntry" else cells[2]
        kernels.append((re.sub(r"_[0-9a-f]{8}$", "", name), float(m[1]) * units[m[2]]))
total_steps, timed = int(sys.argv[2]), int(sys.argv[3])
per_kernel = collections.defaultdict(lambda: [0, 0.0])
for name, ms in kernels[len(kernels) - len(kernels) * timed // total_steps:]:
    per_kernel[name][0] += 1
    per_kernel[name][1] += ms
rows = sorted(((ms / timed, n / timed, name) for name, (n, ms) in per_kernel.items()), reverse=True)
total = sum(r[0] for r in rows)
print(f"kernel time per step {total:.2f} ms, {sum(r[1] for r in rows):.0f} kernels "
      f"(the last {timed} of {total_steps} steps; timing each kernel slows the step itself)")
print(f"{'ms/step':>8} {'share':>6} {'calls':>6} {'mean us':>8}  kernel")
for ms, n, name in rows[:25]:
    print(f"{ms:8.2f} {100 * ms / total:5.1f}% {n:6.0f} {ms / n * 1e3:8.1f}  {name[:70]}")
