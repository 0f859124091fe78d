// SPDX-License-Identifier: GPL-2.0
/*
 * Signals and lifecycle: a signal interrupts a spinning guest (KVM_RUN
 * returns EINTR, exit reason KVM_EXIT_INTR), immediate_exit, fds used from a
 * forked child, and several multi-vCPU VMs running at once.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "vm_lib.h"

#define MAX_LATENCY_NS (10 * 1000 * 1000)	/* 10 ms */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void on_signal(int sig)
{
	(void)sig;
}

static void install_handler(int sig)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

/* Counts in guest memory at 0x500 forever. */
GUEST_CODE(spin, 16,
	"1: inc dword ptr [0x500]\n"
	"jmp 1b\n");

/*
 * The guests that spin until the host interrupts them run with interrupts
 * disabled (RFLAGS.IF = 0), which must not keep the host from taking its
 * own interrupts. Under Bochs 2.7's VT-x emulation it does: a guest that
 * enters with IF = 0 leaves external interrupts masked, so they make no VM
 * exit and the host never gets its (only) CPU back. RKVM_TEST_SPIN_IF=1 (the
 * Bochs leg) runs these guests with IF = 1 instead; nothing is ever
 * injected into them, so only the guest's own flag differs.
 */
static void spinner_setup(struct __test_metadata *_metadata, struct vcpu *vcpu)
{
	const char *e = getenv("RKVM_TEST_SPIN_IF");
	struct kvm_regs regs;

	if (!e || strcmp(e, "1"))
		return;
	vcpu_get_regs(_metadata, vcpu, &regs);
	regs.rflags |= 1UL << 9;	/* IF */
	vcpu_set_regs(_metadata, vcpu, &regs);
}

FIXTURE(rm) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(rm)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_real(_metadata, &self->vcpu);
}

FIXTURE_TEARDOWN(rm)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

struct runner {
	struct vcpu *vcpu;
	int ret, err;
	uint64_t returned_ns;
	volatile int started;
};

static void *run_once(void *p)
{
	struct runner *r = p;

	r->started = 1;
	r->ret = ioctl(r->vcpu->fd, KVM_RUN, 0);
	r->err = errno;
	r->returned_ns = now_ns();
	return NULL;
}

/* Waits until the spinning guest's counter at 0x500 moves past @from. */
static int wait_counter(struct vm *vm, uint32_t from)
{
	for (int i = 0; i < 5000; i++) {
		if (mem_read32(vm, 0x500) != from)
			return 1;
		usleep(1000);
	}
	return 0;
}

/*
 * Runs the spinning guest in a thread and, once it is executing, signals
 * that thread; returns how long KVM_RUN took to return after the signal.
 */
static uint64_t interrupt_from_thread(struct __test_metadata *_metadata,
				      struct vm *vm, struct vcpu *vcpu)
{
	struct runner r = { .vcpu = vcpu };
	pthread_t t;
	uint64_t sent;

	install_handler(SIGUSR1);
	ASSERT_EQ(0, pthread_create(&t, NULL, run_once, &r));
	while (!r.started)
		usleep(1000);
	EXPECT_TRUE(wait_counter(vm, mem_read32(vm, 0x500)))
		TH_LOG("the guest does not run");
	sent = now_ns();
	ASSERT_EQ(0, pthread_kill(t, SIGUSR1));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(-1, r.ret);
	EXPECT_EQ(EINTR, r.err) TH_LOG("KVM_RUN: %s", strerror(r.err));
	EXPECT_EQ(KVM_EXIT_INTR, vcpu->run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(vcpu->run->exit_reason));
	return r.returned_ns - sent;
}

/*
 * Latencies are wall-clock times in a TCG VM on a shared host: the best of
 * TRIES shows whether KVM_RUN notices the signal promptly.
 */
#define TRIES 5

TEST_F(rm, signal_from_another_thread_interrupts_spinning_guest)
{
	uint64_t lat, best = UINT64_MAX;

	vm_load_code(&self->vm, spin);
	spinner_setup(_metadata, &self->vcpu);
	for (int i = 0; i < TRIES && best >= MAX_LATENCY_NS; i++) {
		lat = interrupt_from_thread(_metadata, &self->vm, &self->vcpu);
		if (lat < best)
			best = lat;
	}
	/* Logged after the loop: console output in it would delay the tries. */
	TH_LOG("best signal to KVM_RUN return: %llu us", (unsigned long long)best / 1000);
	EXPECT_GT(MAX_LATENCY_NS, best);
}

