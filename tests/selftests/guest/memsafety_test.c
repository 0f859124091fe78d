// SPDX-License-Identifier: GPL-2.0
/*
 * Host safety of guest memory: what a hypervisor must guarantee the host
 * whatever the VMM does to the memory behind its slots.
 *
 * Linux KVM follows the VMM's page tables with MMU notifiers and holds no
 * page longer than a fault. A hypervisor may instead pin (FOLL_LONGTERM) the
 * VMM's pages when the guest first touches them and unpin them when the slot
 * is deleted or moved or the VM dies. These tests accept both where the two
 * legitimately differ (and say so at each test) and are strict where they
 * must agree:
 *
 *  - a slot deleted under a running vCPU is gone at once, even with more
 *    than a GiB of it mapped at 4 KiB: the guest's next read exits as MMIO;
 *  - every pin is released when the VM goes, by close or by process exit
 *    (/proc/vmstat nr_foll_pin_acquired == nr_foll_pin_released again);
 *  - munmap, mremap and MADV_DONTNEED of guest RAM give the guest either
 *    the VMM's current view (KVM) or the old page (a pin), never anything
 *    else; after a partial MADV_DONTNEED of a transparent huge page, the
 *    guest never sees subpages the VMM no longer maps;
 *  - slots beyond the guest-physical limit are refused (EINVAL);
 *  - pinned pages are accounted (VmPin) and bounded by RLIMIT_MEMLOCK
 *    without CAP_IPC_LOCK;
 *  - the VM's kernel memory (its nested page tables) is charged to the
 *    VMM's memory cgroup.
 *
 * All guests run in 64-bit mode (vcpu_setup_long: the first 4 GiB are
 * identity-mapped), with their slot under test at SLOT_GPA.
 */
#include <cpuid.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/capability.h>

#include "vm_lib.h"

#define PAGE		4096UL
#define HUGE		(2UL << 20)
#define SLOT_GPA	0x40000000UL
#define SLOT		1

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* --- /proc and /sys readers --- */

/*
 * The value of "@key value" in the file at @path (/proc/vmstat, a cgroup's
 * memory.stat), or -1 if the file or the key is missing.
 */
static long long read_keyed(const char *path, const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long long v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, n) && line[n] == ' ') {
			v = strtoll(line + n + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

/*
 * Pins taken and not yet released, system-wide; -1 without the counters.
 * The node counters keep per-CPU differences (folded about once a second);
 * writing /proc/sys/vm/stat_refresh (root) folds them first, so the count
 * is exact.
 */
static long long pins_outstanding(void)
{
	long long acq, rel;
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY);

	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			;	/* approximate then */
		close(fd);
	}
	acq = read_keyed("/proc/vmstat", "nr_foll_pin_acquired");
	rel = read_keyed("/proc/vmstat", "nr_foll_pin_released");
	if (acq < 0 || rel < 0)
		return -1;
	return acq - rel;
}

#define SKIP_WITHOUT_PIN_COUNTERS() do {				\
	if (pins_outstanding() < 0)					\
		SKIP(return, "no nr_foll_pin_acquired/released in /proc/vmstat"); \
} while (0)

/*
 * Waits up to 5 s for the outstanding pins to come back to @before (a VM's
 * teardown may finish in a worker after its last fd is closed) and returns
 * the last difference.
 */
static long long pins_settle(long long before)
{
	long long d = 0;

	for (int i = 0; i < 100; i++) {
		d = pins_outstanding() - before;
		if (!d)
			break;
		usleep(50000);
	}
	return d;
}

