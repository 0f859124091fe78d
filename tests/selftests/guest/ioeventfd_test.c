// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_IOEVENTFD: a guest write to a chosen port or MMIO address signals an
 * eventfd in the kernel and the guest goes on without an exit to
 * userspace. Covered: every errno of assign and deassign in KVM's order
 * (EINVAL for lengths, flags, a wrapping range and DATAMATCH with length
 * 0; EBADF and EINVAL for the fd; EEXIST for KVM's collision rule; ENOENT
 * for a deassign that names nothing, which KVM does not validate), no
 * ENOSPC past NR_IOBUS_DEVS (ioeventfds do not count there), the caps;
 * OUT of 1, 2 and 4 bytes, REP OUTS, MMIO writes of 1 to 8 bytes,
 * datamatch, length 0 (any length), writes that do not match exiting as
 * usual, MMIO reads never signalling, the virtio-ccw bus never written on
 * x86, RAM never signalling; deassign stopping the signals; the eventfd's
 * fd closed after the assign; the VM destroyed with ioeventfds assigned
 * (the eventfd outlives it; kmemleak checks the rest).
 *
 * Guests run in 64-bit mode; each counts on the eventfd's counter, read
 * non-blocking (EAGAIN means 0).
 */
#include <pthread.h>
#include <sys/eventfd.h>

#include "vm_lib.h"

#define M MMIO_GPA
#define PORT 0x1234
/* NR_IOBUS_DEVS in include/linux/kvm_host.h. */
#define NR_IOBUS_DEVS 1000

/* KVM_IOEVENTFD with these fields; returns the ioctl's result. */
static int ioeventfd(int vm, uint64_t addr, uint32_t len, int fd,
		     uint32_t flags, uint64_t datamatch)
{
	struct kvm_ioeventfd a = {
		.datamatch = datamatch, .addr = addr, .len = len, .fd = fd,
		.flags = flags,
	};

	return ioctl(vm, KVM_IOEVENTFD, &a);
}

/* The eventfd's counter, reset to 0. */
static uint64_t efd_take(int efd)
{
	uint64_t v = 0;

	if (read(efd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

#define ASSIGN(addr, len, efd, flags, dm)				\
	ASSERT_EQ(0, ioeventfd(self->vm.fd, addr, len, efd, flags, dm))	\
		TH_LOG("KVM_IOEVENTFD: %s", strerror(errno))

#define DEASSIGN(addr, len, efd, flags, dm)				\
	ASSERT_EQ(0, ioeventfd(self->vm.fd, addr, len, efd,		\
			       (flags) | KVM_IOEVENTFD_FLAG_DEASSIGN, dm))	\
		TH_LOG("KVM_IOEVENTFD deassign: %s", strerror(errno))

#define PIO KVM_IOEVENTFD_FLAG_PIO
#define DM KVM_IOEVENTFD_FLAG_DATAMATCH
#define DEAS KVM_IOEVENTFD_FLAG_DEASSIGN
#define CCW KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY

FIXTURE(io) {
	struct vm vm;
	struct vcpu vcpu;
	struct kvm_regs regs;	/* after the final HLT */
	int efd;
};

FIXTURE_SETUP(io)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ASSERT_GE(self->efd, 0);
}

FIXTURE_TEARDOWN(io)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
	if (self->efd >= 0)
		close(self->efd);
}

#define RUN_TO_HLT() do {						\
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);				\
	vcpu_get_regs(_metadata, &self->vcpu, &self->regs);		\
} while (0)

#define LOAD(code) vm_load_code(&self->vm, code)
#define V (&self->vcpu)
#define VMFD (self->vm.fd)
#define EFD (self->efd)

/* --- capabilities --- */

TEST_F(io, caps)
{
	int caps[] = { KVM_CAP_IOEVENTFD, KVM_CAP_IOEVENTFD_NO_LENGTH,
		       KVM_CAP_IOEVENTFD_ANY_LENGTH };

	for (unsigned int i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		EXPECT_LT(0, ioctl(self->vm.sys, KVM_CHECK_EXTENSION, caps[i]))
			TH_LOG("cap %d on the system fd", caps[i]);
		EXPECT_LT(0, ioctl(VMFD, KVM_CHECK_EXTENSION, caps[i]))
			TH_LOG("cap %d on the VM fd", caps[i]);
	}
}