TEST_F(rm, timer_signal_interrupts_spinning_guest)
{
	struct sigevent sev = {
		.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGALRM,
	};
	struct itimerspec its = { .it_value.tv_nsec = 50 * 1000 * 1000 };
	timer_t timer;
	uint64_t start, lat, best = UINT64_MAX;
	int r;

	install_handler(SIGALRM);
	vm_load_code(&self->vm, spin);
	spinner_setup(_metadata, &self->vcpu);
	/* The first KVM_RUN sets up the vCPU: keep that out of the timing. */
	self->vcpu.run->immediate_exit = 1;
	ioctl(self->vcpu.fd, KVM_RUN, 0);
	self->vcpu.run->immediate_exit = 0;
	ASSERT_EQ(0, timer_create(CLOCK_MONOTONIC, &sev, &timer));
	for (int i = 0; i < TRIES && best >= MAX_LATENCY_NS; i++) {
		start = now_ns();
		ASSERT_EQ(0, timer_settime(timer, 0, &its, NULL));
		r = ioctl(self->vcpu.fd, KVM_RUN, 0);
		lat = now_ns() - start - its.it_value.tv_nsec;
		EXPECT_EQ(-1, r);
		EXPECT_EQ(EINTR, errno);
		EXPECT_EQ(KVM_EXIT_INTR, self->vcpu.run->exit_reason);
		if (lat < best)
			best = lat;
	}
	/* Logged after the loop: console output in it would delay the tries. */
	TH_LOG("best timer expiry to KVM_RUN return: %llu us", (unsigned long long)best / 1000);
	EXPECT_LT(0, mem_read32(&self->vm, 0x500));
	EXPECT_GT(MAX_LATENCY_NS, best);
	timer_delete(timer);
}

TEST_F(rm, guest_resumes_after_signal_exit)
{
	uint32_t first, second;

	vm_load_code(&self->vm, spin);
	spinner_setup(_metadata, &self->vcpu);
	interrupt_from_thread(_metadata, &self->vm, &self->vcpu);
	first = mem_read32(&self->vm, 0x500);
	EXPECT_LT(0, first);
	interrupt_from_thread(_metadata, &self->vm, &self->vcpu);
	second = mem_read32(&self->vm, 0x500);
	EXPECT_LT(first, second);
}

GUEST_CODE(out_once, 16,
	"mov al, 1\n"
	"out 0x10, al\n"
	"hlt\n");

TEST_F(rm, blocked_pending_signal_does_not_interrupt_kvm_run)
{
	sigset_t set, old;

	install_handler(SIGUSR2);
	vm_load_code(&self->vm, out_once);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	ASSERT_EQ(0, pthread_sigmask(SIG_BLOCK, &set, &old));
	ASSERT_EQ(0, raise(SIGUSR2));
	EXPECT_EQ(1, run_to_out(&self->vcpu, 1, 0x10));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	ASSERT_EQ(0, pthread_sigmask(SIG_SETMASK, &old, NULL));
}

TEST_F(rm, immediate_exit_returns_eintr_without_running)
{
	struct kvm_regs regs;
	uint64_t start;

	vm_load_code(&self->vm, out_once);
	self->vcpu.run->immediate_exit = 1;
	EXPECT_ERRNO(EINTR, ioctl(self->vcpu.fd, KVM_RUN, 0));
	/* The first KVM_RUN sets things up (KVM: 30 ms under TCG); time the next. */
	start = now_ns();
	EXPECT_ERRNO(EINTR, ioctl(self->vcpu.fd, KVM_RUN, 0));
	EXPECT_GT(MAX_LATENCY_NS, now_ns() - start);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA, regs.rip);
	/* Cleared, the guest runs from where it was. */
	self->vcpu.run->immediate_exit = 0;
	EXPECT_EQ(1, run_to_out(&self->vcpu, 1, 0x10));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(in_then_hlt, 16,
	"in al, 0x60\n"
	"hlt\n");

TEST_F(rm, immediate_exit_completes_pending_in)
{
	struct kvm_regs regs;

	vm_load_code(&self->vm, in_then_hlt);
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_IN, 1, 0x60, 1);
	*(uint8_t *)io_data(&self->vcpu) = 0x3c;
	self->vcpu.run->immediate_exit = 1;
	EXPECT_ERRNO(EINTR, ioctl(self->vcpu.fd, KVM_RUN, 0));
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(0x3cULL, regs.rax & 0xff);
	EXPECT_EQ(CODE_GPA + 2, regs.rip);
	self->vcpu.run->immediate_exit = 0;
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(0x3cULL, regs.rax & 0xff);
}

GUEST_CODE(mmio_read_hlt, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, qword ptr [rbx]\n"
	"hlt\n");