/* VmPin of this process in kB (/proc/self/status), -1 if missing. */
static long long vmpin_kb(void)
{
	char line[256];
	long long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmPin:", 6)) {
			v = strtoll(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Whether some line of the file at @path contains @word. */
static int file_has(const char *path, const char *word)
{
	char buf[512];
	int r = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	while (!r && fgets(buf, sizeof(buf), f))
		r = !!strstr(buf, word);
	fclose(f);
	return r;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* AnonHugePages (kB) of the mapping that starts at @addr (/proc/self/smaps). */
static long long anon_huge_kb(void *addr)
{
	unsigned long start, end;
	char line[256];
	long long v = -1;
	int in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		/* A mapping's first line: "start-end perms ..." */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			in = start == (unsigned long)addr;
		else if (in && !strncmp(line, "AnonHugePages:", 14)) {
			v = strtoll(line + 14, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

/* --- guests --- */

/*
 * Writes its own address into each of RDX pages from RBX, reports the
 * count with OUT 0x10 and halts.
 */
GUEST_CODE(touch_pages, 64,
	"mov rsi, rbx\n"
	"mov rcx, rdx\n"
	"1: mov dword ptr [rsi], esi\n"
	"add rsi, 4096\n"
	"dec rcx\n"
	"jnz 1b\n"
	"mov eax, edx\n"
	"out 0x10, eax\n"
	"hlt\n");

/* Anonymous memory the host maps with 4 KiB pages only. */
static uint8_t *alloc_4k_mem(struct __test_metadata *_metadata, uint64_t size)
{
	uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	ASSERT_NE(MAP_FAILED, p) TH_LOG("mmap %lu: %s", (unsigned long)size,
					strerror(errno));
	ASSERT_EQ(0, madvise(p, size, MADV_NOHUGEPAGE))
		TH_LOG("MADV_NOHUGEPAGE: %s", strerror(errno));
	return p;
}

/* A long-mode VM whose slot 1 (@size bytes at SLOT_GPA) is @mem. */
struct tvm {
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	uint64_t size;
};

static void tvm_create(struct __test_metadata *_metadata, struct tvm *t,
		       uint8_t *mem, uint64_t size)
{
	vm_create(_metadata, &t->vm);
	/* Slot 0 at 4 KiB too, so that every pin count is per 4 KiB page. */
	ASSERT_EQ(0, madvise(t->vm.mem, t->vm.mem_size, MADV_NOHUGEPAGE));
	vcpu_create(_metadata, &t->vm, 0, &t->v);
	vcpu_setup_long(_metadata, &t->vm, &t->v);
	t->mem = mem;
	t->size = size;
	ASSERT_EQ(0, vm_set_region(&t->vm, SLOT, 0, SLOT_GPA, size, mem))
		TH_LOG("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
}

static void tvm_destroy(struct tvm *t)
{
	vcpu_destroy(&t->vm, &t->v);
	vm_destroy(&t->vm);
}

/* Loads touch_pages to write each page of slot 1 once. */
static void tvm_load_touch(struct __test_metadata *_metadata, struct tvm *t)
{
	struct kvm_regs regs;

	vm_load_code(&t->vm, touch_pages);
	vcpu_get_regs(_metadata, &t->v, &regs);
	regs.rbx = SLOT_GPA;
	regs.rdx = t->size / PAGE;
	vcpu_set_regs(_metadata, &t->v, &regs);
}

/* Runs touch_pages to its end and checks what it wrote. */
static void tvm_touch(struct __test_metadata *_metadata, struct tvm *t)
{
	tvm_load_touch(_metadata, t);
	ASSERT_EQ(t->size / PAGE, run_to_out(&t->v, 4, 0x10));
	ASSERT_EXIT(&t->v, KVM_EXIT_HLT);
	for (uint64_t off = 0; off < t->size; off += PAGE * 61)
		ASSERT_EQ(SLOT_GPA + off, *(uint32_t *)(t->mem + off));
}

/* Creates a VM whose guest touches @size bytes of 4 KiB pages, left open. */
static void tvm_create_touched(struct __test_metadata *_metadata,
			       struct tvm *t, uint64_t size)
{
	tvm_create(_metadata, t, alloc_4k_mem(_metadata, size), size);
	tvm_touch(_metadata, t);
}

static void tvm_destroy_all(struct tvm *t)
{
	uint8_t *mem = t->mem;
	uint64_t size = t->size;

	tvm_destroy(t);
	munmap(mem, size);
}

/*
 * Pins held for a VM whose guest touched @n pages of its slot: none (KVM),
 * or one per touched page plus the few slot 0 pages the guest used (code,
 * GDT, page tables, stack) for a hypervisor that pins what it maps.
 */
#define SLOT0_SLACK 64
#define EXPECT_PINS_NONE_OR_TOUCHED(held, n) do {			\
	long long __h = (held);						\
	EXPECT_TRUE(__h == 0 || (__h >= (long long)(n) &&		\
				 __h <= (long long)(n) + SLOT0_SLACK))	\
		TH_LOG("%lld pins held for %lu touched pages", __h,	\
		       (unsigned long)(n));				\
} while (0)

/*
 * The Bochs leg (RKVM_TEST_SPIN_IF=1) runs guests that spin for a long time
 * without exits with IF=1: Bochs 2.7 takes no external-interrupt VM exit
 * while a guest that entered with IF=0 runs, and the host would never get
 * its only CPU back (lifecycle_test.c). Nothing is injected.
 */
static void spin_if(struct __test_metadata *_metadata, struct vcpu *vcpu)
{
	const char *e = getenv("RKVM_TEST_SPIN_IF");
	struct kvm_regs regs;

	if (!e || strcmp(e, "1"))
		return;
	vcpu_get_regs(_metadata, vcpu, &regs);
	regs.rflags |= 1UL << 9;
	vcpu_set_regs(_metadata, vcpu, &regs);
}

FIXTURE(mem) {
	int unused;
};

FIXTURE_SETUP(mem)
{
}

FIXTURE_TEARDOWN(mem)
{
}

/* ---------------------------------------------------------------------- */
/* 1. Deleting a big slot under a running vCPU                            */
/* ---------------------------------------------------------------------- */

#define BIG_GPA		0x40000000UL		/* 1 GiB, inside the identity map */
#define BIG_SIZE	((1UL << 30) + (64UL << 20))	/* to 2.0625 GiB */
#define PASSES_GPA	DATA_GPA		/* slot 0: completed read passes */

/*
 * RBX = base, RDX = pages. Writes every page (OUT 0x11 with the count every
 * 64 MiB), says OUT 0x12 when all are written, then reads one byte of each
 * page, over and over, counting the passes at PASSES_GPA.
 */
GUEST_CODE(big_touch_then_read, 64,
	"mov rsi, rbx\n"
	"mov rcx, rdx\n"
	"1: mov dword ptr [rsi], esi\n"
	"add rsi, 4096\n"
	"dec rcx\n"
	"test ecx, 0x3fff\n"
	"jnz 2f\n"
	"mov eax, edx\n"
	"sub eax, ecx\n"
	"out 0x11, eax\n"
	"2: test rcx, rcx\n"
	"jnz 1b\n"
	"mov eax, edx\n"
	"out 0x12, eax\n"
	"3: mov rsi, rbx\n"
	"mov rcx, rdx\n"
	"4: mov al, byte ptr [rsi]\n"
	"add rsi, 4096\n"
	"dec rcx\n"
	"jnz 4b\n"
	"inc qword ptr [0x20000]\n"
	"jmp 3b\n");

struct big_runner {
	struct vcpu *vcpu;
	volatile int touched, done;
	volatile uint32_t progress;
	uint64_t touched_ns;
	int ret, err;
};

/* Runs the vCPU through the progress OUTs until any other exit or error. */
static void *big_run(void *p)
{
	struct big_runner *r = p;
	struct kvm_run *run = r->vcpu->run;

	for (;;) {
		r->ret = ioctl(r->vcpu->fd, KVM_RUN, 0);
		r->err = errno;
		if (r->ret || run->exit_reason != KVM_EXIT_IO ||
		    run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 4)
			break;
		if (run->io.port == 0x11) {
			r->progress = *(uint32_t *)((uint8_t *)run + run->io.data_offset);
		} else if (run->io.port == 0x12) {
			r->touched_ns = now_ns();
			r->touched = 1;
		} else {
			break;
		}
	}
	r->done = 1;
	return NULL;
}

static void on_sigusr1(int sig)
{
	(void)sig;
}

/* Waits up to @secs for *@flag or *@stop; returns *@flag. */
static int wait_flag(volatile int *flag, volatile int *stop, int secs)
{
	uint64_t end = now_ns() + secs * 1000000000ULL;

	while (!*flag && !*stop && now_ns() < end)
		usleep(10000);
	return *flag;
}

/*
 * More than 1 GiB mapped at 4 KiB (over 270000 second-level entries, or
 * pins) is deleted while the guest keeps reading it: the deletion must take
 * the whole range away from the running vCPU at once (KVM: zap and kick; a
 * pinning hypervisor: unmap, flush the vCPU's TLB, then unpin), so the next
 * read of the range is a KVM_EXIT_MMIO read, never a read of freed pages.
 * Afterwards every pin is released. RKVM_TEST_SCALE shrinks the slot.
 */
TEST_F_TIMEOUT(mem, deleting_big_slot_under_spinning_guest_makes_reads_mmio, 1200)
{
	struct big_runner r = { 0 };
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	volatile uint64_t *passes;
	uint64_t size, start, t_del, passes_at_del;
	long long pins_before = pins_outstanding(), held;
	struct kvm_regs regs;
	pthread_t th;
	struct tvm t;
	uint8_t *mem;

	size = test_scaled(BIG_SIZE / HUGE) * HUGE;
	mem = alloc_4k_mem(_metadata, size);
	tvm_create(_metadata, &t, mem, size);
	vm_load_code(&t.vm, big_touch_then_read);
	vcpu_get_regs(_metadata, &t.v, &regs);
	regs.rbx = BIG_GPA;
	regs.rdx = size / PAGE;
	vcpu_set_regs(_metadata, &t.v, &regs);
	spin_if(_metadata, &t.v);
	passes = (volatile uint64_t *)(t.vm.mem + PASSES_GPA);
	*passes = 0;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	r.vcpu = &t.v;
	start = now_ns();
	ASSERT_EQ(0, pthread_create(&th, NULL, big_run, &r));

	/* The first touch of each page: the slow part. */
	wait_flag(&r.touched, &r.done, 1000);
	if (r.touched) {
		held = pins_outstanding() - pins_before;
		TH_LOG("guest touched %lu MiB at 4 KiB in %llu ms; %lld pins held",
		       (unsigned long)(size >> 20),
		       (unsigned long long)(r.touched_ns - start) / 1000000,
		       pins_before < 0 ? -1 : held);
		if (pins_before >= 0)
			EXPECT_PINS_NONE_OR_TOUCHED(held, size / PAGE);
		/* The spin phase: two complete read passes over the slot. */
		for (int i = 0; i < 60000 && *passes < 2 && !r.done; i++)
			usleep(1000);
	}
	passes_at_del = *passes;
	if (r.touched && !r.done && passes_at_del >= 2) {
		t_del = now_ns();
		EXPECT_EQ(0, vm_set_region(&t.vm, SLOT, 0, BIG_GPA, 0, NULL))
			TH_LOG("delete: %s", strerror(errno));
		/* The vCPU leaves the guest within seconds, not never. */
		wait_flag(&r.done, &r.done, 60);
		if (r.done)
			TH_LOG("vCPU exited %llu ms after the delete, %llu passes",
			       (unsigned long long)(now_ns() - t_del) / 1000000,
			       (unsigned long long)passes_at_del);
	}
	if (!r.done) {
		/* Stop it: immediate_exit catches a signal between runs. */
		t.v.run->immediate_exit = 1;
		pthread_kill(th, SIGUSR1);
	}
	ASSERT_EQ(0, pthread_join(th, NULL));
	ASSERT_TRUE(r.touched) TH_LOG("the guest did not touch the slot: KVM_RUN %d (%s), exit %s, progress %u",
				      r.ret, strerror(r.err),
				      exit_reason_name(t.v.run->exit_reason), r.progress);
	ASSERT_LE(2, passes_at_del) TH_LOG("the guest did not spin over the slot");
	ASSERT_EQ(0, t.v.run->immediate_exit)
		TH_LOG("the vCPU kept running the guest after the slot was deleted");
	ASSERT_EQ(0, r.ret) TH_LOG("KVM_RUN: %s", strerror(r.err));
	ASSERT_EQ(KVM_EXIT_MMIO, t.v.run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(t.v.run->exit_reason));
	EXPECT_EQ(0, t.v.run->mmio.is_write);
	EXPECT_EQ(1, t.v.run->mmio.len);
	EXPECT_LE(BIG_GPA, t.v.run->mmio.phys_addr);
	EXPECT_GT(BIG_GPA + size, t.v.run->mmio.phys_addr)
		TH_LOG("MMIO exit at %#llx", (unsigned long long)t.v.run->mmio.phys_addr);

	tvm_destroy_all(&t);
	if (pins_before >= 0)
		EXPECT_EQ(0, pins_settle(pins_before));
}

/* ---------------------------------------------------------------------- */
/* 2. Pin balance                                                         */
/* ---------------------------------------------------------------------- */

#define BALANCE_SIZE	(2UL << 20)	/* 512 pages */

/*
 * A guest touches 512 pages; while the VM lives, no pins (KVM) or one per
 * page (a pinning hypervisor) are held; once its vCPU and VM fds are closed,
 * as many pins were released as were taken.
 */
TEST_F(mem, pins_are_released_when_vm_fds_are_closed)
{
	long long before;
	struct tvm t;

	SKIP_WITHOUT_PIN_COUNTERS();
	before = pins_outstanding();
	tvm_create_touched(_metadata, &t, BALANCE_SIZE);
	EXPECT_PINS_NONE_OR_TOUCHED(pins_outstanding() - before,
				    BALANCE_SIZE / PAGE);
	tvm_destroy_all(&t);
	EXPECT_EQ(0, pins_settle(before));
}

/*
 * The same, but the VMM process exits with its VM, vCPU and memory still
 * open: the kernel's close of its fds must release every pin.
 */
TEST_F(mem, pins_are_released_when_vmm_exits_with_vm_open)
{
	long long before, held = -1;
	int status, p[2];
	pid_t pid;

	SKIP_WITHOUT_PIN_COUNTERS();
	ASSERT_EQ(0, pipe(p));
	before = pins_outstanding();
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct tvm t;

		close(p[0]);
		tvm_create_touched(_metadata, &t, BALANCE_SIZE);
		held = pins_outstanding() - before;
		ASSERT_EQ((ssize_t)sizeof(held), write(p[1], &held, sizeof(held)));
		_exit(0);	/* without closing anything */
	}
	close(p[1]);
	EXPECT_EQ((ssize_t)sizeof(held), read(p[0], &held, sizeof(held)));
	close(p[0]);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
		TH_LOG("child status %#x", status);
	EXPECT_PINS_NONE_OR_TOUCHED(held, BALANCE_SIZE / PAGE);
	EXPECT_EQ(0, pins_settle(before));
}

/* ---------------------------------------------------------------------- */
/* 3. munmap, mremap, MADV_DONTNEED of memory the guest uses              */
/* ---------------------------------------------------------------------- */

#define PATTERN 0x5eed1234U

/*
 * EDX = pattern: writes it to SLOT_GPA and reports it (OUT 0x10), then
 * reads SLOT_GPA and reports what it finds (OUT 0x11).
 */
GUEST_CODE(write_exit_read, 64,
	"mov dword ptr [0x40000000], edx\n"
	"mov eax, edx\n"
	"out 0x10, eax\n"
	"mov eax, dword ptr [0x40000000]\n"
	"out 0x11, eax\n"
	"hlt\n");

enum host_op { OP_MUNMAP, OP_MREMAP, OP_DONTNEED };

/*
 * The guest writes PATTERN into its page, the host does @op to the page,
 * the guest reads it back. @ret, @err: the KVM_RUN of the read; @seen: what
 * the guest read (when KVM_RUN succeeded). Afterwards the slot is deleted,
 * everything closed and the pins must balance.
 */
static void guest_page_after(struct __test_metadata *_metadata,
			     enum host_op op, int *ret, int *err,
			     uint32_t *seen)
{
	long long before = pins_outstanding();
	uint8_t *mem = alloc_4k_mem(_metadata, PAGE), *moved = NULL;
	struct kvm_regs regs;
	struct tvm t;

	tvm_create(_metadata, &t, mem, PAGE);
	vm_load_code(&t.vm, write_exit_read);
	vcpu_get_regs(_metadata, &t.v, &regs);
	regs.rdx = PATTERN;
	vcpu_set_regs(_metadata, &t.v, &regs);
	ASSERT_EQ(PATTERN, run_to_out(&t.v, 4, 0x10));
	ASSERT_EQ(PATTERN, *(uint32_t *)mem);

	switch (op) {
	case OP_MUNMAP:
		ASSERT_EQ(0, munmap(mem, PAGE));
		break;
	case OP_MREMAP:
		/* A fixed new place: a free page-sized hole. */
		moved = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			     -1, 0);
		ASSERT_NE(MAP_FAILED, moved);
		ASSERT_EQ(moved, mremap(mem, PAGE, PAGE,
					MREMAP_MAYMOVE | MREMAP_FIXED, moved))
			TH_LOG("mremap: %s", strerror(errno));
		/* The data moved with the page. */
		ASSERT_EQ(PATTERN, *(uint32_t *)moved);
		break;
	case OP_DONTNEED:
		ASSERT_EQ(0, madvise(mem, PAGE, MADV_DONTNEED));
		ASSERT_EQ(0, *(uint32_t *)mem);
		break;
	}

	errno = 0;
	*ret = ioctl(t.v.fd, KVM_RUN, 0);
	*err = errno;
	*seen = 0xffffffff;
	if (!*ret) {
		ASSERT_EQ(KVM_EXIT_IO, t.v.run->exit_reason)
			TH_LOG("exit %s", exit_reason_name(t.v.run->exit_reason));
		ASSERT_EQ(0x11, t.v.run->io.port);
		*seen = *(uint32_t *)io_data(&t.v);
	}
	TH_LOG("KVM_RUN %d (%s), guest read %#x", *ret,
	       *ret ? strerror(*err) : "-", *seen);

	EXPECT_EQ(0, vm_set_region(&t.vm, SLOT, 0, SLOT_GPA, 0, NULL));
	tvm_destroy(&t);
	if (op == OP_MREMAP)
		munmap(moved, PAGE);
	else if (op == OP_DONTNEED)
		munmap(mem, PAGE);
	if (before >= 0)
		EXPECT_EQ(0, pins_settle(before));
}

/*
 * After munmap, the VMM has no page there: KVM's notifier drops the mapping
 * and the guest's read is EFAULT from KVM_RUN; a pinning hypervisor may keep
 * giving the guest the old page until the slot goes (the old pattern).
 * Anything else would be a page the VMM never gave the guest.
 */
TEST_F(mem, guest_read_after_munmap_is_efault_or_old_page)
{
	int ret, err;
	uint32_t seen;

	guest_page_after(_metadata, OP_MUNMAP, &ret, &err, &seen);
	if (ret) {
		EXPECT_EQ(EFAULT, err) TH_LOG("KVM_RUN: %s", strerror(err));
	} else {
		EXPECT_EQ(PATTERN, seen);
	}
	EXPECT_TRUE(ret == 0 || ret == -1);
}

/*
 * After mremap to another address, the slot's address range is unmapped:
 * KVM gives EFAULT; a pin keeps the old page (which is also the moved
 * page, so the old pattern).
 */
TEST_F(mem, guest_read_after_mremap_away_is_efault_or_old_page)
{
	int ret, err;
	uint32_t seen;

	guest_page_after(_metadata, OP_MREMAP, &ret, &err, &seen);
	if (ret) {
		EXPECT_EQ(EFAULT, err) TH_LOG("KVM_RUN: %s", strerror(err));
	} else {
		EXPECT_EQ(PATTERN, seen);
	}
	EXPECT_TRUE(ret == 0 || ret == -1);
}

/*
 * After MADV_DONTNEED the VMM's page is a fresh zero page: KVM's guest reads
 * zero; a pin keeps the old page (old pattern). Nothing else, and no error.
 */
TEST_F(mem, guest_read_after_dontneed_is_zero_or_old_page)
{
	int ret, err;
	uint32_t seen;

	guest_page_after(_metadata, OP_DONTNEED, &ret, &err, &seen);
	EXPECT_EQ(0, ret) TH_LOG("KVM_RUN: %s", strerror(err));
	EXPECT_TRUE(seen == 0 || seen == PATTERN) TH_LOG("read %#x", seen);
}

/* --- transparent huge pages, partially given back --- */

#define THP_PAGES	512
#define SUB_A(i)	(0xa0000000U | (i))	/* the host's first pattern */
#define SUB1_B		0xbbbbbbbbU	/* host, into subpage 1 after DONTNEED */
#define SUB2_C		0xccccccccU	/* host, into subpage 2 */
#define G1		0x61616161U	/* guest, into subpage 1 + 4 */
#define G3		0x63636363U	/* guest, into subpage 3 + 4 */

/*
 * RBX != 0: first reads every subpage of the 2 MiB at SLOT_GPA and says
 * OUT 0x14. Then reports subpages 0, 1, 2 (OUT 0x10, 0x11, 0x12), writes G1
 * at subpage 1 + 4 and G3 at subpage 3 + 4 and says OUT 0x13.
 */
GUEST_CODE(thp_guest, 64,
	"test rbx, rbx\n"
	"jz 2f\n"
	"mov rsi, 0x40000000\n"
	"mov ecx, 512\n"
	"1: mov eax, dword ptr [rsi]\n"
	"add rsi, 4096\n"
	"dec ecx\n"
	"jnz 1b\n"
	"out 0x14, eax\n"
	"2: mov eax, dword ptr [0x40000000]\n"
	"out 0x10, eax\n"
	"mov eax, dword ptr [0x40001000]\n"
	"out 0x11, eax\n"
	"mov eax, dword ptr [0x40002000]\n"
	"out 0x12, eax\n"
	"mov dword ptr [0x40001004], 0x61616161\n"
	"mov dword ptr [0x40003004], 0x63636363\n"
	"out 0x13, eax\n"
	"hlt\n");

struct thp {
	uint8_t *map, *mem;	/* the mapping, its 2 MiB-aligned part */
	long long pins_before;
	struct tvm t;
};

static uint32_t *sub(struct thp *h, int i, int word)
{
	return (uint32_t *)(h->mem + i * PAGE) + word;
}

/*
 * 2 MiB of host memory at a 2 MiB-aligned address, written by the host and
 * backed by one transparent huge page, in slot 1 at SLOT_GPA (2 MiB-aligned
 * too). Returns 0 (after a SKIP) when no huge page backs it.
 */
static int thp_setup(struct __test_metadata *_metadata, struct thp *h)
{
	long long kb;

	if (!file_has("/sys/kernel/mm/transparent_hugepage/enabled", "[always]") &&
	    !file_has("/sys/kernel/mm/transparent_hugepage/enabled", "[madvise]")) {
		SKIP(return 0, "transparent huge pages are not enabled");
	}
	h->pins_before = pins_outstanding();
	h->map = mmap(NULL, 2 * HUGE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, h->map) TH_LOG("mmap: %s", strerror(errno));
	h->mem = (uint8_t *)(((uintptr_t)h->map + HUGE - 1) & ~(HUGE - 1));
	ASSERT_EQ(0, madvise(h->mem, HUGE, MADV_HUGEPAGE));
	for (int i = 0; i < THP_PAGES; i++)
		*sub(h, i, 0) = SUB_A(i);
	kb = anon_huge_kb(h->mem);
	if (kb < (long long)(HUGE >> 10)) {
		munmap(h->map, 2 * HUGE);
		SKIP(return 0, "no transparent huge page backs the region (AnonHugePages %lld kB)", kb);
	}
	tvm_create(_metadata, &h->t, h->mem, HUGE);
	vm_load_code(&h->t.vm, thp_guest);
	return 1;
}

/* The host gives back subpage 1 and writes SUB1_B into its new page. */
static void thp_give_back_sub1(struct __test_metadata *_metadata, struct thp *h)
{
	ASSERT_EQ(0, madvise(h->mem + PAGE, PAGE, MADV_DONTNEED));
	ASSERT_EQ(0, *sub(h, 1, 0));
	*sub(h, 1, 0) = SUB1_B;
	EXPECT_EQ(SUB_A(0), *sub(h, 0, 0));
	EXPECT_EQ(SUB_A(2), *sub(h, 2, 0));
}

static void thp_teardown(struct __test_metadata *_metadata, struct thp *h)
{
	EXPECT_EQ(0, vm_set_region(&h->t.vm, SLOT, 0, SLOT_GPA, 0, NULL));
	tvm_destroy(&h->t);
	munmap(h->map, 2 * HUGE);
	if (h->pins_before >= 0)
		EXPECT_EQ(0, pins_settle(h->pins_before));
}

/*
 * The VMM splits a huge page by giving back its second subpage and writing
 * new data there (a new page) before the guest ever touches the region.
 * KVM maps what the VMM's page tables hold now; a pinning hypervisor pins
 * the pages the VMM maps now: neither may give the guest a 2 MiB window
 * onto the old huge page, whose subpage 1 still holds SUB_A(1) but is no
 * longer the VMM's. So both must show exactly the host's view, and the
 * guest's writes must land in the host's pages.
 */
TEST_F(mem, thp_split_before_first_touch_guest_sees_host_view)
{
	struct thp h;

	if (!thp_setup(_metadata, &h))
		return;
	thp_give_back_sub1(_metadata, &h);
	EXPECT_EQ(SUB_A(0), run_to_out(&h.t.v, 4, 0x10));
	EXPECT_EQ(SUB1_B, run_to_out(&h.t.v, 4, 0x11));
	EXPECT_EQ(SUB_A(2), run_to_out(&h.t.v, 4, 0x12));
	run_to_out(&h.t.v, 4, 0x13);
	EXPECT_EQ(G1, *sub(&h, 1, 1));
	EXPECT_EQ(G3, *sub(&h, 3, 1));
	EXPECT_EQ(SUB1_B, *sub(&h, 1, 0));
	ASSERT_EXIT(&h.t.v, KVM_EXIT_HLT);
	thp_teardown(_metadata, &h);
}

/*
 * The guest reads the whole huge page first (2 MiB mappings allowed), then
 * the VMM gives back subpage 1, writes SUB1_B into its new page and SUB2_C
 * into subpage 2, which it still maps to the same page as before. Subpage
 * 1: KVM shows the new page (SUB1_B), a pin may keep the old one (SUB_A(1)),
 * nothing else. Subpages 0, 2 and 3 are the same pages for everyone, so the
 * guest sees the host's writes and the host the guest's, on both.
 */
TEST_F(mem, thp_split_after_touch_keeps_the_other_subpages_coherent)
{
	struct kvm_regs regs;
	struct thp h;
	uint32_t s1;

	if (!thp_setup(_metadata, &h))
		return;
	vcpu_get_regs(_metadata, &h.t.v, &regs);
	regs.rbx = 1;
	vcpu_set_regs(_metadata, &h.t.v, &regs);
	EXPECT_EQ(SUB_A(THP_PAGES - 1), run_to_out(&h.t.v, 4, 0x14));
	thp_give_back_sub1(_metadata, &h);
	*sub(&h, 2, 0) = SUB2_C;
	EXPECT_EQ(SUB_A(0), run_to_out(&h.t.v, 4, 0x10));
	s1 = run_to_out(&h.t.v, 4, 0x11);
	EXPECT_TRUE(s1 == SUB1_B || s1 == SUB_A(1)) TH_LOG("subpage 1: %#x", s1);
	EXPECT_EQ(SUB2_C, run_to_out(&h.t.v, 4, 0x12));
	run_to_out(&h.t.v, 4, 0x13);
	EXPECT_EQ(G3, *sub(&h, 3, 1));
	ASSERT_EXIT(&h.t.v, KVM_EXIT_HLT);
	TH_LOG("subpage 1 after the split: %s",
	       s1 == SUB1_B ? "the VMM's new page" : "the old (pinned) page");
	thp_teardown(_metadata, &h);
}

/* ---------------------------------------------------------------------- */
/* 4. Slots at and beyond the guest-physical limit                        */
/* ---------------------------------------------------------------------- */

/*
 * KVM (arch/x86/kvm/x86.c, kvm_arch_prepare_memory_region) refuses with
 * EINVAL to create or move a slot whose last gfn, base_gfn + npages - 1, is
 * above kvm_mmu_max_gfn() (arch/x86/kvm/mmu.h) = (1 << (MAXPHYADDR - 12)) - 1,
 * where MAXPHYADDR is the host's raw CPUID 0x80000008 EAX[7:0] when TDP
 * (NPT/EPT) is on (kvm_host.maxphyaddr; 52 without TDP). Deleting a slot
 * and changing only its flags are not checked. So the first GPA no slot may
 * reach is 1 << MAXPHYADDR.
 */
static int param_is_off(const char *path)
{
	char buf[8] = "";
	FILE *f = fopen(path, "r");
	int off;

	if (!f)
		return 0;
	off = fgets(buf, sizeof(buf), f) && (buf[0] == 'N' || buf[0] == '0');
	fclose(f);
	return off;
}

static unsigned int host_maxphyaddr(void)
{
	unsigned int a, b, c, d;

	/* Linux KVM with shadow paging: 52 bits. */
	if (!strcmp(kvm_dev_path(), "/dev/kvm") &&
	    (param_is_off("/sys/module/kvm_amd/parameters/npt") ||
	     param_is_off("/sys/module/kvm_intel/parameters/ept")))
		return 52;
	__cpuid(0x80000000, a, b, c, d);
	if (a < 0x80000008)
		return 36;
	__cpuid(0x80000008, a, b, c, d);
	return a & 0xff;
}

/* The guest's MAXPHYADDR and addressable GPA bits (supported CPUID). */
static void guest_phys_bits(struct __test_metadata *_metadata, struct vm *vm,
			    unsigned int *phys, unsigned int *addressable)
{
	int n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) +
					  n * sizeof(cpuid->entries[0]));

	ASSERT_NE(NULL, cpuid);
	cpuid->nent = n;
	ASSERT_EQ(0, ioctl(vm->sys, KVM_GET_SUPPORTED_CPUID, cpuid));
	*phys = *addressable = 0;
	for (unsigned int i = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function == 0x80000008) {
			*phys = cpuid->entries[i].eax & 0xff;
			*addressable = cpuid->entries[i].eax >> 16 & 0xff;
		}
	if (!*addressable)
		*addressable = *phys;
	free(cpuid);
}

#define HIGH_VA	0x8000000000UL	/* PML4 entry 1, 512 GiB */

/* Maps HIGH_VA .. + 2 MiB to the 2 MiB at @gpa (after vcpu_setup_long). */
static void map_high_va(struct vm *vm, uint64_t gpa)
{
	uint64_t *pml4 = (uint64_t *)(vm->mem + PT_GPA);
	uint64_t *pdpt = (uint64_t *)(vm->mem + PT_GPA + 0x7000);
	uint64_t *pd = (uint64_t *)(vm->mem + PT_GPA + 0x8000);

	memset(pdpt, 0, 0x2000);
	pml4[1] = (PT_GPA + 0x7000) | 3;
	pdpt[0] = (PT_GPA + 0x8000) | 3;
	pd[0] = gpa | 0x83;
}

/* RSI = address: reads a dword there, reports it (OUT 0x10), halts. */
GUEST_CODE(read_rsi, 64,
	"1: mov eax, dword ptr [rsi]\n"
	"out 0x10, eax\n"
	"hlt\n"
	"jmp 1b\n");

static void set_rsi(struct __test_metadata *_metadata, struct vcpu *v,
		    uint64_t rsi)
{
	struct kvm_regs regs;

	vcpu_get_regs(_metadata, v, &regs);
	regs.rsi = rsi;
	regs.rip = CODE_GPA;
	vcpu_set_regs(_metadata, v, &regs);
}

/*
 * A slot whose last page is the last page below 1 << MAXPHYADDR is
 * accepted; the guest reads it (when its own MAXPHYADDR lets it address
 * the page); deleting it is fine.
 */
TEST_F(mem, slot_ending_at_max_gfn_is_accepted)
{
	unsigned int m = host_maxphyaddr(), gphys, gaddr;
	uint64_t limit = 1ULL << m, gpa = limit - PAGE;
	uint8_t *page = alloc_4k_mem(_metadata, PAGE);
	struct vm vm;
	struct vcpu v;

	TH_LOG("host MAXPHYADDR %u: the last slot page is at %#llx", m,
	       (unsigned long long)gpa);
	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, read_rsi);
	*(uint32_t *)(page + PAGE - 4) = 0x11e7e11e;
	ASSERT_EQ(0, vm_set_region(&vm, SLOT, 0, gpa, PAGE, page))
		TH_LOG("slot at %#llx: %s", (unsigned long long)gpa, strerror(errno));
	guest_phys_bits(_metadata, &vm, &gphys, &gaddr);
	if (gphys >= m && gaddr >= m) {
		map_high_va(&vm, limit - HUGE);
		set_rsi(_metadata, &v, HIGH_VA + HUGE - 4);
		EXPECT_EQ(0x11e7e11e, run_to_out(&v, 4, 0x10));
		ASSERT_EXIT(&v, KVM_EXIT_HLT);
	} else {
		TH_LOG("guest MAXPHYADDR %u (addressable %u): not read", gphys, gaddr);
	}
	EXPECT_EQ(0, vm_set_region(&vm, SLOT, 0, gpa, 0, NULL));
	/* A slot of two pages there reaches one page beyond. */
	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, gpa, 2 * PAGE, page));
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
	munmap(page, PAGE);
}

