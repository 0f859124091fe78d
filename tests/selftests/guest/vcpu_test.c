// SPDX-License-Identifier: GPL-2.0
/*
 * vCPUs: KVM_CREATE_VCPU, the vCPU fd and its kvm_run mapping, the reset
 * state, KVM_GET/SET_REGS and KVM_GET/SET_SREGS, and the SREGS that KVM
 * refuses (arch/x86/kvm/regs.c: kvm_is_valid_sregs()), KVM_GET/SET_DEBUGREGS
 * and KVM_GET/SET_XCRS.
 */
#include <cpuid.h>
#include <limits.h>
#include <linux/limits.h>

#include "vm_lib.h"

FIXTURE(vc) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(vc)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
}

FIXTURE_TEARDOWN(vc)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

TEST(vcpu_capabilities_are_reported)
{
	int fd = open_kvm_dev(_metadata);
	int nr = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	int max = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	int max_id = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);

	EXPECT_LE(1, nr);
	EXPECT_LE(nr, max);
	EXPECT_LE(max, max_id);
	close(fd);
}

TEST(duplicate_vcpu_id_is_eexist)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	int a = ioctl(vm, KVM_CREATE_VCPU, 3);

	ASSERT_LE(0, a) TH_LOG("KVM_CREATE_VCPU: %s", strerror(errno));
	EXPECT_ERRNO(EEXIST, ioctl(vm, KVM_CREATE_VCPU, 3));
	close(a);
	/* Closing the fd does not free the id: the vCPU lives with the VM. */
	EXPECT_ERRNO(EEXIST, ioctl(vm, KVM_CREATE_VCPU, 3));
	close(vm);
	close(fd);
}

TEST(vcpu_id_at_max_vcpu_id_is_einval)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	int max_id = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
	int last;

	ASSERT_LT(0, max_id);
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_CREATE_VCPU, max_id));
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_CREATE_VCPU, -1L));
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_CREATE_VCPU, 1UL << 32));
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_CREATE_VCPU, (unsigned long)INT_MAX));
	last = ioctl(vm, KVM_CREATE_VCPU, max_id - 1);
	EXPECT_LE(0, last) TH_LOG("id %d: %s", max_id - 1, strerror(errno));
	close(last);
	close(vm);
	close(fd);
}

TEST(vcpu_fd_is_anon_inode_kvm_vcpu_n)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	int v = ioctl(vm, KVM_CREATE_VCPU, 7);
	char path[64], link[PATH_MAX] = { 0 };

	ASSERT_LE(0, v) TH_LOG("KVM_CREATE_VCPU: %s", strerror(errno));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", v);
	ASSERT_LT(0, readlink(path, link, sizeof(link) - 1));
	EXPECT_STREQ("anon_inode:kvm-vcpu:7", link);
	EXPECT_EQ(FD_CLOEXEC, fcntl(v, F_GETFD) & FD_CLOEXEC);
	EXPECT_EQ(O_RDWR, fcntl(v, F_GETFL) & O_ACCMODE);
	close(v);
	close(vm);
	close(fd);
}

TEST(vcpu_survives_vm_fd_close)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	close(vm.fd);
	close(vm.sys);
	vcpu_get_regs(_metadata, &v, &regs);
	EXPECT_EQ(0xfff0ULL, regs.rip);
	vcpu_destroy(&vm, &v);
	munmap(vm.mem, vm.mem_size);
}

TEST_F(vc, kvm_run_mapping_is_shared_with_kernel)
{
	struct kvm_run *again;

	/* A second mapping of the same vCPU sees what the first one wrote. */
	again = mmap(NULL, self->vm.run_size, PROT_READ | PROT_WRITE,
		     MAP_SHARED, self->vcpu.fd, 0);
	ASSERT_NE(MAP_FAILED, again);
	self->vcpu.run->immediate_exit = 1;
	EXPECT_EQ(1, again->immediate_exit);
	self->vcpu.run->immediate_exit = 0;
	/* The whole of KVM_GET_VCPU_MMAP_SIZE is accessible. */
	((volatile uint8_t *)again)[self->vm.run_size - 1];
	munmap(again, self->vm.run_size);
}