TEST(immediate_exit_completes_pending_mmio_read)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, mmio_read_hlt);
	run_to_mmio_read(&v, MMIO_GPA, 8, 0x1020304050607080ULL);
	v.run->immediate_exit = 1;
	EXPECT_ERRNO(EINTR, ioctl(v.fd, KVM_RUN, 0));
	vcpu_get_regs(_metadata, &v, &regs);
	EXPECT_EQ(0x1020304050607080ULL, regs.rax);
	EXPECT_EQ(CODE_GPA + (mmio_read_hlt_end - mmio_read_hlt) - 1, regs.rip);
	v.run->immediate_exit = 0;
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/* Runs @fn in a forked child; the child's exit status is the result. */
#define EXPECT_CHILD_OK(expr) do {					\
	int __status;							\
	pid_t __pid = fork();						\
	ASSERT_LE(0, __pid);						\
	if (__pid == 0)							\
		_exit((expr) ? 0 : 1);					\
	ASSERT_EQ(__pid, waitpid(__pid, &__status, 0));			\
	EXPECT_TRUE(WIFEXITED(__status) && WEXITSTATUS(__status) == 0)	\
		TH_LOG("in child: %s", #expr);				\
} while (0)

static int fails_with(long r, int err)
{
	return r == -1 && errno == err;
}

TEST_F(rm, vcpu_fd_in_forked_child_is_eio)
{
	struct kvm_regs regs;
	int fd = self->vcpu.fd;

	EXPECT_CHILD_OK(fails_with(ioctl(fd, KVM_RUN, 0), EIO));
	EXPECT_CHILD_OK(fails_with(ioctl(fd, KVM_GET_REGS, &regs), EIO));
	EXPECT_CHILD_OK(fails_with(ioctl(fd, KVM_SET_REGS, &regs), EIO));
	/* The parent still owns it. */
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	vm_load_code(&self->vm, out_once);
	EXPECT_EQ(1, run_to_out(&self->vcpu, 1, 0x10));
}

TEST_F(rm, vm_fd_in_forked_child_is_eio)
{
	struct vm *vm = &self->vm;

	EXPECT_CHILD_OK(fails_with(ioctl(vm->fd, KVM_CREATE_VCPU, 1), EIO));
	EXPECT_CHILD_OK(fails_with(vm_set_region(vm, 1, 0, 0x400000, 4096,
						 vm->mem), EIO));
	/* Nothing the child tried happened. */
	EXPECT_LE(0, ioctl(vm->fd, KVM_CREATE_VCPU, 1));
}

/* --- several VMs with 2 vCPUs each, all running at once --- */

#define NR_VMS 3
#define NR_EXITS 300

/* Sends 0..NR_EXITS-1 to port DX, then halts. */
GUEST_CODE(count_out, 16,
	"xor ecx, ecx\n"
	"1: mov eax, ecx\n"
	"out dx, eax\n"
	"inc ecx\n"
	"cmp ecx, 300\n"
	"jne 1b\n"
	"hlt\n");

struct worker {
	struct vcpu vcpu;
	uint16_t port;
	int bad;		/* first wrong exit, or 0 */
	int done;
};

static void *work(void *p)
{
	struct worker *w = p;
	struct kvm_run *run = w->vcpu.run;

	for (uint32_t i = 0; i < NR_EXITS; i++) {
		if (ioctl(w->vcpu.fd, KVM_RUN, 0) || run->exit_reason != KVM_EXIT_IO ||
		    run->io.port != w->port || run->io.size != 4 ||
		    *(uint32_t *)((uint8_t *)run + run->io.data_offset) != i) {
			w->bad = i + 1;
			return NULL;
		}
	}
	if (ioctl(w->vcpu.fd, KVM_RUN, 0) || run->exit_reason != KVM_EXIT_HLT)
		w->bad = NR_EXITS + 1;
	w->done = 1;
	return NULL;
}

TEST(vms_with_two_vcpus_run_concurrently)
{
	struct vm vms[NR_VMS];
	struct worker w[NR_VMS * 2];
	pthread_t t[NR_VMS * 2];

	for (int i = 0; i < NR_VMS; i++) {
		vm_create(_metadata, &vms[i]);
		vm_load_code(&vms[i], count_out);
	}
	for (int i = 0; i < NR_VMS * 2; i++) {
		struct kvm_regs regs;

		memset(&w[i], 0, sizeof(w[i]));
		w[i].port = 0x100 + i;
		vcpu_create(_metadata, &vms[i / 2], i % 2, &w[i].vcpu);
		vcpu_setup_real(_metadata, &w[i].vcpu);
		vcpu_get_regs(_metadata, &w[i].vcpu, &regs);
		regs.rdx = w[i].port;
		vcpu_set_regs(_metadata, &w[i].vcpu, &regs);
	}
	for (int i = 0; i < NR_VMS * 2; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, work, &w[i]));
	for (int i = 0; i < NR_VMS * 2; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	for (int i = 0; i < NR_VMS * 2; i++) {
		EXPECT_EQ(0, w[i].bad) TH_LOG("vCPU %d: wrong exit %d", i,
					      w[i].bad - 1);
		EXPECT_EQ(1, w[i].done);
		vcpu_destroy(&vms[i / 2], &w[i].vcpu);
	}
	for (int i = 0; i < NR_VMS; i++)
		vm_destroy(&vms[i]);
}