/* --- assign errors --- */

TEST_F(io, bad_length_is_einval)
{
	uint32_t bad[] = { 3, 5, 6, 7, 9, 16, 256, 0xffffffff };

	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, bad[i], EFD, 0, 0));
		EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, PORT, bad[i], EFD, PIO, 0));
	}
}

TEST_F(io, wrapping_range_is_einval)
{
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, ~0ULL, 1, EFD, 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, ~0ULL - 7, 8, EFD, 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, ~0ULL - 3, 8, EFD, PIO, 0));
	/* Ending exactly at 2^64 - 1 is fine; so is length 0 at the top. */
	EXPECT_EQ(0, ioeventfd(VMFD, ~0ULL - 8, 8, EFD, 0, 0));
	EXPECT_EQ(0, ioeventfd(VMFD, ~0ULL, 0, EFD, 0, 0));
	/* PIO addresses past 16 bits are accepted (and never written). */
	EXPECT_EQ(0, ioeventfd(VMFD, 0x12345678, 4, EFD, PIO, 0));
}

TEST_F(io, unknown_flags_are_einval)
{
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 4, EFD, 1 << 5, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 4, EFD, PIO | 1 << 5, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 4, EFD, 1u << 31, 0));
	/* Bit 4 (kvm_ioeventfd_flag_nr_fast_mmio) is in the valid mask and
	 * changes nothing: this is an MMIO ioeventfd like any other. */
	EXPECT_EQ(0, ioeventfd(VMFD, M, 4, EFD, 1 << 4, 0));
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, M, 4, EFD, 0, 0));
	EXPECT_EQ(0, ioeventfd(VMFD, M, 4, EFD, DEAS, 0));
}

TEST_F(io, datamatch_without_length_is_einval)
{
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 0, EFD, DM, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, PORT, 0, EFD, PIO | DM, 0));
	/* Length 0 without datamatch is fine, on either bus. */
	EXPECT_EQ(0, ioeventfd(VMFD, M, 0, EFD, 0, 0));
	EXPECT_EQ(0, ioeventfd(VMFD, PORT, 0, EFD, PIO, 0));
}

TEST_F(io, bad_fd)
{
	int pipefd[2];

	EXPECT_ERRNO(EBADF, ioeventfd(VMFD, M, 4, -1, 0, 0));
	EXPECT_ERRNO(EBADF, ioeventfd(VMFD, M, 4, 1000000, 0, 0));
	ASSERT_EQ(0, pipe(pipefd));
	/* Not an eventfd: EINVAL. */
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 4, pipefd[0], 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 4, VMFD, PIO, 0));
	close(pipefd[0]);
	close(pipefd[1]);
	/* A closed fd. */
	EXPECT_ERRNO(EBADF, ioeventfd(VMFD, M, 4, pipefd[0], 0, 0));
	/* The request is checked before the fd. */
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 3, -1, 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 0, -1, DM, 0));
}

TEST_F(io, collisions_are_eexist)
{
	int efd2 = eventfd(0, EFD_NONBLOCK);

	ASSERT_GE(efd2, 0);
	ASSIGN(M, 4, EFD, 0, 0);
	/* The same, from the same or another eventfd. */
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, M, 4, EFD, 0, 0));
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, M, 4, efd2, 0, 0));
	/* A datamatch under a wildcard of the same length. */
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, M, 4, efd2, DM, 7));
	/* Any length at the same address. */
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, M, 0, efd2, 0, 0));
	/* The fd is looked at before the collision. */
	EXPECT_ERRNO(EBADF, ioeventfd(VMFD, M, 4, -1, 0, 0));
	/* Another length, address or bus does not collide. */
	EXPECT_EQ(0, ioeventfd(VMFD, M, 2, efd2, 0, 0));
	EXPECT_EQ(0, ioeventfd(VMFD, M + 1, 4, efd2, 0, 0));
	EXPECT_EQ(0, ioeventfd(VMFD, M, 4, efd2, PIO, 0));
	EXPECT_EQ(0, ioeventfd(VMFD, M, 4, efd2, CCW, 0));
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, M, 4, EFD, CCW, 0));

	/* Datamatches: distinct values coexist, a wildcard over them does not. */
	ASSIGN(PORT, 2, EFD, PIO | DM, 1);
	EXPECT_EQ(0, ioeventfd(VMFD, PORT, 2, efd2, PIO | DM, 2));
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, PORT, 2, efd2, PIO | DM, 1));
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, PORT, 2, efd2, PIO, 0));
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, PORT, 0, efd2, PIO, 0));
	/* The datamatch value is ignored without the flag. */
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, PORT, 2, efd2, PIO, 3));
	EXPECT_EQ(0, ioeventfd(VMFD, PORT, 4, efd2, PIO | DM, 1));
	/* PIO wins over virtio-ccw: that is a PIO duplicate. */
	EXPECT_ERRNO(EEXIST, ioeventfd(VMFD, PORT, 2, efd2, PIO | CCW | DM, 2));
	close(efd2);
}