TEST_F(vc, reset_regs_are_architectural)
{
	struct kvm_regs r;

	vcpu_get_regs(_metadata, &self->vcpu, &r);
	EXPECT_EQ(0xfff0ULL, r.rip);
	EXPECT_EQ(0x2ULL, r.rflags);
	EXPECT_EQ(0ULL, r.rax);
	EXPECT_EQ(0ULL, r.rbx);
	EXPECT_EQ(0ULL, r.rcx);
	/* RDX holds the CPU signature: its value is implementation's. */
	TH_LOG("reset rdx = %#llx", r.rdx);
	EXPECT_EQ(0ULL, r.rsi);
	EXPECT_EQ(0ULL, r.rdi);
	EXPECT_EQ(0ULL, r.rsp);
	EXPECT_EQ(0ULL, r.rbp);
	EXPECT_EQ(0ULL, r.r8 | r.r9 | r.r10 | r.r11 | r.r12 | r.r13 |
		  r.r14 | r.r15);
}

static void expect_real_seg(struct __test_metadata *_metadata,
			    const char *name, struct kvm_segment *s,
			    uint16_t sel, uint64_t base)
{
	EXPECT_EQ(sel, s->selector) TH_LOG("%s", name);
	EXPECT_EQ(base, s->base) TH_LOG("%s", name);
	EXPECT_EQ(0xffffU, s->limit) TH_LOG("%s", name);
	EXPECT_EQ(1, s->present) TH_LOG("%s", name);
	EXPECT_EQ(0, s->dpl) TH_LOG("%s", name);
	EXPECT_EQ(0, s->db) TH_LOG("%s", name);
	EXPECT_EQ(0, s->l) TH_LOG("%s", name);
	EXPECT_EQ(0, s->g) TH_LOG("%s", name);
}

TEST_F(vc, reset_sregs_are_architectural)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	expect_real_seg(_metadata, "cs", &s.cs, 0xf000, 0xffff0000);
	EXPECT_EQ(1, s.cs.s);
	EXPECT_EQ(0xa, s.cs.type & 0xa);	/* code, readable */
	expect_real_seg(_metadata, "ds", &s.ds, 0, 0);
	expect_real_seg(_metadata, "es", &s.es, 0, 0);
	expect_real_seg(_metadata, "fs", &s.fs, 0, 0);
	expect_real_seg(_metadata, "gs", &s.gs, 0, 0);
	expect_real_seg(_metadata, "ss", &s.ss, 0, 0);
	EXPECT_EQ(0x2, s.ds.type & 0xa);	/* data, writable */
	EXPECT_EQ(0x2, s.ss.type & 0xa);
	EXPECT_EQ(1, s.ds.s);
	EXPECT_EQ(0, s.ldt.selector);
	EXPECT_EQ(0ULL, s.ldt.base);
	EXPECT_EQ(0xffffU, s.ldt.limit);
	EXPECT_EQ(0, s.tr.selector);
	EXPECT_EQ(0ULL, s.tr.base);
	EXPECT_EQ(0xffffU, s.tr.limit);
	EXPECT_EQ(1, s.tr.present);
	EXPECT_EQ(0ULL, s.gdt.base);
	EXPECT_EQ(0xffff, s.gdt.limit);
	EXPECT_EQ(0ULL, s.idt.base);
	EXPECT_EQ(0xffff, s.idt.limit);
	EXPECT_EQ(0x60000010ULL, s.cr0);
	EXPECT_EQ(0ULL, s.cr2);
	EXPECT_EQ(0ULL, s.cr3);
	EXPECT_EQ(0ULL, s.cr4);
	EXPECT_EQ(0ULL, s.cr8);
	EXPECT_EQ(0ULL, s.efer);
	for (int i = 0; i < 4; i++) {
		EXPECT_EQ(0ULL, s.interrupt_bitmap[i]);
	}
	TH_LOG("reset apic_base = %#llx, cs.type %u, tr.type %u, ldt.type %u",
	       s.apic_base, s.cs.type, s.tr.type, s.ldt.type);
}