/* A slot whose last page is one page beyond the limit: EINVAL. */
TEST_F(mem, slot_ending_one_page_beyond_max_gfn_is_einval)
{
	uint64_t limit = 1ULL << host_maxphyaddr();
	uint8_t *mem = alloc_4k_mem(_metadata, 4 * PAGE);
	struct vm vm;

	vm_create(_metadata, &vm);
	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, limit - 3 * PAGE,
					   4 * PAGE, mem));
	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, limit, PAGE, mem));
	/* Refused means absent: the slot can be made below the limit. */
	EXPECT_EQ(0, vm_set_region(&vm, SLOT, 0, limit - 4 * PAGE, 4 * PAGE, mem));
	vm_destroy(&vm);
	munmap(mem, 4 * PAGE);
}

/* GPA 2^52 is beyond every x86 MAXPHYADDR: EINVAL. */
TEST_F(mem, slot_at_gpa_2_pow_52_is_einval)
{
	uint8_t *mem = alloc_4k_mem(_metadata, PAGE);
	struct vm vm;

	vm_create(_metadata, &vm);
	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, 1ULL << 52, PAGE, mem));
	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, (1ULL << 52) - PAGE,
					   2 * PAGE, mem));
	vm_destroy(&vm);
	munmap(mem, PAGE);
}