TEST(vm_closed_while_vcpu_thread_is_in_guest)
{
	struct vm vm;
	struct vcpu v;
	struct runner r;
	pthread_t t;

	install_handler(SIGUSR1);
	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_real(_metadata, &v);
	spinner_setup(_metadata, &v);
	vm_load_code(&vm, spin);
	r = (struct runner){ .vcpu = &v };
	ASSERT_EQ(0, pthread_create(&t, NULL, run_once, &r));
	while (!r.started)
		usleep(1000);
	EXPECT_TRUE(wait_counter(&vm, 0)) TH_LOG("the guest does not run");
	/*
	 * The vCPU holds the VM: closing the VM fd does not stop it. Our
	 * mapping of its memory stays, so the counter shows it still running.
	 */
	close(vm.fd);
	close(vm.sys);
	EXPECT_TRUE(wait_counter(&vm, mem_read32(&vm, 0x500)))
		TH_LOG("the guest stopped when the VM fd was closed");
	ASSERT_EQ(0, pthread_kill(t, SIGUSR1));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(-1, r.ret);
	EXPECT_EQ(EINTR, r.err) TH_LOG("KVM_RUN: %s", strerror(r.err));
	EXPECT_EQ(KVM_EXIT_INTR, v.run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(v.run->exit_reason));
	vcpu_destroy(&vm, &v);
	munmap(vm.mem, vm.mem_size);
}

/* vCPU 1 waits for vCPU 0's write to shared guest memory. */
GUEST_CODE(wait_flag, 16,
	"1: cmp dword ptr [0x500], 0x1234\n"
	"jne 1b\n"
	"mov al, 1\n"
	"out 0x10, al\n"
	"hlt\n");

GUEST_CODE(set_flag, 16,
	"mov dword ptr [0x500], 0x1234\n"
	"hlt\n");

TEST(vcpus_of_one_vm_share_memory)
{
	struct vm vm;
	struct vcpu v0, v1;
	struct runner r;
	pthread_t t;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v0);
	vcpu_create(_metadata, &vm, 1, &v1);
	vcpu_setup_real(_metadata, &v0);
	vcpu_setup_real(_metadata, &v1);
	spinner_setup(_metadata, &v1);
	vm_load_code(&vm, wait_flag);
	vm_load(&vm, CODE_GPA + 0x100, set_flag, set_flag_end);
	vcpu_set_rip(_metadata, &v0, CODE_GPA + 0x100);

	r = (struct runner){ .vcpu = &v1 };
	ASSERT_EQ(0, pthread_create(&t, NULL, run_once, &r));
	while (!r.started)
		usleep(1000);
	usleep(20000);
	ASSERT_EXIT(&v0, KVM_EXIT_HLT);
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(0, r.ret) TH_LOG("KVM_RUN: %s", strerror(r.err));
	EXPECT_EQ(KVM_EXIT_IO, v1.run->exit_reason);
	EXPECT_EQ(0x10, v1.run->io.port);
	vcpu_destroy(&vm, &v0);
	vcpu_destroy(&vm, &v1);
	vm_destroy(&vm);
}

TEST(sigkill_ends_a_process_whose_vcpu_is_in_guest)
{
	/* The child's guest memory is shared, so we see its counter move. */
	struct vm view = { .mem_size = VM_MEM_SIZE };
	int status;
	uint64_t start;
	pid_t pid;

	view.mem = mmap(NULL, view.mem_size, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, view.mem) TH_LOG("mmap: %s", strerror(errno));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct vm vm;
		struct vcpu v;

		vm_create_empty(_metadata, &vm);
		vm.mem = view.mem;
		vm.mem_size = view.mem_size;
		if (vm_set_region(&vm, 0, 0, 0, vm.mem_size, vm.mem))
			_exit(4);
		vcpu_create(_metadata, &vm, 0, &v);
		vcpu_setup_real(_metadata, &v);
		spinner_setup(_metadata, &v);
		vm_load_code(&vm, spin);
		ioctl(v.fd, KVM_RUN, 0);
		_exit(3);	/* KVM_RUN must not return */
	}
	/* Killed only once the guest is seen running, not after a fixed wait. */
	EXPECT_TRUE(wait_counter(&view, 0)) TH_LOG("the guest does not run");
	start = now_ns();
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
		TH_LOG("status %#x", status);
	EXPECT_GT(1000000000ULL, now_ns() - start);
	munmap(view.mem, view.mem_size);
}

TEST_HARNESS_MAIN