/*
 * The segment types at RESET are each vendor's KVM's own: SVM's init_vmcb
 * (code execute/read, data read/write, a busy 16-bit TSS) as
 * svm_get_segment reports them (accessed bit on DS-GS, busy bit on TR),
 * VMX's vmx_vcpu_reset (0x9b/0x93 access rights, a busy 32-bit TSS).
 */
TEST_F(vc, reset_segment_types_are_the_vendors)
{
	unsigned int a, b, c, d;
	struct kvm_sregs s;
	int amd;

	ASSERT_TRUE(__get_cpuid(0, &a, &b, &c, &d));
	amd = b == 0x68747541; /* "Auth" */
	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	EXPECT_EQ(amd ? 0xa : 0xb, s.cs.type);
	EXPECT_EQ(3, s.ds.type);
	EXPECT_EQ(3, s.es.type);
	EXPECT_EQ(3, s.fs.type);
	EXPECT_EQ(3, s.gs.type);
	EXPECT_EQ(amd ? 2 : 3, s.ss.type);
	EXPECT_EQ(2, s.ldt.type);
	EXPECT_EQ(amd ? 3 : 0xb, s.tr.type);
	EXPECT_EQ(0, s.ldt.s);
	EXPECT_EQ(0, s.tr.s);
}

/* At reset the vCPU fetches its first instruction at 0xfffffff0. */
GUEST_CODE(reset_vector, 16,
	"mov al, 0x99\n"
	"out 0x10, al\n"
	"hlt\n");

TEST_F(vc, first_instruction_is_fetched_at_fffffff0)
{
	uint8_t *top = alloc_guest_mem(_metadata, 4096);
	struct kvm_regs regs;

	memcpy(top + 0xff0, reset_vector, reset_vector_end - reset_vector);
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0xfffff000, 4096, top));
	EXPECT_EQ(0x99, run_to_out(&self->vcpu, 1, 0x10));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(0xfff0ULL + (reset_vector_end - reset_vector), regs.rip);
	munmap(top, 4096);
}

TEST_F(vc, set_regs_round_trip)
{
	struct kvm_regs in = {
		.rax = 0x1111111111111111, .rbx = 0x2222222222222222,
		.rcx = 0x3333333333333333, .rdx = 0x4444444444444444,
		.rsi = 0x5555555555555555, .rdi = 0x6666666666666666,
		.rsp = 0x7777777777777777, .rbp = 0x8888888888888888,
		.r8 = 8, .r9 = 9, .r10 = 10, .r11 = 11, .r12 = 12,
		.r13 = 13, .r14 = 14, .r15 = 0xffffffffffffffff,
		.rip = 0x123456789a, .rflags = 0x2 | X86_RFLAGS_CF | X86_RFLAGS_ZF,
	}, out;

	vcpu_set_regs(_metadata, &self->vcpu, &in);
	vcpu_get_regs(_metadata, &self->vcpu, &out);
	EXPECT_EQ(0, memcmp(&in, &out, sizeof(in)));
}

TEST_F(vc, set_regs_keeps_rflags_bit_1_set)
{
	struct kvm_regs r;

	vcpu_get_regs(_metadata, &self->vcpu, &r);
	r.rflags = 0;
	vcpu_set_regs(_metadata, &self->vcpu, &r);
	vcpu_get_regs(_metadata, &self->vcpu, &r);
	EXPECT_EQ(0x2ULL, r.rflags);
}

static void expect_seg_eq(struct __test_metadata *_metadata, const char *n,
			  struct kvm_segment *a, struct kvm_segment *b)
{
	EXPECT_EQ(a->base, b->base) TH_LOG("%s", n);
	EXPECT_EQ(a->limit, b->limit) TH_LOG("%s", n);
	EXPECT_EQ(a->selector, b->selector) TH_LOG("%s", n);
	EXPECT_EQ(a->type, b->type) TH_LOG("%s", n);
	EXPECT_EQ(a->present, b->present) TH_LOG("%s", n);
	EXPECT_EQ(a->dpl, b->dpl) TH_LOG("%s", n);
	EXPECT_EQ(a->db, b->db) TH_LOG("%s", n);
	EXPECT_EQ(a->s, b->s) TH_LOG("%s", n);
	EXPECT_EQ(a->l, b->l) TH_LOG("%s", n);
	EXPECT_EQ(a->g, b->g) TH_LOG("%s", n);
}

