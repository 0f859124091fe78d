#!/usr/bin/env python3
"""Summarise `scripts/vm bench`: the exit benchmarks for KVM and rkvm.

Usage: bench-summary.py LOG QEMU_EXIT_CODE SECONDS
Reads the "bench NAME INSNS ..." lines of each leg (=== bench-leg kvm|rkvm)
from the test VM's serial log and prints one row per benchmark: KVM's and
rkvm's instructions per operation and the ratio rkvm/KVM (lower is better;
the goal is at most 1.0). A ratio above 1.0 is reported, not a failure.
Exits 1 if a leg produced no number for a benchmark the other leg measured,
reported a bench-error, exited non-zero, or the VM did not reach its end.
"""
import re
import sys

LEGS = ("kvm", "rkvm")


def main():
    log_path, qemu_rc, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lines = open(log_path, errors="replace").read().splitlines()
    results = {leg: {} for leg in LEGS}
    order = []
    problems = []
    idle = []
    leg = None
    done = False
    for raw in lines:
        line = raw.rstrip("\r")
        m = re.match(r"=== bench-leg (\S+)", line)
        if m:
            leg = m.group(1)
            results.setdefault(leg, {})
            continue
        m = re.match(r"bench (\S+) (\d+)", line)
        if m and leg:
            results[leg][m.group(1)] = int(m.group(2))
            i = re.search(r" idle=(\d+)", line)
            if i and int(i.group(1)):
                idle.append(f"{leg} {m.group(1)}: {i.group(1)} ns idle/op "
                            "(not counted)")
            if m.group(1) not in order:
                order.append(m.group(1))
            continue
        if line.startswith("bench-error") or line.startswith("=== error"):
            problems.append(f"{leg}: {line.strip()}")
            continue
        m = re.match(r"=== bench-exit (\S+) (\S+) (\d+)", line)
        if m and m.group(3) != "0":
            problems.append(f"{m.group(1)}: {m.group(2)} exited {m.group(3)}")
            continue
        if re.search(r"Oops|BUG:|WARNING:|KASAN|Kernel panic|Call Trace",
                     line):
            problems.append(f"kernel log: {line.strip()}")
        if line.startswith("=== done"):
            done = True
    if not done:
        problems.append(
            f"the VM did not reach the end of the run (QEMU exit {qemu_rc})")
    for leg in LEGS:
        if not results[leg]:
            problems.append(f"{leg}: no benchmark results")
        for name in order:
            if name not in results[leg]:
                problems.append(f"{leg}: no result for {name}")

    print(f"{'benchmark':<20} {'KVM insns/op':>13} {'rkvm insns/op':>14} "
          f"{'rkvm/KVM':>9}")
    for name in order:
        k = results["kvm"].get(name)
        r = results["rkvm"].get(name)
        ratio = f"{r / k:.2f}" if k and r is not None else "-"
        flag = "  (> 1.0)" if k and r is not None and r > k else ""
        print(f"{name:<20} {k if k is not None else '-':>13} "
              f"{r if r is not None else '-':>14} {ratio:>9}{flag}")
    for i in idle:
        print(f"note: {i}")
    for p in problems[:40]:
        print(f"PROBLEM {p}")
    print(f"test VM: {secs} s, log: {log_path}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
