#!/usr/bin/env python3
"""Summarise the test VM's serial log: TAP results per leg, kernel splats.

Usage: tap-summary.py LOG QEMU_EXIT_CODE SECONDS
Prints failing tests, a table per leg and, last, "N passed, N failed,
N skipped". Exits 1 on any failed test, a test binary that failed without a
failing test line, a kernel splat, an unexpected taint or a run that did not
reach its end.
"""
import re
import sys

SPLATS = re.compile(
    r"Oops|BUG:|WARNING:|KASAN|kernel BUG|Call Trace|"
    r"possible circular locking|possible recursive locking|"
    r"inconsistent lock state|suspicious RCU usage|DEBUG_LOCKS_WARN_ON|"
    r"unreferenced object|Kernel panic|general protection fault|"
    r"=== error"
)
# Taint bits allowed: O (out-of-tree module, 4096) and E (unsigned, 8192).
ALLOWED_TAINT = 4096 | 8192


def main():
    log_path, qemu_rc, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lines = open(log_path, errors="replace").read().splitlines()
    legs = {}
    order = []
    leg = "?"
    test = "?"
    failures = []
    problems = []
    test_failed = False
    done = False
    for raw in lines:
        line = raw.rstrip("\r")
        m = re.match(r"=== leg (\S+)", line)
        if m:
            leg = m.group(1)
            if leg not in legs:
                legs[leg] = [0, 0, 0]
                order.append(leg)
            continue
        m = re.match(r"=== test (\S+)", line)
        if m:
            test = m.group(1).rsplit("/", 1)[-1]
            test_failed = False
            continue
        m = re.match(r"=== exit (\S+) (\d+)", line)
        if m:
            if m.group(2) not in ("0", "4") and not test_failed:
                # 4 is kselftest's "skip"; anything else without a failing
                # test line means the binary crashed or never ran its tests.
                legs.setdefault(leg, [0, 0, 0])[1] += 1
                failures.append(f"{leg}: {test} exited {m.group(2)}")
            continue
        m = re.match(r"=== tainted (\d+)", line)
        if m and int(m.group(1)) & ~ALLOWED_TAINT:
            problems.append(f"kernel tainted: {m.group(1)}")
        if line.startswith("=== done"):
            done = True
        if SPLATS.search(line):
            problems.append(f"kernel log: {line.strip()}")
        m = re.match(r"(not ok|ok) \d+ (.*)", line)
        if m:
            counts = legs.setdefault(leg, [0, 0, 0])
            if leg not in order:
                order.append(leg)
            name = m.group(2)
            if "# SKIP" in name:
                counts[2] += 1
            elif m.group(1) == "ok":
                counts[0] += 1
            else:
                counts[1] += 1
                test_failed = True
                failures.append(f"{leg}: {test}: {name}")
    if not done:
        problems.append(
            f"the VM did not reach the end of the run (QEMU exit {qemu_rc})")

    for f in failures:
        print(f"FAIL {f}")
    for p in problems[:40]:
        print(f"PROBLEM {p}")
    print(f"{'leg':<8} {'passed':>7} {'failed':>7} {'skipped':>8}")
    for leg in order:
        p, f, s = legs[leg]
        print(f"{leg:<8} {p:>7} {f:>7} {s:>8}")
    print(f"test VM: {secs} s, log: {log_path}")
    passed = sum(c[0] for c in legs.values())
    failed = sum(c[1] for c in legs.values()) + len(problems)
    skipped = sum(c[2] for c in legs.values())
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed or passed == 0 else 0)


if __name__ == "__main__":
    main()