TEST_F(vc, set_sregs_round_trip_protected_mode)
{
	struct kvm_sregs in, out;

	vcpu_get_sregs(_metadata, &self->vcpu, &in);
	protected_sregs(&self->vm, &in, 0);
	in.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
	in.cr2 = 0xdead000;
	in.cr3 = PT_GPA;
	in.cr8 = 5;
	in.idt.base = 0x4000;
	in.idt.limit = 0x7ff;
	vcpu_set_sregs(_metadata, &self->vcpu, &in);
	vcpu_get_sregs(_metadata, &self->vcpu, &out);
	expect_seg_eq(_metadata, "cs", &in.cs, &out.cs);
	expect_seg_eq(_metadata, "ds", &in.ds, &out.ds);
	expect_seg_eq(_metadata, "ss", &in.ss, &out.ss);
	expect_seg_eq(_metadata, "tr", &in.tr, &out.tr);
	EXPECT_EQ(in.cr0, out.cr0);
	EXPECT_EQ(in.cr2, out.cr2);
	EXPECT_EQ(in.cr3, out.cr3);
	EXPECT_EQ(in.cr4, out.cr4);
	EXPECT_EQ(in.cr8, out.cr8);
	EXPECT_EQ(in.efer, out.efer);
	EXPECT_EQ(in.gdt.base, out.gdt.base);
	EXPECT_EQ(in.gdt.limit, out.gdt.limit);
	EXPECT_EQ(in.idt.base, out.idt.base);
	EXPECT_EQ(in.idt.limit, out.idt.limit);
}

TEST_F(vc, set_sregs_round_trip_long_mode)
{
	struct kvm_sregs in, out;

	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	vcpu_get_sregs(_metadata, &self->vcpu, &in);
	protected_sregs(&self->vm, &in, 1);
	in.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
	in.cr3 = PT_GPA;
	in.cr4 = X86_CR4_PAE;
	in.efer = EFER_LME | EFER_LMA;
	vcpu_set_sregs(_metadata, &self->vcpu, &in);
	vcpu_get_sregs(_metadata, &self->vcpu, &out);
	expect_seg_eq(_metadata, "cs", &in.cs, &out.cs);
	EXPECT_EQ(in.cr0, out.cr0);
	EXPECT_EQ(in.cr3, out.cr3);
	EXPECT_EQ(in.cr4, out.cr4);
	EXPECT_EQ(in.efer, out.efer);
}

/* SET_SREGS with @s must fail with EINVAL and leave the state alone. */
static void expect_sregs_einval(struct __test_metadata *_metadata,
				struct vcpu *vcpu, struct kvm_sregs *s)
{
	struct kvm_sregs before, after;

	vcpu_get_sregs(_metadata, vcpu, &before);
	EXPECT_ERRNO(EINVAL, ioctl(vcpu->fd, KVM_SET_SREGS, s));
	vcpu_get_sregs(_metadata, vcpu, &after);
	EXPECT_EQ(0, memcmp(&before, &after, sizeof(before)));
}