/* GPA 2^48: EINVAL when MAXPHYADDR <= 48, accepted above. */
TEST_F(mem, slot_at_gpa_2_pow_48_follows_maxphyaddr)
{
	unsigned int m = host_maxphyaddr();
	uint8_t *mem = alloc_4k_mem(_metadata, PAGE);
	struct vm vm;

	vm_create(_metadata, &vm);
	if (m <= 48) {
		EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, 1ULL << 48,
						   PAGE, mem));
	} else {
		EXPECT_EQ(0, vm_set_region(&vm, SLOT, 0, 1ULL << 48, PAGE, mem));
		EXPECT_EQ(0, vm_set_region(&vm, SLOT, 0, 1ULL << 48, 0, NULL));
	}
	vm_destroy(&vm);
	munmap(mem, PAGE);
}

/*
 * Moving a slot so that it ends beyond the limit is EINVAL, and the slot
 * stays where it was: the guest still reads it there.
 */
TEST_F(mem, moving_slot_beyond_max_gfn_is_einval_and_keeps_it)
{
	uint64_t limit = 1ULL << host_maxphyaddr();
	uint8_t *mem = alloc_4k_mem(_metadata, 2 * PAGE);
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, read_rsi);
	*(uint32_t *)mem = 0x5107a001;
	ASSERT_EQ(0, vm_set_region(&vm, SLOT, 0, SLOT_GPA, 2 * PAGE, mem));
	set_rsi(_metadata, &v, SLOT_GPA);
	EXPECT_EQ(0x5107a001, run_to_out(&v, 4, 0x10));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);

	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, limit - PAGE, 2 * PAGE, mem));
	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, limit, 2 * PAGE, mem));
	EXPECT_ERRNO(EINVAL, vm_set_region(&vm, SLOT, 0, 1ULL << 52, 2 * PAGE, mem));

	/* Still at SLOT_GPA, still this memory. */
	*(uint32_t *)mem = 0x5107a002;
	set_rsi(_metadata, &v, SLOT_GPA);
	EXPECT_EQ(0x5107a002, run_to_out(&v, 4, 0x10));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	/* And a move below the limit works. */
	EXPECT_EQ(0, vm_set_region(&vm, SLOT, 0, limit - 2 * PAGE, 2 * PAGE, mem));
	set_rsi(_metadata, &v, SLOT_GPA);
	run_to_mmio_read(&v, SLOT_GPA, 4, 0x77);
	EXPECT_EQ(0x77, run_to_out(&v, 4, 0x10));
	EXPECT_EQ(0, vm_set_region(&vm, SLOT, 0, limit - 2 * PAGE, 0, NULL));
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
	munmap(mem, 2 * PAGE);
}