/* No ENOSPC: ioeventfds do not count towards NR_IOBUS_DEVS. */
TEST_F(io, more_than_nr_iobus_devs)
{
	int n = NR_IOBUS_DEVS + 24;

	for (int i = 0; i < n; i++) {
		ASSERT_EQ(0, ioeventfd(VMFD, i, 1, EFD, PIO, 0))
			TH_LOG("ioeventfd %d: %s", i, strerror(errno));
	}
	for (int i = 0; i < n; i += 2) {
		ASSERT_EQ(0, ioeventfd(VMFD, i, 1, EFD, PIO | DEAS, 0))
			TH_LOG("deassign %d: %s", i, strerror(errno));
	}
	/* The other half stays until the VM goes. */
}

/* --- deassign errors --- */

TEST_F(io, deassign_errors)
{
	int efd2 = eventfd(0, EFD_NONBLOCK);

	ASSERT_GE(efd2, 0);
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 4, EFD, DEAS, 0));
	ASSIGN(M, 4, EFD, DM, 5);
	/* Each field must be the assigned one. */
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 4, efd2, DEAS | DM, 5));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 4, EFD, DEAS | DM, 6));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 4, EFD, DEAS, 5));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 2, EFD, DEAS | DM, 5));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M + 4, 4, EFD, DEAS | DM, 5));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 4, EFD, DEAS | DM | PIO, 5));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 4, EFD, DEAS | DM | CCW, 5));
	/* A deassign is not validated: odd lengths and flags find nothing. */
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 3, EFD, DEAS, 0));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, ~0ULL, 8, EFD, DEAS, 0));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 0, EFD, DEAS | DM, 0));
	EXPECT_ERRNO(EBADF, ioeventfd(VMFD, M, 4, -1, DEAS | DM, 5));
	EXPECT_ERRNO(EINVAL, ioeventfd(VMFD, M, 4, VMFD, DEAS | DM, 5));
	/* ...and a flag KVM does not know does not stop it. */
	EXPECT_EQ(0, ioeventfd(VMFD, M, 4, EFD, DEAS | DM | 1 << 9, 5));
	EXPECT_ERRNO(ENOENT, ioeventfd(VMFD, M, 4, EFD, DEAS | DM, 5));
	/* Any fd of the same eventfd names it. */
	ASSIGN(PORT, 0, EFD, PIO, 0);
	int dup_fd = dup(EFD);

	ASSERT_GE(dup_fd, 0);
	EXPECT_EQ(0, ioeventfd(VMFD, PORT, 0, dup_fd, PIO | DEAS, 0));
	close(dup_fd);
	close(efd2);
}

/* --- PIO --- */

GUEST_CODE(out_sizes, 64,
	"mov dx, 0x1234\n"
	"mov eax, 0x11223344\n"
	"out dx, al\n"
	"out dx, al\n"
	"mov dx, 0x1236\n"
	"out dx, ax\n"
	"mov dx, 0x1238\n"
	"out dx, eax\n"
	"mov ecx, 0x600d\n"
	"hlt\n");