TEST_F(vc, sregs_cr0_pg_without_pe_is_einval)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	s.cr0 = X86_CR0_ET | X86_CR0_PG;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_cr0_nw_without_cd_is_einval)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	s.cr0 = X86_CR0_ET | X86_CR0_NW;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_cr0_high_bits_are_einval)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	s.cr0 |= 1ULL << 32;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_cr4_reserved_bit_is_einval)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	s.cr4 = 1ULL << 15;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
	s.cr4 = 1ULL << 40;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_efer_reserved_bit_is_einval)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	s.efer = 1ULL << 2;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_efer_lma_without_paging_is_einval)
{
	struct kvm_sregs s;

	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	s.efer = EFER_LME | EFER_LMA;	/* CR0.PG clear */
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_long_mode_without_lma_is_einval)
{
	struct kvm_sregs s;

	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	protected_sregs(&self->vm, &s, 1);
	s.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
	s.cr3 = PT_GPA;
	s.cr4 = X86_CR4_PAE;
	s.efer = EFER_LME;		/* LME and PG: LMA must be set */
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_long_mode_without_pae_is_einval)
{
	struct kvm_sregs s;

	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	protected_sregs(&self->vm, &s, 1);
	s.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
	s.cr3 = PT_GPA;
	s.cr4 = 0;
	s.efer = EFER_LME | EFER_LMA;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

TEST_F(vc, sregs_64bit_cs_outside_long_mode_is_einval)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	protected_sregs(&self->vm, &s, 1);	/* CS.L = 1 */
	s.cr0 = X86_CR0_PE | X86_CR0_ET;
	s.efer = 0;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
}

/*
 * KVM checks EFER against the guest's CPUID: without long mode in the
 * vCPU's CPUID (no KVM_SET_CPUID2 yet), EFER.LME is refused.
 */
TEST_F(vc, sregs_efer_lme_needs_long_mode_in_guest_cpuid)
{
	struct kvm_sregs s;

	vcpu_get_sregs(_metadata, &self->vcpu, &s);
	s.efer = EFER_LME;
	expect_sregs_einval(_metadata, &self->vcpu, &s);
	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_SREGS, &s))
		TH_LOG("KVM_SET_SREGS: %s", strerror(errno));
}

GUEST_CODE(vc_hlt, 16,
	"hlt\n");

TEST_F(vc, set_cpuid2_after_run_must_not_change)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[1];
	} cpuid = {
		.c.nent = 1,
		.e[0] = { .function = 0, .eax = 0, .ebx = 1 },
	};

	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &cpuid));
	vcpu_setup_real(_metadata, &self->vcpu);
	vm_load_code(&self->vm, vc_hlt);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	/* The same CPUID again is fine; a different one is not. */
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &cpuid));
	cpuid.e[0].ebx = 2;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &cpuid));
}

/* The guest reads back DR0, DR6 and DR7. */
GUEST_CODE(vc_read_drs, 16,
	"mov eax, dr0\n"
	"out 0x10, eax\n"
	"mov eax, dr6\n"
	"out 0x11, eax\n"
	"mov eax, dr7\n"
	"out 0x12, eax\n"
	"hlt\n");

TEST_F(vc, debugregs_reset_round_trip_and_reach_the_guest)
{
	struct kvm_debugregs d, r;

	ASSERT_EQ(1, ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_DEBUGREGS));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_DEBUGREGS, &d));
	EXPECT_EQ(0, d.db[0] | d.db[1] | d.db[2] | d.db[3]);
	EXPECT_EQ(0xffff0ff0ULL, d.dr6);
	EXPECT_EQ(0x400ULL, d.dr7);
	EXPECT_EQ(0, d.flags);

	memset(&d, 0, sizeof(d));
	d.db[0] = 0x1000;
	d.db[1] = 0x2000;
	d.db[2] = 0xffffffff80000000ULL;
	d.db[3] = 0x4000;
	d.dr6 = 0xffff0ff1;
	d.dr7 = 0x401;
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_DEBUGREGS, &d));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_DEBUGREGS, &r));
	EXPECT_EQ(0, memcmp(d.db, r.db, sizeof(d.db)));
	EXPECT_EQ(d.dr6, r.dr6);
	EXPECT_EQ(d.dr7, r.dr7);

	vcpu_setup_real(_metadata, &self->vcpu);
	vm_load_code(&self->vm, vc_read_drs);
	EXPECT_EQ(0x1000, run_to_out(&self->vcpu, 4, 0x10));
	EXPECT_EQ(0xffff0ff1, run_to_out(&self->vcpu, 4, 0x11));
	EXPECT_EQ(0x401, run_to_out(&self->vcpu, 4, 0x12));
}