/* ---------------------------------------------------------------------- */
/* 5. Accounting pinned memory                                            */
/* ---------------------------------------------------------------------- */

#define ACCT_SIZE	(2UL << 20)	/* 512 pages */

/*
 * Pinned pages show in VmPin: while the VM lives, VmPin grew by 4 kB for
 * each pin held (none on KVM); when it is closed, VmPin is back where it
 * was. Pins are counted with /proc/vmstat, so a hypervisor that pins
 * without accounting fails.
 */
TEST_F(mem, vmpin_counts_pinned_pages_until_vm_is_closed)
{
	long long pin0 = vmpin_kb(), pins0 = pins_outstanding(), pin1, held;
	struct tvm t;

	ASSERT_LE(0, pin0) TH_LOG("no VmPin in /proc/self/status");
	tvm_create_touched(_metadata, &t, ACCT_SIZE);
	pin1 = vmpin_kb();
	TH_LOG("VmPin %lld kB -> %lld kB", pin0, pin1);
	if (pins0 >= 0) {
		held = pins_outstanding() - pins0;
		EXPECT_PINS_NONE_OR_TOUCHED(held, ACCT_SIZE / PAGE);
		EXPECT_EQ(held * 4, pin1 - pin0) TH_LOG("%lld pins held", held);
	} else {
		EXPECT_TRUE(pin1 == pin0 ||
			    (pin1 - pin0 >= (long long)(ACCT_SIZE >> 10) &&
			     pin1 - pin0 <= (long long)(ACCT_SIZE >> 10) + 4 * SLOT0_SLACK));
	}
	tvm_destroy_all(&t);
	EXPECT_EQ(pin0, vmpin_kb());
}

