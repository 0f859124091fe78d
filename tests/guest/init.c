// SPDX-License-Identifier: GPL-2.0
/*
 * /init of the guest (scripts/build-guest): the Linux guest that QEMU boots
 * on /dev/kvm and /dev/rkvm in the guests leg. Static, no libraries beyond
 * libc, so the initramfs is this one file. It proves the guest works:
 *
 *   guest: cpus N                     CPUs online (the host compares with -smp)
 *   guest: timer ok ...               CLOCK_MONOTONIC and CLOCK_REALTIME advance
 *                                     across a 200 ms sleep, by about that much
 *   guest: sse ok                     double arithmetic in SSE2 registers
 *   guest: avx ok | avx absent        256-bit AVX arithmetic when CPUID and
 *                                     XCR0 offer it
 *   guest: memory ok N MiB            a pattern written and read back
 *   RKVM-GUEST-USERSPACE-OK           the marker: every check passed
 *
 * then powers off (ACPI). A failed check prints "guest: FAIL ..." instead of
 * the marker and powers off too, so the host sees the failure at once. With
 * rkvm_guest.avx=1 on the command line a missing AVX is a failure.
 */
#include <cpuid.h>
#include <errno.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>

#define MARKER "RKVM-GUEST-USERSPACE-OK"
#define MEM_MIB 64

static int failed;

static void fail(const char *what)
{
	printf("guest: FAIL %s\n", what);
	failed = 1;
}

static double secs(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Both clocks move forward by at least the sleep and not absurdly more. */
static void check_timer(void)
{
	double m0 = secs(CLOCK_MONOTONIC), r0 = secs(CLOCK_REALTIME), dm, dr;
	struct timespec ts = { 0, 200 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	dm = secs(CLOCK_MONOTONIC) - m0;
	dr = secs(CLOCK_REALTIME) - r0;
	printf("guest: timer %s monotonic +%.3f s realtime +%.3f s (slept 0.200 s)\n",
	       dm >= 0.2 && dm < 20 && dr > 0.1 ? "ok" : "BAD", dm, dr);
	if (!(dm >= 0.2 && dm < 20 && dr > 0.1))
		fail("timer does not advance as slept");
}

/*
 * volatile inputs so the compiler cannot fold the sums at build time: the
 * arithmetic runs in the guest's SSE (and AVX) registers.
 */
static volatile double in[8] = { 1.5, 2.25, -3.0, 4.125, 0.5, 1e10, -7.75, 3.0 };

static void check_sse(void)
{
	__m128d a = _mm_set_pd(in[0], in[1]), b = _mm_set_pd(in[2], in[3]);
	double out[2];

	_mm_storeu_pd(out, _mm_add_pd(_mm_mul_pd(a, b), a));
	/* out[0] = in[1]*in[3] + in[1], out[1] = in[0]*in[2] + in[0] */
	if (out[0] != 2.25 * 4.125 + 2.25 || out[1] != 1.5 * -3.0 + 1.5)
		fail("sse arithmetic");
	else
		printf("guest: sse ok\n");
}

static int avx_offered(void)
{
	unsigned int a, b, c, d;
	uint32_t lo, hi;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
		return 0;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6; /* XCR0: SSE and AVX state enabled by the kernel */
}

__attribute__((target("avx"))) static int avx_sum(void)
{
	__m256d a = _mm256_set_pd(in[0], in[1], in[2], in[3]);
	__m256d b = _mm256_set_pd(in[4], in[5], in[6], in[7]);
	double out[4];

	_mm256_storeu_pd(out, _mm256_add_pd(_mm256_mul_pd(a, b), b));
	return out[0] == 4.125 * 3.0 + 3.0 && out[1] == -3.0 * -7.75 + -7.75 &&
	       out[2] == 2.25 * 1e10 + 1e10 && out[3] == 1.5 * 0.5 + 0.5;
}

static void check_avx(int required)
{
	if (!avx_offered()) {
		printf("guest: avx absent\n");
		if (required)
			fail("avx required (rkvm_guest.avx=1) but not offered");
		return;
	}
	if (avx_sum())
		printf("guest: avx ok\n");
	else
		fail("avx arithmetic");
}

static void check_memory(void)
{
	size_t n = (size_t)MEM_MIB << 20, i;
	uint64_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fail("mmap");
		return;
	}
	for (i = 0; i < n / 8; i++)
		p[i] = i * 0x9e3779b97f4a7c15ull ^ (uintptr_t)&p[i];
	for (i = 0; i < n / 8; i++)
		if (p[i] != (i * 0x9e3779b97f4a7c15ull ^ (uintptr_t)&p[i]))
			break;
	if (i != n / 8)
		fail("memory read back differs");
	else
		printf("guest: memory ok %d MiB\n", MEM_MIB);
	munmap(p, n);
}

int main(void)
{
	char cmdline[4096] = "";
	FILE *f;

	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	f = fopen("/proc/cmdline", "r");
	if (f) {
		if (!fgets(cmdline, sizeof(cmdline), f))
			cmdline[0] = 0;
		fclose(f);
	}
	printf("guest: userspace up, cpus %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
	check_timer();
	check_sse();
	check_avx(strstr(cmdline, "rkvm_guest.avx=1") != NULL);
	check_memory();
	if (!failed)
		printf(MARKER "\n");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	printf("guest: FAIL poweroff: %s\n", strerror(errno));
	return 1;
}