TEST_F(vc, debugregs_flags_and_high_bits_are_einval)
{
	struct kvm_debugregs d;

	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_DEBUGREGS, &d));
	d.flags = 1;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_DEBUGREGS, &d));
	d.flags = 0;
	d.dr6 |= 1ULL << 32;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_DEBUGREGS, &d));
	d.dr6 = 0xffff0ff0;
	d.dr7 |= 1ULL << 40;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_DEBUGREGS, &d));
	/* Nothing was changed by the refused calls. */
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_DEBUGREGS, &d));
	EXPECT_EQ(0x400ULL, d.dr7);
}

/*
 * XCR0: 1 at RESET; KVM_SET_XCRS follows XSETBV's rules against the
 * guest's CPUID (only x87 without CPUID leaf 0xD); the first XCR0 entry
 * counts, other XCR numbers are ignored; too many entries or flags are
 * EINVAL.
 */
TEST_F(vc, xcrs_reset_rules_and_round_trip)
{
	struct kvm_xcrs x;
	unsigned int a, b, c, d;

	if (!ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_XCRS))
		SKIP(return, "no KVM_CAP_XCRS (host without XSAVE)");
	memset(&x, 0xff, sizeof(x));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_XCRS, &x));
	EXPECT_EQ(1, x.nr_xcrs);
	EXPECT_EQ(0, x.flags);
	EXPECT_EQ(0, x.xcrs[0].xcr);
	EXPECT_EQ(1ULL, x.xcrs[0].value);

	memset(&x, 0, sizeof(x));
	x.nr_xcrs = 1;
	x.xcrs[0].value = 3;	/* SSE: not in an empty CPUID */
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_XCRS, &x));
	x.xcrs[0].value = 0;	/* x87 is mandatory */
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_XCRS, &x));
	x.nr_xcrs = KVM_MAX_XCRS + 1;
	x.xcrs[0].value = 1;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_XCRS, &x));
	x.nr_xcrs = 1;
	x.flags = 1;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_XCRS, &x));
	x.flags = 0;
	x.xcrs[0].xcr = 1;	/* not XCR0: ignored */
	x.xcrs[0].value = 7;
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_XCRS, &x));

	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	ASSERT_TRUE(__get_cpuid_count(0xd, 0, &a, &b, &c, &d));
	if (!(a & 2))
		SKIP(return, "host XCR0 without SSE");
	x.nr_xcrs = 2;
	x.xcrs[0].xcr = 1;
	x.xcrs[0].value = 7;
	x.xcrs[1].xcr = 0;
	x.xcrs[1].value = 3;
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_XCRS, &x));
	memset(&x, 0, sizeof(x));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_XCRS, &x));
	EXPECT_EQ(1, x.nr_xcrs);
	EXPECT_EQ(3ULL, x.xcrs[0].value);
}

/* Without an in-kernel local APIC a vCPU is always RUNNABLE. */
TEST_F(vc, mp_state_without_irqchip_is_runnable_only)
{
	struct kvm_mp_state m = { .mp_state = 0xff };

	EXPECT_EQ(1, ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_MP_STATE));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_MP_STATE, &m));
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, m.mp_state);
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_MP_STATE, &m));
	for (unsigned int s = KVM_MP_STATE_UNINITIALIZED; s <= KVM_MP_STATE_SIPI_RECEIVED; s++) {
		m.mp_state = s;
		EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_MP_STATE, &m));
	}
	m.mp_state = 1000;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_MP_STATE, &m));
}

/*
 * The MSRs every VMM saves (SYSENTER, SYSCALL, KERNEL_GS_BASE, TSC, PAT,
 * MISC_ENABLE) read and write back with KVM_GET/SET_MSRS.
 */
