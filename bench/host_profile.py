"""Host work a training step costs on the GPU path, per thread, from a `perf record` of
`runner bench` against the stand-in CUDA driver (bench/cuda-host-profile.sh runs it).

On a GPU a small step can be bound by the host: the caller's thread records autodiff's graph and
the operations, burn's fusion server (cubecl's thread `DSU-*`) orders, fuses and launches them,
and cubecl's compute server (`DSD-*`) allocates and submits each kernel. The three run side by
side, so the slowest one is a floor under the step's time on a GPU whose host has cores to
spare. Their handoffs spin while waiting (cubecl's channel spins, then yields, then parks), and
on a 2-core machine the spinning threads crowd the working one: wall times against the stand-in
say little, while the samples outside the spin loops are each thread's work.

    python3 bench/host_profile.py PERF_DATA STEP_MS [--frequency HZ] [--top N]

STEP_MS is the bench's median step, which turns the steady window's length into steps. The
steady window starts after the last kernel the compute server compiled (NVRTC, nvJitLink) and
ends just before the process does.
"""

import argparse
import collections
import re
import subprocess

# Where a thread waits: cubecl's channel (client and server loops) and the kernel's scheduler.
SPIN = re.compile(
    r"submit_inner|DeviceClient::enqueue|Server::start$|spin_loop"
    r"|finish_task_switch|sched_yield|__schedule"
)
COMPILING = ("libnvrtc", "libnvJitLink")
THREADS = {"DSU": "fusion server", "DSD": "compute server"}


def samples(perf_data):
    """(thread, time, symbol, dso) of each sample."""
    out = subprocess.run(
        ["perf", "script", "-i", perf_data, "-F", "comm,time,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = re.compile(r"\s*(\S+)\s+([\d.]+):\s+\S+\s+(.*?)\s+\((\S+)\)\s*$")
    for text in out.splitlines():
        m = line.match(text)
        if m:
            symbol = re.sub(r"\+0x[0-9a-f]+$", "", m.group(3))
            yield m.group(1), float(m.group(2)), symbol, m.group(4)


def role(thread):
    return THREADS.get(thread[:3], "caller (autodiff, ops)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("perf_data")
    parser.add_argument("step_ms", type=float)
    parser.add_argument("--frequency", type=float, default=4000)
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args()

    rows = list(samples(args.perf_data))
    if not rows:
        raise SystemExit(f"{args.perf_data}: no samples")
    end = rows[-1][1]
    # The last compile well before the end (the libraries' teardown at exit samples there too).
    compiles = [
        t
        for thread, t, _, dso in rows
        if thread.startswith("DSD") and any(c in dso for c in COMPILING) and t < end - 1.0
    ]
    start = (max(compiles) if compiles else rows[0][1]) + 0.2
    end -= 0.3
    if end - start < 10 * args.step_ms / 1000:
        raise SystemExit(f"steady window of {end - start:.2f} s: run more steps")

    work, spin = collections.Counter(), collections.Counter()
    symbols = collections.defaultdict(collections.Counter)
    for thread, t, symbol, dso in rows:
        if not start <= t <= end:
            continue
        key = role(thread)
        if SPIN.search(symbol):
            spin[key] += 1
        else:
            work[key] += 1
            symbols[key][symbol if symbol != "[unknown]" else dso] += 1

    steps = (end - start) * 1000 / args.step_ms
    per_step = 1000 / args.frequency / steps
    print(f"steady window {end - start:.1f} s, about {steps:.0f} steps")
    print(f"{'thread':24} {'work ms/step':>12} {'waiting':>8}")
    for key in sorted(work, key=work.get, reverse=True):
        print(f"{key:24} {work[key] * per_step:12.2f} {spin[key] * per_step:8.2f}")
    for key in sorted(work, key=work.get, reverse=True) if args.top else []:
        print(f"\n{key}: the {args.top} functions it spends most in (ms/step)")
        for symbol, n in symbols[key].most_common(args.top):
            print(f"  {n * per_step:6.3f}  {symbol[:110]}")


if __name__ == "__main__":
    main()