#define MEMLOCK_LIMIT	(256UL << 10)
#define MEMLOCK_TOUCH	(1UL << 20)

/* Whether the device pins what a guest touches (outstanding pins or VmPin). */
static int device_pins(struct __test_metadata *_metadata)
{
	long long pins0 = pins_outstanding(), pin0 = vmpin_kb(), held;
	struct tvm t;

	tvm_create_touched(_metadata, &t, 16 * PAGE);
	held = pins0 >= 0 ? pins_outstanding() - pins0 : vmpin_kb() - pin0;
	tvm_destroy_all(&t);
	return held > 0;
}

static void drop_cap_ipc_lock(struct __test_metadata *_metadata)
{
	struct __user_cap_header_struct h = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0,
	};
	struct __user_cap_data_struct d[2];
	int i = CAP_TO_INDEX(CAP_IPC_LOCK);
	uint32_t m = CAP_TO_MASK(CAP_IPC_LOCK);

	ASSERT_EQ(0, syscall(SYS_capget, &h, d)) TH_LOG("capget: %s", strerror(errno));
	d[i].effective &= ~m;
	d[i].permitted &= ~m;
	d[i].inheritable &= ~m;
	ASSERT_EQ(0, syscall(SYS_capset, &h, d)) TH_LOG("capset: %s", strerror(errno));
	ASSERT_EQ(0, syscall(SYS_capget, &h, d));
	ASSERT_EQ(0, d[i].effective & m);
}

static void set_memlock(struct __test_metadata *_metadata, rlim_t bytes)
{
	struct rlimit rl = { .rlim_cur = bytes, .rlim_max = bytes };

	ASSERT_EQ(0, setrlimit(RLIMIT_MEMLOCK, &rl))
		TH_LOG("setrlimit: %s", strerror(errno));
}

/*
 * Runs the statements in a forked child and stores its wait status in
 * @status; an ASSERT in the child aborts it.
 */
#define RUN_CHILD(status, ...) do {					\
	pid_t __pid = fork();						\
	ASSERT_LE(0, __pid);						\
	if (__pid == 0) {						\
		__VA_ARGS__;						\
		_exit(0);						\
	}								\
	ASSERT_EQ(__pid, waitpid(__pid, &(status), 0));			\
} while (0)

#define ASSERT_CHILD_OK(status)						\
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)	\
		TH_LOG("child status %#x", status)

/* Runs the statements in a forked child, which must exit 0. */
#define IN_CHILD(...) do {						\
	int __st;							\
	RUN_CHILD(__st, __VA_ARGS__);					\
	ASSERT_CHILD_OK(__st);						\
} while (0)

/*
 * Without CAP_IPC_LOCK, RLIMIT_MEMLOCK bounds what may be pinned: a
 * pinning hypervisor must fail KVM_RUN with ENOMEM once the guest's touches
 * would take VmPin past the limit, and never hold more; a hypervisor that
 * does not pin (KVM) runs the guest to its end.
 */
TEST_F(mem, memlock_limit_without_cap_ipc_lock_bounds_pins)
{
	long long before = pins_outstanding();

	IN_CHILD({
		int pins = device_pins(_metadata), r;
		long long pins0 = pins_outstanding(), pin0 = vmpin_kb();
		struct tvm t;

		TH_LOG("the device %s", pins ? "pins guest memory" : "does not pin");
		drop_cap_ipc_lock(_metadata);
		set_memlock(_metadata, MEMLOCK_LIMIT);
		tvm_create(_metadata, &t, alloc_4k_mem(_metadata, MEMLOCK_TOUCH),
			   MEMLOCK_TOUCH);
		tvm_load_touch(_metadata, &t);
		if (!pins) {
			ASSERT_EQ(MEMLOCK_TOUCH / PAGE, run_to_out(&t.v, 4, 0x10));
			ASSERT_EXIT(&t.v, KVM_EXIT_HLT);
		} else {
			for (int i = 0; i < 2; i++) {
				errno = 0;
				r = ioctl(t.v.fd, KVM_RUN, 0);
				ASSERT_EQ(-1, r) TH_LOG("KVM_RUN went on: exit %s",
							exit_reason_name(t.v.run->exit_reason));
				ASSERT_EQ(ENOMEM, errno) TH_LOG("KVM_RUN: %s", strerror(errno));
				ASSERT_GE((long long)(MEMLOCK_LIMIT >> 10), vmpin_kb() - pin0);
				ASSERT_GE((long long)(MEMLOCK_LIMIT / PAGE),
					  pins_outstanding() - pins0);
				ASSERT_LT(0, vmpin_kb() - pin0);
			}
		}
		tvm_destroy_all(&t);
	});
	if (before >= 0)
		EXPECT_EQ(0, pins_settle(before));
}