TEST_F(vc, saved_msrs_round_trip)
{
	static const uint32_t idx[] = {
		0x174, 0x175, 0x176, 0x1a0, 0x277,
		0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102,
	};
	const unsigned int n = sizeof(idx) / sizeof(idx[0]);
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[16];
	} m = { .h.nmsrs = n };
	unsigned int a, b, c, d;
	int amd;

	ASSERT_TRUE(__get_cpuid(0, &a, &b, &c, &d));
	amd = b == 0x68747541; /* "Auth" */

	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	for (unsigned int i = 0; i < n; i++)
		m.e[i].index = idx[i];
	ASSERT_EQ((int)n, ioctl(self->vcpu.fd, KVM_GET_MSRS, &m));
	m.e[0].data = 0x10;			/* SYSENTER_CS */
	m.e[2].data = 0xffffffff81000000ULL;	/* SYSENTER_EIP */
	m.e[7].data = 0xffffffff81200000ULL;	/* LSTAR */
	ASSERT_EQ((int)n, ioctl(self->vcpu.fd, KVM_SET_MSRS, &m));
	for (unsigned int i = 0; i < n; i++)
		m.e[i].data = 0x5a5a;
	ASSERT_EQ((int)n, ioctl(self->vcpu.fd, KVM_GET_MSRS, &m));
	EXPECT_EQ(0x10ULL, m.e[0].data);
	/* AMD (and KVM on it, for an AMD guest) keeps 32 bits of SYSENTER_EIP. */
	EXPECT_EQ(amd ? 0x81000000ULL : 0xffffffff81000000ULL, m.e[2].data);
	EXPECT_EQ(0xffffffff81200000ULL, m.e[7].data);
	EXPECT_EQ(0x0007040600070406ULL, m.e[4].data);	/* PAT at RESET */
}

/*
 * KVM_TRANSLATE walks the guest's page tables as a supervisor read: the
 * identity without paging, the long-mode tables after vcpu_setup_long(),
 * valid 0 where nothing is mapped; KVM says writeable 1, usermode 0.
 */
TEST_F(vc, translate_walks_the_guest_page_tables)
{
	struct kvm_translation t = { .linear_address = 0x12345 };

	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_TRANSLATE, &t));
	EXPECT_EQ(1, t.valid);
	EXPECT_EQ(0x12345ULL, t.physical_address);

	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	memset(&t, 0, sizeof(t));
	t.linear_address = LONG_ALIAS_VA + 0x20123;
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_TRANSLATE, &t));
	EXPECT_EQ(1, t.valid);
	EXPECT_EQ(0x20123ULL, t.physical_address);
	EXPECT_EQ(1, t.writeable);
	EXPECT_EQ(0, t.usermode);

	memset(&t, 0, sizeof(t));
	t.linear_address = 0x0000700000000000ULL;	/* PML4 entry 224: empty */
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_TRANSLATE, &t));
	EXPECT_EQ(0, t.valid);
	EXPECT_EQ(~0ULL, t.physical_address);
}

/*
 * The guest TSC runs at the host's rate; setting that rate (or 0, "the
 * host's") works, and without TSC scaling a lower one is EINVAL.
 */
TEST_F(vc, tsc_khz_is_the_hosts_and_settable_to_it)
{
	int khz;

	EXPECT_EQ(1, ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_GET_TSC_KHZ));
	khz = ioctl(self->vcpu.fd, KVM_GET_TSC_KHZ, 0);
	ASSERT_GT(khz, 0) TH_LOG("KVM_GET_TSC_KHZ: %s", strerror(errno));
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_TSC_KHZ, khz));
	EXPECT_EQ(khz, ioctl(self->vcpu.fd, KVM_GET_TSC_KHZ, 0));
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_TSC_KHZ, 0));
	EXPECT_EQ(khz, ioctl(self->vcpu.fd, KVM_GET_TSC_KHZ, 0));
	if (!ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL))
		EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_TSC_KHZ, khz / 2));
}

TEST(vcpus_of_one_vm_have_separate_state)
{
	struct vm vm;
	struct vcpu a, b;
	struct kvm_regs r;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &a);
	vcpu_create(_metadata, &vm, 1, &b);
	vcpu_get_regs(_metadata, &a, &r);
	r.rax = 0xaaaa;
	vcpu_set_regs(_metadata, &a, &r);
	vcpu_get_regs(_metadata, &b, &r);
	EXPECT_EQ(0ULL, r.rax);
	EXPECT_EQ(0xfff0ULL, r.rip);
	vcpu_get_regs(_metadata, &a, &r);
	EXPECT_EQ(0xaaaaULL, r.rax);
	vcpu_destroy(&vm, &a);
	vcpu_destroy(&vm, &b);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN
