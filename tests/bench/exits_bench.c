// SPDX-License-Identifier: GPL-2.0
/*
 * Exit microbenchmarks for a KVM device ($KVM_DEV, default /dev/rkvm).
 *
 * Meant for the test VM booted with QEMU's `-icount shift=0,sleep=off`
 * (`make bench`): there one nanosecond of CLOCK_MONOTONIC is one instruction
 * executed by the (single) CPU of the test VM, so every figure below is
 * instructions per operation: the guest's, the kernel's and this program's.
 * Except while the CPU idles: then QEMU moves the clock on to the next timer
 * without executing anything (KVM's VM destroy waits for RCU grace periods
 * like that). So an idle spinner (SCHED_IDLE, counting its loops) takes the
 * CPU whenever nothing else wants it, and the time it ran is subtracted from
 * each measured interval; it is printed too, as idle=NS per operation.
 * Outside such a VM the figures are nanoseconds of CPU time.
 *
 *   io_exit           OUT in a real-mode guest, exit to userspace, KVM_RUN
 *                     again: one round trip through userspace
 *   cpuid_exit        CPUID in a real-mode guest, handled in the kernel
 *   mmio_exit         MOV to an address outside every slot in a real-mode
 *                     guest: decode, KVM_EXIT_MMIO to userspace, KVM_RUN
 *   fault_4k          a 32-bit guest writes to a page of its slot for the
 *                     first time: nested page fault, host page allocated and
 *                     mapped (the slot is MADV_NOHUGEPAGE: 4 KiB each)
 *   vm_create_destroy KVM_CREATE_VM, KVM_CREATE_VCPU, close both
 *
 * Each benchmark warms up, then times several repetitions of N operations
 * and reports the fastest:
 *   bench NAME INSNS_PER_OP n=N reps=R idle=IDLE_NS_PER_OP
 * Arguments, if any, name the benchmarks to run. Each runs in a child
 * process; a failure prints "bench-error NAME: why", the others still run
 * and the exit status is 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

#define CODE_GPA	0x8000UL
#define GDT_GPA		0x1000UL
#define RM_STACK_TOP	0x7000UL
#define STACK_TOP	0x80000UL
#define BENCH_PORT	0x10
#define REPS		3

/* GUEST_CODE(name, bits, "insns"): name[]..name_end[], as in vm_lib.h. */
#define GUEST_CODE(name, bits, text)					\
	extern const uint8_t name[], name##_end[];			\
	asm(".pushsection .rodata.guest." #name ", \"a\"\n"		\
	    ".intel_syntax noprefix\n"					\
	    ".code" #bits "\n"						\
	    ".globl " #name "\n"					\
	    ".globl " #name "_end\n"					\
	    #name ":\n"							\
	    text "\n"							\
	    #name "_end:\n"						\
	    ".code64\n"							\
	    ".att_syntax prefix\n"					\
	    ".popsection\n")

/* One OUT per iteration. */
GUEST_CODE(guest_io, 16,
	"1: out 0x10, al\n"
	"   jmp 1b\n");

/* ESI CPUIDs (leaf 0), then one OUT; again. */
GUEST_CODE(guest_cpuid, 16,
	"2: mov edi, esi\n"
	"1: xor eax, eax\n"
	"   cpuid\n"
	"   dec edi\n"
	"   jnz 1b\n"
	"   out 0x10, al\n"
	"   jmp 2b\n");

/* One byte written to GPA 0xa0000 (no slot there) per iteration. */
GUEST_CODE(guest_mmio, 16,
	"   mov ax, 0xa000\n"
	"   mov ds, ax\n"
	"   xor bx, bx\n"
	"1: mov byte ptr [bx], al\n"
	"   jmp 1b\n");

/* Writes one byte to each of ESI pages from EDI on, then one OUT; again. */
GUEST_CODE(guest_fault, 32,
	"2: mov ecx, esi\n"
	"1: mov byte ptr [edi], 1\n"
	"   add edi, 4096\n"
	"   dec ecx\n"
	"   jnz 1b\n"
	"   out 0x10, al\n"
	"   jmp 2b\n");

static const char *dev_path;
static const char *cur;		/* the benchmark running, for errors */
static int sys_fd;
static int run_size;

struct bvm {
	int fd;
	uint8_t *mem;
	size_t mem_size;
	int vcpu;
	struct kvm_run *run;
};

static void die(const char *fmt, ...)
{
	va_list ap;

	printf("bench-error %s: ", cur);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	exit(1);
}

#include "idle_spinner.h"

/* A measured interval: elapsed time and, of it, the time the CPUs idled. */
struct interval {
	uint64_t t, idle;
};

static struct interval start(void)
{
	struct interval i = { .idle = idle_ns() };

	i.t = now_ns();
	return i;
}

/* Busy time since @i; keeps the fastest of the repetitions in @best. */
static void stop(struct interval i, struct interval *best)
{
	uint64_t t = now_ns() - i.t;
	uint64_t idle = idle_ns() - i.idle;
	uint64_t busy = idle < t ? t - idle : 0;

	if (!best->t || busy < best->t) {
		best->t = busy;
		best->idle = idle;
	}
}