TEST_F(io, pio_out_signals_without_exit)
{
	int e2 = eventfd(0, EFD_NONBLOCK), e4 = eventfd(0, EFD_NONBLOCK);

	ASSERT_GE(e2, 0);
	ASSERT_GE(e4, 0);
	ASSIGN(PORT, 1, EFD, PIO, 0);
	ASSIGN(PORT + 2, 2, e2, PIO, 0);
	ASSIGN(PORT + 4, 4, e4, PIO, 0);
	LOAD(out_sizes);
	RUN_TO_HLT();
	EXPECT_EQ(0x600dULL, self->regs.rcx);
	EXPECT_EQ(2ULL, efd_take(EFD));
	EXPECT_EQ(1ULL, efd_take(e2));
	EXPECT_EQ(1ULL, efd_take(e4));
	close(e2);
	close(e4);
}

GUEST_CODE(out_wrong_size, 64,
	"mov dx, 0x1234\n"
	"mov eax, 0x5678\n"
	"out dx, ax\n"
	"mov dx, 0x1236\n"
	"out dx, al\n"
	"hlt\n");

TEST_F(io, pio_other_size_exits)
{
	ASSIGN(PORT, 1, EFD, PIO, 0);
	ASSIGN(PORT + 2, 4, EFD, PIO, 0);
	LOAD(out_wrong_size);
	EXPECT_EQ(0x5678U, run_to_out(V, 2, PORT));
	EXPECT_EQ(0x78U, run_to_out(V, 1, PORT + 2));
	RUN_TO_HLT();
	EXPECT_EQ(0ULL, efd_take(EFD));
}

GUEST_CODE(out_dm, 64,
	"mov dx, 0x1234\n"
	"mov eax, 0xabcd1234\n"
	"out dx, eax\n"
	"mov eax, 0xabcd1235\n"
	"out dx, eax\n"
	"mov eax, 0xabcd1234\n"
	"out dx, eax\n"
	"hlt\n");

TEST_F(io, pio_datamatch)
{
	ASSIGN(PORT, 4, EFD, PIO | DM, 0xabcd1234);
	LOAD(out_dm);
	EXPECT_EQ(0xabcd1235U, run_to_out(V, 4, PORT));
	EXPECT_EQ(1ULL, efd_take(EFD));
	RUN_TO_HLT();
	EXPECT_EQ(1ULL, efd_take(EFD));
}

TEST_F(io, pio_any_length)
{
	ASSIGN(PORT, 0, EFD, PIO, 0);
	LOAD(out_dm);
	RUN_TO_HLT();
	EXPECT_EQ(3ULL, efd_take(EFD));
	LOAD(out_sizes);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	/* Two OUTs at 0x1234 signal; 0x1236 and 0x1238 exit. */
	run_to_out(V, 2, PORT + 2);
	run_to_out(V, 4, PORT + 4);
	RUN_TO_HLT();
	EXPECT_EQ(2ULL, efd_take(EFD));
}

GUEST_CODE(rep_outsb, 64,
	"mov dx, 0x1234\n"
	"mov rsi, 0x20000\n"
	"mov rcx, 6\n"
	"cld\n"
	"rep outsb\n"
	"hlt\n");

TEST_F(io, rep_outs_signals_each_element)
{
	memset(self->vm.mem + DATA_GPA, 7, 6);
	ASSIGN(PORT, 1, EFD, PIO, 0);
	LOAD(rep_outsb);
	RUN_TO_HLT();
	EXPECT_EQ(6ULL, efd_take(EFD));
	EXPECT_EQ(0ULL, self->regs.rcx);
	EXPECT_EQ(DATA_GPA + 6, self->regs.rsi);
}

TEST_F(io, rep_outs_datamatch_mixes_kernel_and_user)
{
	uint8_t data[6] = { 7, 7, 9, 7, 9, 9 };
	int user = 0;

	memcpy(self->vm.mem + DATA_GPA, data, sizeof(data));
	ASSIGN(PORT, 1, EFD, PIO | DM, 7);
	LOAD(rep_outsb);
	/* Every 9 reaches userspace, every 7 the eventfd. */
	for (;;) {
		vcpu_run(_metadata, V);
		if (V->run->exit_reason == KVM_EXIT_HLT)
			break;
		ASSERT_EQ(KVM_EXIT_IO, V->run->exit_reason);
		ASSERT_EQ(PORT, V->run->io.port);
		for (unsigned int i = 0; i < V->run->io.count; i++, user++) {
			EXPECT_EQ(9, ((uint8_t *)io_data(V))[i]);
		}
	}
	EXPECT_EQ(3, user);
	EXPECT_EQ(3ULL, efd_take(EFD));
	vcpu_get_regs(_metadata, V, &self->regs);
	EXPECT_EQ(0ULL, self->regs.rcx);
}

/* --- MMIO --- */

GUEST_CODE(mmio_writes, 64,
	"mov rbx, 0xd0000000\n"
	"mov byte ptr [rbx + 0x10], 1\n"
	"mov word ptr [rbx + 0x20], 2\n"
	"mov dword ptr [rbx + 0x30], 3\n"
	"mov rax, 0x1122334455667788\n"
	"mov qword ptr [rbx + 0x40], rax\n"
	"mov dword ptr [rbx + 0x30], 3\n"
	"mov ecx, 0x600d\n"
	"hlt\n");

TEST_F(io, mmio_write_signals_without_exit)
{
	int e8 = eventfd(0, EFD_NONBLOCK);

	ASSERT_GE(e8, 0);
	ASSIGN(M + 0x10, 1, EFD, 0, 0);
	ASSIGN(M + 0x20, 2, EFD, 0, 0);
	ASSIGN(M + 0x30, 4, EFD, 0, 0);
	ASSIGN(M + 0x40, 8, e8, DM, 0x1122334455667788ULL);
	LOAD(mmio_writes);
	RUN_TO_HLT();
	EXPECT_EQ(0x600dULL, self->regs.rcx);
	EXPECT_EQ(4ULL, efd_take(EFD));
	EXPECT_EQ(1ULL, efd_take(e8));
	close(e8);
}

TEST_F(io, mmio_mismatch_exits)
{
	ASSIGN(M + 0x10, 2, EFD, 0, 0);		/* a byte is written */
	ASSIGN(M + 0x21, 2, EFD, 0, 0);		/* not the address */
	ASSIGN(M + 0x30, 4, EFD, DM, 4);	/* not the value */
	ASSIGN(M + 0x40, 8, EFD, DM, 0x1122334455667789ULL);
	LOAD(mmio_writes);
	EXPECT_EQ(1ULL, run_to_mmio_write(V, M + 0x10, 1));
	EXPECT_EQ(2ULL, run_to_mmio_write(V, M + 0x20, 2));
	EXPECT_EQ(3ULL, run_to_mmio_write(V, M + 0x30, 4));
	EXPECT_EQ(0x1122334455667788ULL, run_to_mmio_write(V, M + 0x40, 8));
	EXPECT_EQ(3ULL, run_to_mmio_write(V, M + 0x30, 4));
	RUN_TO_HLT();
	EXPECT_EQ(0ULL, efd_take(EFD));
}

GUEST_CODE(mmio_any, 64,
	"mov rbx, 0xd0000000\n"
	"mov byte ptr [rbx + 0x10], 1\n"
	"mov word ptr [rbx + 0x10], 2\n"
	"mov dword ptr [rbx + 0x10], 3\n"
	"mov rax, -1\n"
	"mov qword ptr [rbx + 0x10], rax\n"
	"mov byte ptr [rbx + 0x11], 5\n"
	"hlt\n");

TEST_F(io, mmio_any_length)
{
	ASSIGN(M + 0x10, 0, EFD, 0, 0);
	LOAD(mmio_any);
	/* A write at another address still exits. */
	EXPECT_EQ(5ULL, run_to_mmio_write(V, M + 0x11, 1));
	EXPECT_EQ(4ULL, efd_take(EFD));
	RUN_TO_HLT();
	EXPECT_EQ(0ULL, efd_take(EFD));
}

GUEST_CODE(mmio_read, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, dword ptr [rbx + 0x30]\n"
	"hlt\n");

/* An ioeventfd has no read side: reads exit as usual. (Only a length that
 * is not 0: on VMX, KVM's fast-MMIO path also takes reads at a length-0
 * address once the page's MMIO entry is cached.) */
TEST_F(io, mmio_read_exits)
{
	ASSIGN(M + 0x30, 4, EFD, 0, 0);
	LOAD(mmio_read);
	run_to_mmio_read(V, M + 0x30, 4, 0xfeed);
	RUN_TO_HLT();
	EXPECT_EQ(0xfeedULL, self->regs.rax);
	EXPECT_EQ(0ULL, efd_take(EFD));
}

