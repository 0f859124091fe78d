#!/usr/bin/env python3
"""Summarise the test VM's serial log: TAP results per leg, kernel splats.

Usage: tap-summary.py [options] LOG EMULATOR_EXIT_CODE SECONDS
       tap-summary.py --total NAME=SUMMARY_FILE...
Prints failing tests, a table per leg (with the seconds each took) and, last,
"N passed, N failed, N skipped". Exits 1 on any failed test, a test binary
that failed without a failing test line, a kernel splat, an unexpected taint
or a run that did not reach its end.

Options:
  --timed            each log line starts with host seconds and a space
                     (scripts/bochs); leg times are then host seconds, else
                     the guest's uptime at tests/vm/init's leg markers
  --machine NAME     what ran (printed with the time; default "test VM")
  --summary FILE     write "passed failed skipped seconds" to FILE (default:
                     LOG.summary)

--total adds up the summary files of several runs (make check: the QEMU test
VM and the Bochs machine): a line per run and the closing "N passed, N failed,
N skipped"; a missing file (a run that did not get as far as its summary)
counts as one failure.
"""
import argparse
import os
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
# The taint flags' letters, bit 0 first (kernel/panic.c: taint_flags).
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTNJ"


def total(runs):
    sums = [0, 0, 0]
    for run in runs:
        name, _, path = run.partition("=")
        try:
            p, f, s, secs = open(path).read().split()
            counts = [int(p), int(f), int(s)]
            print(f"{name}: {p} passed, {f} failed, {s} skipped in {secs} s")
        except (OSError, ValueError):
            counts = [0, 1, 0]
            print(f"{name}: did not finish (no {path})")
        sums = [a + b for a, b in zip(sums, counts)]
    print(f"{sums[0]} passed, {sums[1]} failed, {sums[2]} skipped")
    sys.exit(1 if sums[1] or sums[0] == 0 else 0)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--total":
        total(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("rc", type=int)
    ap.add_argument("secs")
    ap.add_argument("--timed", action="store_true")
    ap.add_argument("--machine", default="test VM")
    ap.add_argument("--summary")
    args = ap.parse_args()
    log_path, qemu_rc, secs = args.log, args.rc, args.secs
    lines = open(log_path, errors="replace").read().splitlines()
    legs = {}
    order = []
    leg = "?"
    test = "?"
    failures = []
    problems = []
    test_failed = False
    done = False
    now = None          # host seconds (--timed) of the current line
    marks = []          # (leg or None, seconds) at each leg boundary
    todo = 0
    consoles = {}       # guests leg: guest name -> its console lines
    for raw in lines:
        line = raw.rstrip("\r")
        if args.timed:
            t, _, line = line.partition(" ")
            now = float(t) if t.isdigit() else now
        # A nested guest's console (tools/guest-run): kept in
        # guests/NAME.log beside the log, never read as this kernel's splats.
        m = re.match(r"=== guest-console (\S+) \| ?(.*)", line)
        if m:
            consoles.setdefault(m.group(1), []).append(m.group(2))
            continue
        if line.startswith("# tail | "):
            continue
        m = re.match(r"=== (leg (\S+)|legs-done)(?: uptime=([0-9.]+))?", line)
        if m:
            at = now if args.timed else (float(m.group(3)) if m.group(3) else None)
            marks.append((m.group(2), at))
            if not m.group(2):
                continue
            leg = m.group(2)
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
            bad = int(m.group(1)) & ~ALLOWED_TAINT
            flags = "".join(c for i, c in enumerate(TAINT_LETTERS) if bad >> i & 1)
            problems.append(f"kernel tainted: {m.group(1)} (unexpected: {flags})")
        if line.startswith("=== done"):
            done = True
            if args.timed:
                marks.append((None, now))
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
            elif "# TODO" in name:
                # An expected failure (or an unexpected pass): neither.
                todo += 1
                print(f"TODO {leg}: {test}: {name}" if test != "?" else f"TODO {leg}: {name}")
            elif m.group(1) == "ok":
                counts[0] += 1
            else:
                counts[1] += 1
                test_failed = True
                failures.append(f"{leg}: {test}: {name}" if test != "?" else f"{leg}: {name}")
    if not done:
        problems.append(
            f"the VM did not reach the end of the run (emulator exit {qemu_rc})")

    # Seconds per leg: from its marker to the next boundary.
    leg_secs = {}
    for (name, at), (_, end) in zip(marks, marks[1:]):
        if name and at is not None and end is not None:
            leg_secs[name] = leg_secs.get(name, 0) + end - at
    boot = next((at for name, at in marks if name), None)

    if consoles:
        cdir = os.path.join(os.path.dirname(os.path.abspath(log_path)), "guests")
        os.makedirs(cdir, exist_ok=True)
        for gname, clines in consoles.items():
            with open(os.path.join(cdir, gname + ".log"), "w") as out:
                out.write("\n".join(clines) + "\n")
        print(f"guest consoles: {cdir}/NAME.log")
    for f in failures:
        print(f"FAIL {f}")
    for p in problems[:40]:
        print(f"PROBLEM {p}")
    print(f"{'leg':<8} {'passed':>7} {'failed':>7} {'skipped':>8} {'seconds':>8}")
    for leg in order:
        p, f, s = legs[leg]
        t = f"{leg_secs[leg]:.0f}" if leg in leg_secs else "-"
        print(f"{leg:<8} {p:>7} {f:>7} {s:>8} {t:>8}")
    boot_note = f", first leg after {boot:.0f} s" if boot is not None else ""
    print(f"{args.machine}: {secs} s{boot_note}, log: {log_path}")
    passed = sum(c[0] for c in legs.values())
    failed = sum(c[1] for c in legs.values()) + len(problems)
    skipped = sum(c[2] for c in legs.values())
    with open(args.summary or log_path + ".summary", "w") as out:
        out.write(f"{passed} {failed} {skipped} {secs}\n")
    if todo:
        print(f"{todo} todo (expected failures, counted neither passed nor failed)")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed or passed == 0 else 0)


if __name__ == "__main__":
    main()