static void report(const char *name, struct interval best, unsigned long n,
		   int reps)
{
	printf("bench %s %llu n=%lu reps=%d idle=%llu\n", name,
	       (unsigned long long)((best.t + n / 2) / n), n, reps,
	       (unsigned long long)((best.idle + n / 2) / n));
	fflush(stdout);
}

/* A VM with @mem_size bytes of anonymous memory at GPA 0 and vCPU 0. */
static void bvm_create(struct bvm *vm, size_t mem_size)
{
	struct kvm_userspace_memory_region r = { 0 };

	memset(vm, 0, sizeof(*vm));
	vm->fd = ioctl(sys_fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	vm->mem_size = mem_size;
	vm->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vm->mem == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	/* One fault per 4 KiB page, for KVM too (THP is "always" here). */
	madvise(vm->mem, mem_size, MADV_NOHUGEPAGE);
	r.slot = 0;
	r.guest_phys_addr = 0;
	r.memory_size = mem_size;
	r.userspace_addr = (uintptr_t)vm->mem;
	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r))
		die("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
	vm->vcpu = ioctl(vm->fd, KVM_CREATE_VCPU, 0);
	if (vm->vcpu < 0)
		die("KVM_CREATE_VCPU: %s", strerror(errno));
	vm->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       vm->vcpu, 0);
	if (vm->run == MAP_FAILED)
		die("mmap kvm_run: %s", strerror(errno));
}

static void bvm_destroy(struct bvm *vm)
{
	munmap(vm->run, run_size);
	close(vm->vcpu);
	close(vm->fd);
	munmap(vm->mem, vm->mem_size);
}

static void bvm_load(struct bvm *vm, const uint8_t *start, const uint8_t *end)
{
	memcpy(vm->mem + CODE_GPA, start, end - start);
}

