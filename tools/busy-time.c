// SPDX-License-Identifier: GPL-2.0
/*
 * busy-time NAME CMD [ARG...]: runs CMD to its end with the benchmarks'
 * idle spinner (tests/bench/idle_spinner.h) and prints
 *
 *   bench NAME BUSY_NS n=1 reps=1 idle=IDLE_NS
 *
 * as exits_bench does, so that scripts/bench-summary.py puts it in the
 * table: under `make bench`'s -icount BUSY_NS is the instructions the test
 * VM's CPU executed while CMD ran (CMD, the kernel, any guest), IDLE_NS
 * the time it would have idled. CMD's output passes through. If CMD fails,
 * "bench-error NAME: ..." instead, and busy-time exits 1.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const char *name = "?";

static void die(const char *fmt, ...)
{
	va_list ap;

	printf("bench-error %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	exit(1);
}

#include "../tests/bench/idle_spinner.h"

int main(int argc, char **argv)
{
	uint64_t t, idle;
	int status;
	pid_t pid;

	if (argc < 3) {
		fprintf(stderr, "usage: busy-time NAME CMD [ARG...]\n");
		return 2;
	}
	name = argv[1];
	spinner_start();
	fflush(stdout);
	idle = idle_ns();
	t = now_ns();
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		execvp(argv[2], argv + 2);
		fprintf(stderr, "busy-time: %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid: %s", strerror(errno));
	t = now_ns() - t;
	idle = idle_ns() - idle;
	spinner_stop();
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die("%s exited with status %#x", argv[2], status);
	printf("bench %s %llu n=1 reps=1 idle=%llu\n", name,
	       (unsigned long long)(idle < t ? t - idle : 0),
	       (unsigned long long)idle);
	return 0;
}