/* x86 accepts virtio-ccw ioeventfds, and nothing writes to their bus. */
TEST_F(io, virtio_ccw_bus_is_never_written)
{
	ASSIGN(M + 0x30, 4, EFD, CCW, 0);
	ASSIGN(M + 0x10, 1, EFD, CCW, 0);
	ASSIGN(PORT, 1, EFD, CCW, 0);
	LOAD(mmio_writes);
	EXPECT_EQ(1ULL, run_to_mmio_write(V, M + 0x10, 1));
	EXPECT_EQ(2ULL, run_to_mmio_write(V, M + 0x20, 2));
	EXPECT_EQ(3ULL, run_to_mmio_write(V, M + 0x30, 4));
	EXPECT_EQ(0ULL, efd_take(EFD));
	DEASSIGN(M + 0x30, 4, EFD, CCW, 0);
}

GUEST_CODE(ram_write, 64,
	"mov rbx, 0x20000\n"
	"mov dword ptr [rbx], 0x99\n"
	"mov dx, 0x1234\n"
	"out dx, al\n"
	"hlt\n");

/* An MMIO ioeventfd over RAM: the write goes to memory. */
TEST_F(io, ram_never_signals)
{
	ASSIGN(DATA_GPA, 4, EFD, 0, 0);
	ASSIGN(DATA_GPA, 1, EFD, PIO, 0);
	LOAD(ram_write);
	run_to_out(V, 1, PORT);
	RUN_TO_HLT();
	EXPECT_EQ(0x99U, mem_read32(&self->vm, DATA_GPA));
	EXPECT_EQ(0ULL, efd_take(EFD));
}

GUEST_CODE(mmio_split, 64,
	"mov rbx, 0xd0000ffc\n"
	"mov rax, 0x1122334455667788\n"
	"mov qword ptr [rbx], rax\n"
	"mov qword ptr [rbx], rax\n"
	"hlt\n");

/* A write split at a page boundary is matched page part by page part. */
TEST_F(io, mmio_page_split_write)
{
	int e2 = eventfd(0, EFD_NONBLOCK);

	ASSERT_GE(e2, 0);
	ASSIGN(M + 0x1000, 4, EFD, DM, 0x11223344);
	LOAD(mmio_split);
	/* The low half exits; the high half, on the next page, signals. */
	EXPECT_EQ(0x55667788ULL, run_to_mmio_write(V, M + 0xffc, 4));
	EXPECT_EQ(1ULL, efd_take(EFD));
	ASSIGN(M + 0xffc, 4, e2, 0, 0);
	RUN_TO_HLT();
	EXPECT_EQ(1ULL, efd_take(EFD));
	EXPECT_EQ(1ULL, efd_take(e2));
	close(e2);
}

/* --- lifetime --- */

GUEST_CODE(out_marker_out, 64,
	"mov dx, 0x1234\n"
	"out dx, al\n"
	"mov rbx, 0xd0000000\n"
	"mov dword ptr [rbx + 0x30], 3\n"
	"out 0x80, al\n"
	"out dx, al\n"
	"mov dword ptr [rbx + 0x30], 3\n"
	"hlt\n");

TEST_F(io, deassign_stops_signalling)
{
	ASSIGN(PORT, 1, EFD, PIO, 0);
	ASSIGN(M + 0x30, 4, EFD, 0, 0);
	LOAD(out_marker_out);
	run_to_out(V, 1, 0x80);
	EXPECT_EQ(2ULL, efd_take(EFD));
	DEASSIGN(PORT, 1, EFD, PIO, 0);
	DEASSIGN(M + 0x30, 4, EFD, 0, 0);
	run_to_out(V, 1, PORT);
	EXPECT_EQ(3ULL, run_to_mmio_write(V, M + 0x30, 4));
	RUN_TO_HLT();
	EXPECT_EQ(0ULL, efd_take(EFD));
}