static void set_regs(struct bvm *vm, uint64_t rsp, uint64_t rsi, uint64_t rdi)
{
	struct kvm_regs regs;

	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rsp = rsp;
	regs.rsi = rsi;
	regs.rdi = rdi;
	regs.rflags = 0x2;
	if (ioctl(vm->vcpu, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS: %s", strerror(errno));
}

/* Real mode, CS = 0, IP = CODE_GPA. */
static void setup_real(struct bvm *vm, uint64_t rsi)
{
	struct kvm_sregs sregs;

	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS: %s", strerror(errno));
	sregs.cs.selector = 0;
	sregs.cs.base = 0;
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS: %s", strerror(errno));
	set_regs(vm, RM_STACK_TOP, rsi, 0);
}

static struct kvm_segment flat32(uint16_t sel, int code)
{
	struct kvm_segment s = {
		.base = 0, .limit = 0xffffffff, .selector = sel,
		.type = code ? 0xb : 0x3, .present = 1, .dpl = 0,
		.db = 1, .s = 1, .l = 0, .g = 1,
	};

	return s;
}

/* 32-bit protected mode, flat segments, no paging. */
static void setup_protected(struct bvm *vm, uint64_t rsi, uint64_t rdi)
{
	uint64_t *gdt = (uint64_t *)(vm->mem + GDT_GPA);
	struct kvm_sregs sregs;

	gdt[0] = 0;
	gdt[1] = 0x00cf9b000000ffffULL;	/* code32 */
	gdt[2] = 0x00cf93000000ffffULL;	/* data */
	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS: %s", strerror(errno));
	sregs.cs = flat32(0x08, 1);
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat32(0x10, 0);
	sregs.gdt.base = GDT_GPA;
	sregs.gdt.limit = 3 * 8 - 1;
	sregs.cr0 = 0x11;	/* PE, ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS: %s", strerror(errno));
	set_regs(vm, STACK_TOP, rsi, rdi);
}

static void run(struct bvm *vm)
{
	if (ioctl(vm->vcpu, KVM_RUN, 0))
		die("KVM_RUN: %s", strerror(errno));
}

static void run_to_out(struct bvm *vm)
{
	run(vm);
	if (vm->run->exit_reason != KVM_EXIT_IO ||
	    vm->run->io.direction != KVM_EXIT_IO_OUT ||
	    vm->run->io.port != BENCH_PORT)
		die("exit %u (port 0x%x), expected OUT to 0x%x",
		    vm->run->exit_reason, vm->run->io.port, BENCH_PORT);
}

static void bench_io(unsigned long n)
{
	struct interval best = { 0 };
	struct bvm vm;

	bvm_create(&vm, 0x80000);
	bvm_load(&vm, guest_io, guest_io_end);
	setup_real(&vm, 0);
	for (unsigned long i = 0; i < n / 4 + 16; i++)
		run_to_out(&vm);
	for (int r = 0; r < REPS; r++) {
		struct interval t = start();

		for (unsigned long i = 0; i < n; i++)
			run_to_out(&vm);
		stop(t, &best);
	}
	bvm_destroy(&vm);
	report("io_exit", best, n, REPS);
}

static void bench_cpuid(unsigned long n)
{
	struct interval best = { 0 };
	struct bvm vm;

	bvm_create(&vm, 0x80000);
	bvm_load(&vm, guest_cpuid, guest_cpuid_end);
	setup_real(&vm, n);
	run_to_out(&vm);	/* warm-up: n CPUIDs */
	for (int r = 0; r < REPS; r++) {
		struct interval t = start();

		run_to_out(&vm);
		stop(t, &best);
	}
	bvm_destroy(&vm);
	report("cpuid_exit", best, n, REPS);
}

static void run_to_mmio(struct bvm *vm)
{
	run(vm);
	if (vm->run->exit_reason != KVM_EXIT_MMIO ||
	    vm->run->mmio.phys_addr != 0xa0000 || !vm->run->mmio.is_write ||
	    vm->run->mmio.len != 1)
		die("exit %u (gpa 0x%llx), expected an MMIO write to 0xa0000",
		    vm->run->exit_reason,
		    (unsigned long long)vm->run->mmio.phys_addr);
}

static void bench_mmio(unsigned long n)
{
	struct interval best = { 0 };
	struct bvm vm;

	/* Slot 0 ends at 0x80000: 0xa0000 is MMIO. */
	bvm_create(&vm, 0x80000);
	bvm_load(&vm, guest_mmio, guest_mmio_end);
	setup_real(&vm, 0);
	for (unsigned long i = 0; i < n / 4 + 16; i++)
		run_to_mmio(&vm);
	for (int r = 0; r < REPS; r++) {
		struct interval t = start();

		for (unsigned long i = 0; i < n; i++)
			run_to_mmio(&vm);
		stop(t, &best);
	}
	bvm_destroy(&vm);
	report("mmio_exit", best, n, REPS);
}

static void bench_fault(unsigned long n)
{
	const uint64_t first = 0x100000;	/* pages touched from 1 MiB on */
	struct interval best = { 0 };
	size_t size = first + (REPS + 1) * n * 4096;
	struct bvm vm;

	size = (size + 0x1fffff) & ~0x1fffffUL;
	bvm_create(&vm, size);
	bvm_load(&vm, guest_fault, guest_fault_end);
	setup_protected(&vm, n, first);
	run_to_out(&vm);	/* warm-up: n fresh pages */
	for (int r = 0; r < REPS; r++) {
		struct interval t = start();

		run_to_out(&vm);
		stop(t, &best);
	}
	/* The guest really wrote every page, through the host's mapping. */
	for (uint64_t gpa = first; gpa < first + (REPS + 1) * n * 4096;
	     gpa += 4096)
		if (vm.mem[gpa] != 1)
			die("guest write to 0x%llx not seen",
			    (unsigned long long)gpa);
	bvm_destroy(&vm);
	report("fault_4k", best, n, REPS);
}

static void create_destroy(void)
{
	int vm = ioctl(sys_fd, KVM_CREATE_VM, 0);
	int vcpu;

	if (vm < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU: %s", strerror(errno));
	close(vcpu);
	close(vm);
}

static void bench_create(unsigned long n)
{
	struct interval best = { 0 };

	for (unsigned long i = 0; i < n / 4 + 2; i++)
		create_destroy();
	for (int r = 0; r < REPS; r++) {
		struct interval t = start();

		for (unsigned long i = 0; i < n; i++)
			create_destroy();
		stop(t, &best);
	}
	report("vm_create_destroy", best, n, REPS);
}

static const struct {
	const char *name;
	void (*fn)(unsigned long n);
	unsigned long n;
} benches[] = {
	{ "io_exit", bench_io, 4000 },
	{ "cpuid_exit", bench_cpuid, 10000 },
	{ "mmio_exit", bench_mmio, 4000 },
	{ "fault_4k", bench_fault, 1500 },
	{ "vm_create_destroy", bench_create, 10 },
};

static int wanted(const char *name, int argc, char **argv)
{
	if (argc < 2)
		return 1;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	/* BENCH_SCALE=k multiplies every N (default 1; for calibration). */
	const char *s = getenv("BENCH_SCALE");
	double scale = s && *s ? atof(s) : 1.0;
	int failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	cur = "setup";
	spinner_start();
	printf("bench-info idle spinner: %.3f ns per loop of 2 instructions\n",
	       spin_ns_per_iter);
	dev_path = getenv("KVM_DEV");
	if (!dev_path || !*dev_path)
		dev_path = "/dev/rkvm";
	sys_fd = open(dev_path, O_RDWR | O_CLOEXEC);
	if (sys_fd < 0)
		die("open %s: %s", dev_path, strerror(errno));
	run_size = ioctl(sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < (int)sizeof(struct kvm_run))
		die("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
	for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++) {
		unsigned long n = benches[i].n * scale;
		int status;
		pid_t pid;

		if (!wanted(benches[i].name, argc, argv))
			continue;
		cur = benches[i].name;
		pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			benches[i].fn(n ? n : 1);
			exit(0);
		}
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status)) {
			if (!WIFEXITED(status))
				printf("bench-error %s: killed by signal %d\n",
				       cur, WTERMSIG(status));
			failed = 1;
		}
	}
	close(sys_fd);
	spinner_stop();
	return failed;
}
