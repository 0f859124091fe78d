/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The idle spinner of the benchmarks (exits_bench, tools/busy-time): under
 * `-icount shift=0,sleep=off` one nanosecond of CLOCK_MONOTONIC is one
 * instruction of the test VM's CPU, except while it idles, when QEMU moves
 * the clock on to the next timer without executing anything. A SCHED_IDLE
 * process that counts its loops takes the CPU whenever nothing else wants
 * it, so the time it ran is an interval's idle time, and elapsed minus idle
 * is the instructions executed.
 *
 * The includer defines die(fmt, ...), which must not return.
 */
#ifndef RKVM_BENCH_IDLE_SPINNER_H
#define RKVM_BENCH_IDLE_SPINNER_H

#include <errno.h>
#include <signal.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/*
 * The spinner counts loop iterations of two instructions in shared memory;
 * while it runs the CPU never halts (no instruction-free warps to skip).
 */
static volatile uint64_t *spin_count;
static double spin_ns_per_iter;
static pid_t spinner;

static void spinner_start(void)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	uint64_t c, t;

	spin_count = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (spin_count == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	spinner = fork();
	if (spinner < 0)
		die("fork: %s", strerror(errno));
	if (spinner == 0) {
		struct sched_param sp = { 0 };

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (sched_setscheduler(0, SCHED_IDLE, &sp))
			_exit(1);
		for (;;)
			asm volatile("1: addq $1, (%0)\n\tjmp 1b"
				     : : "r"(spin_count) : "memory");
	}
	/* Calibrate: the parent sleeps, the spinner has the CPU. */
	nanosleep(&ts, NULL);
	c = *spin_count;
	t = now_ns();
	nanosleep(&ts, NULL);
	c = *spin_count - c;
	t = now_ns() - t;
	if (!c)
		die("the idle spinner does not run");
	spin_ns_per_iter = (double)t / c;
}

static void spinner_stop(void)
{
	kill(spinner, SIGKILL);
	waitpid(spinner, NULL, 0);
}

/* Nanoseconds of idle time so far. */
static uint64_t idle_ns(void)
{
	return *spin_count * spin_ns_per_iter;
}

#endif