TEST_F(io, eventfd_closed_after_assign)
{
	int keep = dup(EFD), old = EFD;

	ASSERT_GE(keep, 0);
	ASSIGN(PORT, 1, EFD, PIO, 0);
	ASSIGN(M + 0x30, 4, EFD, 0, 0);
	close(EFD);
	self->efd = -1;
	LOAD(out_marker_out);
	run_to_out(V, 1, 0x80);
	/* The VM's reference keeps the eventfd; another fd still reads it. */
	EXPECT_EQ(2ULL, efd_take(keep));
	/* The closed fd no longer names it; the kept one does. */
	EXPECT_ERRNO(EBADF, ioeventfd(VMFD, PORT, 1, old, PIO | DEAS, 0));
	EXPECT_EQ(0, ioeventfd(VMFD, PORT, 1, keep, PIO | DEAS, 0));
	run_to_out(V, 1, PORT);
	RUN_TO_HLT();
	EXPECT_EQ(1ULL, efd_take(keep));
	close(keep);
}

TEST_F(io, eventfd_closed_and_forgotten)
{
	/* No fd left at all: the guest still signals, the VM puts it. */
	ASSIGN(PORT, 1, EFD, PIO, 0);
	ASSIGN(M + 0x30, 0, EFD, 0, 0);
	close(EFD);
	self->efd = -1;
	LOAD(out_marker_out);
	run_to_out(V, 1, 0x80);
	RUN_TO_HLT();
}

GUEST_CODE(out_loop, 64,
	"mov dx, 0x1234\n"
	"1: out dx, al\n"
	"out 0x80, al\n"
	"jmp 1b\n");

struct looper {
	struct vcpu *vcpu;
	unsigned long rounds;	/* marker exits to run */
	unsigned long user;	/* OUTs to PORT that reached userspace */
	int bad;		/* an unexpected exit or KVM_RUN error */
};

static void *looper_main(void *arg)
{
	struct looper *l = arg;
	struct kvm_run *run = l->vcpu->run;

	for (unsigned long done = 0; done < l->rounds;) {
		if (ioctl(l->vcpu->fd, KVM_RUN, 0) || run->exit_reason != KVM_EXIT_IO) {
			l->bad = 1;
			break;
		}
		if (run->io.port == PORT)
			l->user++;
		else if (run->io.port == 0x80)
			done++;
		else
			l->bad = 1;
	}
	return NULL;
}

/*
 * Assigns and deassigns while the guest writes: every OUT to the port is
 * either signalled or exits, exactly once (KASAN and lockdep watch the
 * table being replaced under the reader).
 */
TEST_F(io, assign_deassign_while_the_guest_writes)
{
	struct looper l = { .vcpu = V, .rounds = test_scaled(2000) };
	pthread_t t;
	int flips = 0;

	LOAD(out_loop);
	ASSERT_EQ(0, pthread_create(&t, NULL, looper_main, &l));
	for (; flips < 200; flips++) {
		uint32_t flags = flips & 1 ? PIO | DEAS : PIO;

		EXPECT_EQ(0, ioeventfd(VMFD, PORT, 1, EFD, flags, 0));
		usleep(500);
	}
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(0, l.bad);
	EXPECT_EQ(l.rounds, l.user + efd_take(EFD));
	TH_LOG("%lu OUTs: %lu exited", l.rounds, l.user);
}

TEST(vm_destroy_with_ioeventfds)
{
	struct vm vm;
	int efd = eventfd(0, EFD_NONBLOCK);
	int gone = eventfd(0, 0);

	ASSERT_GE(efd, 0);
	ASSERT_GE(gone, 0);
	vm_create(_metadata, &vm);
	for (int i = 0; i < 64; i++) {
		ASSERT_EQ(0, ioeventfd(vm.fd, PORT + i, 1, efd,
				       KVM_IOEVENTFD_FLAG_PIO, 0));
		ASSERT_EQ(0, ioeventfd(vm.fd, M + 8 * i, 0, efd, 0, 0));
		ASSERT_EQ(0, ioeventfd(vm.fd, M + 8 * i, 4, gone,
				       KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY, 0));
	}
	close(gone);
	vm_destroy(&vm);
	/* The eventfd outlives the VM and still works. */
	uint64_t one = 1, v = 0;

	EXPECT_EQ((ssize_t)sizeof(one), write(efd, &one, sizeof(one)));
	EXPECT_EQ((ssize_t)sizeof(v), read(efd, &v, sizeof(v)));
	EXPECT_EQ(1ULL, v);
	close(efd);
}

TEST_HARNESS_MAIN