/*
 * With CAP_IPC_LOCK (root's default) the same low RLIMIT_MEMLOCK does not
 * apply: the guest touches its 1 MiB on every device.
 */
TEST_F(mem, cap_ipc_lock_lets_guest_pin_past_memlock_limit)
{
	IN_CHILD({
		struct tvm t;

		set_memlock(_metadata, MEMLOCK_LIMIT);
		tvm_create_touched(_metadata, &t, MEMLOCK_TOUCH);
		tvm_destroy_all(&t);
	});
}

/* ---------------------------------------------------------------------- */
/* 6. Kernel memory charged to the memory cgroup                          */
/* ---------------------------------------------------------------------- */

#define CG_TOUCH	(64UL << 20)
/* The last-level nested page tables for CG_TOUCH at 4 KiB. */
#define CG_NPT_BYTES	(CG_TOUCH / HUGE * PAGE)

struct cg {
	char root[128], dir[160], path[256];
	int mounted, enabled;
};

static long long cg_stat(struct cg *c, const char *key)
{
	char p[300];

	snprintf(p, sizeof(p), "%s/memory.stat", c->dir);
	return read_keyed(p, key);
}

/* A memory cgroup for this test, under cgroup2's root; 0 after a SKIP. */
static int cg_setup(struct __test_metadata *_metadata, struct cg *c)
{
	char p[300];

	memset(c, 0, sizeof(*c));
	if (!file_has("/proc/filesystems", "cgroup2"))
		SKIP(return 0, "no cgroup2 in /proc/filesystems");
	if (!access("/sys/fs/cgroup/cgroup.controllers", F_OK)) {
		strcpy(c->root, "/sys/fs/cgroup");
	} else {
		strcpy(c->root, "/tmp/memsafety-cg.XXXXXX");
		ASSERT_NE(NULL, mkdtemp(c->root));
		if (mount("cgroup2", c->root, "cgroup2", 0, NULL)) {
			int e = errno;

			rmdir(c->root);
			SKIP(return 0, "mount cgroup2: %s", strerror(e));
		}
		c->mounted = 1;
	}
	snprintf(p, sizeof(p), "%s/cgroup.controllers", c->root);
	if (!file_has(p, "memory")) {
		if (c->mounted) {
			umount2(c->root, MNT_DETACH);
			rmdir(c->root);
		}
		SKIP(return 0, "no memory controller in %s", p);
	}
	snprintf(p, sizeof(p), "%s/cgroup.subtree_control", c->root);
	if (!file_has(p, "memory")) {
		ASSERT_EQ(0, write_file(p, "+memory"))
			TH_LOG("+memory in %s: %s", p, strerror(errno));
		c->enabled = 1;
	}
	snprintf(c->dir, sizeof(c->dir), "%s/memsafety-%d", c->root, getpid());
	ASSERT_EQ(0, mkdir(c->dir, 0755)) TH_LOG("mkdir %s: %s", c->dir, strerror(errno));
	return 1;
}

static void cg_teardown(struct cg *c)
{
	char p[300];

	for (int i = 0; i < 100 && rmdir(c->dir) && errno == EBUSY; i++)
		usleep(20000);
	if (c->enabled) {
		snprintf(p, sizeof(p), "%s/cgroup.subtree_control", c->root);
		write_file(p, "-memory");
	}
	if (c->mounted) {
		umount2(c->root, MNT_DETACH);
		rmdir(c->root);
	}
}

/*
 * A VMM in its own memory cgroup creates a VM with one vCPU whose guest
 * touches 64 MiB mapped at 4 KiB. KVM allocates the VM's structures and its
 * nested page tables with GFP_KERNEL_ACCOUNT and counts the page tables as
 * secondary page tables, so the cgroup's "kernel" (less its own process
 * page tables, "pagetables") grows by at least the nested page tables' last
 * level, 64 MiB / 2 MiB * 4 KiB = 128 KiB, and so does "sec_pagetables".
 * memory.stat is flushed at most every 2 s for small changes: the "before"
 * is read 2.5 s after the VMM's own memory is in place, and the "after" is
 * polled for up to 5 s.
 */
TEST_F_TIMEOUT(mem, vm_kernel_memory_is_charged_to_the_vmm_memory_cgroup, 120)
{
	struct cg c;
	int status;

	if (!cg_setup(_metadata, &c))
		return;
	RUN_CHILD(status, {
		char p[300], pid[32];
		long long k0, pt0, sec0, k = 0, pt = 0, sec = 0;
		uint8_t *mem;
		struct tvm t;

		snprintf(p, sizeof(p), "%s/cgroup.procs", c.dir);
		snprintf(pid, sizeof(pid), "%d", getpid());
		ASSERT_EQ(0, write_file(p, pid)) TH_LOG("%s: %s", p, strerror(errno));
		mem = alloc_4k_mem(_metadata, CG_TOUCH);
		memset(mem, 0, CG_TOUCH);
		usleep(2500000);
		k0 = cg_stat(&c, "kernel");
		pt0 = cg_stat(&c, "pagetables");
		sec0 = cg_stat(&c, "sec_pagetables");
		ASSERT_LE(0, k0) TH_LOG("no \"kernel\" in %s/memory.stat", c.dir);
		ASSERT_LE(0, pt0);

		tvm_create(_metadata, &t, mem, CG_TOUCH);
		tvm_touch(_metadata, &t);
		for (int i = 0; i < 20; i++) {
			k = cg_stat(&c, "kernel") - k0;
			pt = cg_stat(&c, "pagetables") - pt0;
			sec = sec0 < 0 ? -1 : cg_stat(&c, "sec_pagetables") - sec0;
			if (k - pt >= (long long)CG_NPT_BYTES &&
			    (sec0 < 0 || sec >= (long long)CG_NPT_BYTES))
				break;
			usleep(250000);
		}
		TH_LOG("memory.stat growth: kernel %lld kB, pagetables %lld kB, sec_pagetables %lld kB",
		       k >> 10, pt >> 10, sec0 < 0 ? -1 : sec >> 10);
		ASSERT_LE((long long)CG_NPT_BYTES, k - pt);
		if (sec0 >= 0)
			ASSERT_LE((long long)CG_NPT_BYTES, sec);
		tvm_destroy_all(&t);
	});
	cg_teardown(&c);
	ASSERT_CHILD_OK(status);
}

TEST_HARNESS_MAIN
