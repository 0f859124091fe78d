// SPDX-License-Identifier: GPL-2.0
/*
 * Guest FPU state and the VM clock: KVM_GET/SET_XSAVE, KVM_GET_XSAVE2 and
 * KVM_CAP_XSAVE2, KVM_GET/SET_FPU (arch/x86/kvm/x86.c and
 * fpu_copy_guest_fpstate_to_uabi / fpu_copy_uabi_to_guest_fpstate), their
 * errors, the state a guest sees and leaves behind, and KVM_GET/SET_CLOCK
 * with KVM_CAP_ADJUST_CLOCK (kvm_vm_ioctl_get_clock / set_clock).
 */
#include <cpuid.h>
#include <time.h>

#include "vm_lib.h"

/* Offsets in struct kvm_xsave (the standard XSAVE layout). */
#define XS_FCW		0
#define XS_FSW		2
#define XS_FTW		4
#define XS_MXCSR	24
#define XS_MXCSR_MASK	28
#define XS_ST		32
#define XS_XMM		160
#define XS_SW		464
#define XS_BV		512
#define XS_XCOMP	520
#define XS_EXT		576

#define XF_FP	1ULL
#define XF_SSE	2ULL
#define XF_YMM	4ULL

#define X86_CR4_OSFXSR		(1UL << 9)
#define X86_CR4_OSXMMEXCPT	(1UL << 10)
#define X86_CR4_OSXSAVE		(1UL << 18)

#define NS 1000000000ULL

static uint64_t get64(const void *p, int o)
{
	uint64_t v;

	memcpy(&v, (const uint8_t *)p + o, 8);
	return v;
}

static uint32_t get32(const void *p, int o)
{
	uint32_t v;

	memcpy(&v, (const uint8_t *)p + o, 4);
	return v;
}

static void put64(void *p, int o, uint64_t v)
{
	memcpy((uint8_t *)p + o, &v, 8);
}

static void put32(void *p, int o, uint32_t v)
{
	memcpy((uint8_t *)p + o, &v, 4);
}

static int host_osxsave(void)
{
	unsigned int a, b, c, d;

	__cpuid(1, a, b, c, d);
	return !!(c & (1u << 27));
}

static uint64_t host_xcr0(void)
{
	uint32_t lo, hi;

	asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (uint64_t)hi << 32 | lo;
}

/* The CPU's MXCSR_MASK, from this process's own FXSAVE. */
static uint32_t host_mxcsr_mask(void)
{
	uint8_t buf[512] __attribute__((aligned(16)));

	memset(buf, 0, sizeof(buf));
	asm volatile("fxsave64 %0" : "=m"(buf));
	return get32(buf, XS_MXCSR_MASK);
}

/* The YMM component's offset (CPUID 0xD.2 EBX), 0 without AVX state. */
static int ymm_offset(void)
{
	unsigned int a, b, c, d;

	if (!host_osxsave() || !(host_xcr0() & XF_YMM))
		return 0;
	__cpuid_count(0xd, 2, a, b, c, d);
	return b;
}

static void get_xsave(struct __test_metadata *_metadata, struct vcpu *v,
		      struct kvm_xsave *x)
{
	memset(x, 0xcc, sizeof(*x));
	ASSERT_EQ(0, ioctl(v->fd, KVM_GET_XSAVE, x))
		TH_LOG("KVM_GET_XSAVE: %s", strerror(errno));
}

static int set_xsave(struct vcpu *v, struct kvm_xsave *x)
{
	return ioctl(v->fd, KVM_SET_XSAVE, x);
}

/* An image with x87 and SSE state: FCW, MXCSR, ST0, XMM0 set. */
static void fpsse_image(struct kvm_xsave *x)
{
	uint8_t *b = (uint8_t *)x->region;

	memset(x, 0, sizeof(*x));
	b[XS_FCW] = 0x7f;
	b[XS_FCW + 1] = 0x02;		/* FCW 0x27f */
	put32(b, XS_MXCSR, 0x1fc0);	/* DAZ on */
	put64(b, XS_ST, 0x1122334455667788ULL);
	put64(b, XS_XMM, 0xa1a2a3a4a5a6a7a8ULL);
	put64(b, XS_XMM + 8, 0xb1b2b3b4b5b6b7b8ULL);
	put64(b, XS_BV, XF_FP | XF_SSE);
}

FIXTURE(st) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(st)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
}

FIXTURE_TEARDOWN(st)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

TEST(caps_xsave_xsave2_adjust_clock)
{
	int fd = open_kvm_dev(_metadata);

	EXPECT_EQ(1, ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE));
	/* At least struct kvm_xsave; more only with components above it. */
	EXPECT_LE(4096, ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2));
	/* KVM_CLOCK_VALID_FLAGS: TSC_STABLE | REALTIME | HOST_TSC. */
	EXPECT_EQ(0xe, ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK));
	close(fd);
}

/*
 * A new vCPU's image: XSTATE_BV 0, so every component shows its init
 * value (FCW 0x37f, MXCSR 0x1f80 and the CPU's MXCSR_MASK), and the
 * software-reserved words carry the host's XCR0.
 */
TEST_F(st, xsave_of_a_new_vcpu_is_the_init_state)
{
	struct kvm_xsave x;
	uint8_t *b = (uint8_t *)x.region;

	if (!host_osxsave())
		SKIP(return, "host without XSAVE");
	get_xsave(_metadata, &self->vcpu, &x);
	EXPECT_EQ(0x37f, b[XS_FCW] | b[XS_FCW + 1] << 8);
	EXPECT_EQ(0x1f80, get32(b, XS_MXCSR));
	EXPECT_EQ(host_mxcsr_mask(), get32(b, XS_MXCSR_MASK));
	EXPECT_EQ(host_xcr0(), get64(b, XS_SW));
	EXPECT_EQ(0, get64(b, XS_BV));
	/* Everything else is 0. */
	put32(b, XS_FCW, 0);
	put64(b, XS_MXCSR, 0);
	put64(b, XS_SW, 0);
	for (int i = 0; i < 4096; i++) {
		if (b[i]) {
			EXPECT_EQ(0, b[i]) TH_LOG("byte %d", i);
			break;
		}
	}
}

TEST_F(st, xsave2_is_xsave_at_the_cap_size)
{
	int size = ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	struct kvm_xsave x;
	uint8_t *buf;

	ASSERT_LE(4096, size);
	buf = calloc(1, size + 64);
	ASSERT_NE(NULL, buf);
	memset(buf, 0xcc, size + 64);
	fpsse_image(&x);
	ASSERT_EQ(0, set_xsave(&self->vcpu, &x));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_XSAVE2, buf));
	get_xsave(_metadata, &self->vcpu, &x);
	EXPECT_EQ(0, memcmp(buf, x.region, 4096));
	/* Exactly the cap's size is written. */
	EXPECT_EQ(0xcc, buf[size]);
	free(buf);
}

/* x87 and SSE state round-trip, even without XSAVE in the guest's CPUID. */
TEST_F(st, xsave_fp_sse_round_trip)
{
	struct kvm_xsave in, out;

	fpsse_image(&in);
	ASSERT_EQ(0, set_xsave(&self->vcpu, &in));
	get_xsave(_metadata, &self->vcpu, &out);
	EXPECT_EQ(0, memcmp(in.region, out.region, XS_MXCSR_MASK));
	EXPECT_EQ(0, memcmp((uint8_t *)in.region + XS_ST,
			    (uint8_t *)out.region + XS_ST, 416 - XS_ST));
	EXPECT_EQ(XF_FP | XF_SSE, get64(out.region, XS_BV));
	EXPECT_EQ(0, get64(out.region, XS_XCOMP));
}

/*
 * AVX state is shown only when the guest's CPUID allows it: without a
 * CPUID it is accepted but neither flagged nor shown; with KVM's supported
 * CPUID it round-trips.
 */
TEST_F(st, xsave_ymm_follows_the_guest_cpuid)
{
	int ymm = ymm_offset();
	struct kvm_xsave in, out;

	if (!ymm)
		SKIP(return, "host without AVX state");
	fpsse_image(&in);
	put64(in.region, XS_BV, XF_FP | XF_SSE | XF_YMM);
	put64(in.region, ymm, 0xc1c2c3c4c5c6c7c8ULL);
	put64(in.region, ymm + 8 * 31, 0xd1d2d3d4d5d6d7d8ULL);
	ASSERT_EQ(0, set_xsave(&self->vcpu, &in));
	get_xsave(_metadata, &self->vcpu, &out);
	EXPECT_EQ(XF_FP | XF_SSE, get64(out.region, XS_BV));
	EXPECT_EQ(0, get64(out.region, ymm));

	vcpu_set_supported_cpuid(_metadata, &self->vm, &self->vcpu);
	get_xsave(_metadata, &self->vcpu, &out);
	EXPECT_EQ(XF_FP | XF_SSE | XF_YMM, get64(out.region, XS_BV) & 7);
	EXPECT_EQ(0xc1c2c3c4c5c6c7c8ULL, get64(out.region, ymm));
	EXPECT_EQ(0xd1d2d3d4d5d6d7d8ULL, get64(out.region, ymm + 8 * 31));
}

/*
 * What KVM_SET_XSAVE refuses: components nobody offers, a compacted image,
 * reserved header bytes, reserved MXCSR bits (only checked when a
 * component that holds MXCSR is given). A refused image changes nothing.
 */
TEST_F(st, set_xsave_errors)
{
	struct kvm_xsave x, out;
	uint32_t mask = host_mxcsr_mask() ?: 0xffbf;

	if (!host_osxsave())
		SKIP(return, "host without XSAVE");
	fpsse_image(&x);
	put64(x.region, XS_BV, XF_FP | 1ULL << 63);
	EXPECT_ERRNO(EINVAL, set_xsave(&self->vcpu, &x));
	/* Bit 8 (PT) is a supervisor component: never in the UABI. */
	put64(x.region, XS_BV, XF_FP | 1ULL << 8);
	EXPECT_ERRNO(EINVAL, set_xsave(&self->vcpu, &x));

	fpsse_image(&x);
	put64(x.region, XS_XCOMP, 1ULL << 63 | 3);
	EXPECT_ERRNO(EINVAL, set_xsave(&self->vcpu, &x));
	fpsse_image(&x);
	((uint8_t *)x.region)[XS_BV + 16] = 1;
	EXPECT_ERRNO(EINVAL, set_xsave(&self->vcpu, &x));
	fpsse_image(&x);
	((uint8_t *)x.region)[XS_BV + 63] = 0x80;
	EXPECT_ERRNO(EINVAL, set_xsave(&self->vcpu, &x));

	fpsse_image(&x);
	put32(x.region, XS_MXCSR, 0x1f80 | ~mask);
	EXPECT_ERRNO(EINVAL, set_xsave(&self->vcpu, &x));
	put64(x.region, XS_BV, XF_SSE);
	EXPECT_ERRNO(EINVAL, set_xsave(&self->vcpu, &x));

	get_xsave(_metadata, &self->vcpu, &out);
	EXPECT_EQ(0, get64(out.region, XS_BV));
	EXPECT_EQ(0x1f80, get32(out.region, XS_MXCSR));

	/* No component holding MXCSR: a bad MXCSR is not looked at. */
	put64(x.region, XS_BV, 0);
	EXPECT_EQ(0, set_xsave(&self->vcpu, &x));
	get_xsave(_metadata, &self->vcpu, &out);
	EXPECT_EQ(0x1f80, get32(out.region, XS_MXCSR));
	EXPECT_EQ(0x37f, get32(out.region, XS_FCW) & 0xffff);

	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_GET_XSAVE, 8));
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_SET_XSAVE, 8));
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_GET_XSAVE2, 8));
}

/* SSE without x87 takes MXCSR along, and leaves the x87 state alone. */
TEST_F(st, xsave_sse_without_fp_takes_mxcsr)
{
	struct kvm_xsave x, out;

	if (!host_osxsave())
		SKIP(return, "host without XSAVE");
	fpsse_image(&x);
	put64(x.region, XS_BV, XF_SSE);
	ASSERT_EQ(0, set_xsave(&self->vcpu, &x));
	get_xsave(_metadata, &self->vcpu, &out);
	EXPECT_EQ(XF_SSE, get64(out.region, XS_BV));
	EXPECT_EQ(0x1fc0, get32(out.region, XS_MXCSR));
	EXPECT_EQ(0xa1a2a3a4a5a6a7a8ULL, get64(out.region, XS_XMM));
	/* x87 not given: shown in its init state. */
	EXPECT_EQ(0x37f, get32(out.region, XS_FCW) & 0xffff);
	EXPECT_EQ(0, get64(out.region, XS_ST));
}

/*
 * KVM_GET/SET_FPU work on the legacy region as it is: MXCSR is neither
 * reported (0) nor written, and XSTATE_BV is not touched, so on a new
 * vCPU KVM_GET_XSAVE still shows the init state after KVM_SET_FPU.
 */
TEST_F(st, fpu_round_trip_and_relation_to_xsave)
{
	struct kvm_fpu f, g;
	struct kvm_xsave x;

	memset(&g, 0xcc, sizeof(g));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_FPU, &g));
	EXPECT_EQ(0x37f, g.fcw);
	EXPECT_EQ(0, g.fsw);
	EXPECT_EQ(0, g.ftwx);
	EXPECT_EQ(0, g.mxcsr);
	EXPECT_EQ(0, g.pad1);
	EXPECT_EQ(0, g.pad2);
	EXPECT_EQ(0, g.xmm[3][5]);

	memset(&f, 0, sizeof(f));
	f.fcw = 0x27f;
	f.fsw = 0x3800;
	f.ftwx = 0x80;
	f.last_opcode = 0x1d9;
	f.last_ip = 0x12345678;
	f.last_dp = 0x9abcdef0;
	f.fpr[0][0] = 0x11;
	f.fpr[7][9] = 0x40;
	f.xmm[0][0] = 0x22;
	f.xmm[15][15] = 0x33;
	f.mxcsr = 0xffffffff;		/* ignored */
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_FPU, &f));
	memset(&g, 0xcc, sizeof(g));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_FPU, &g));
	f.mxcsr = 0;
	EXPECT_EQ(0, memcmp(&f, &g, sizeof(f)));

	if (host_osxsave()) {
		get_xsave(_metadata, &self->vcpu, &x);
		EXPECT_EQ(0, get64(x.region, XS_BV));
		EXPECT_EQ(0x37f, get32(x.region, XS_FCW) & 0xffff);
		EXPECT_EQ(0x1f80, get32(x.region, XS_MXCSR));
	}

	/* KVM_SET_XSAVE's state is what KVM_GET_FPU reads. */
	fpsse_image(&x);
	ASSERT_EQ(0, set_xsave(&self->vcpu, &x));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_FPU, &g));
	EXPECT_EQ(0x27f, g.fcw);
	EXPECT_EQ(0x1122334455667788ULL, get64(g.fpr[0], 0));
	EXPECT_EQ(0xa1a2a3a4a5a6a7a8ULL, get64(g.xmm[0], 0));
	EXPECT_EQ(0, g.mxcsr);

	/* With x87 and SSE flagged, KVM_SET_FPU shows in KVM_GET_XSAVE. */
	if (host_osxsave()) {
		f.fcw = 0x7f;
		ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_FPU, &f));
		get_xsave(_metadata, &self->vcpu, &x);
		EXPECT_EQ(0x7f, get32(x.region, XS_FCW) & 0xffff);
		EXPECT_EQ(0x22, ((uint8_t *)x.region)[XS_XMM]);
		EXPECT_EQ(0x1fc0, get32(x.region, XS_MXCSR));
	}

	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_GET_FPU, 8));
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_SET_FPU, 8));
}

/*
 * The guest sees what KVM_SET_XSAVE / KVM_SET_FPU put in, and leaves in
 * KVM_GET_XSAVE / KVM_GET_FPU what it wrote (RBX points at DATA_GPA, ESI
 * says whether to touch YMM):
 *   1. store XMM0, FCW, MXCSR and YMM0's upper half; OUT 0x10
 *   2. FLDPI, load FCW 0x7f, MXCSR 0x1fa0, XMM2 and YMM3 from memory;
 *      OUT 0x11
 *   3. store XMM4 and FCW (set meanwhile by KVM_SET_FPU); OUT 0x12; HLT
 */
GUEST_CODE(guest_fpu, 64,
	"movdqu [rbx], xmm0\n"
	"fnstcw [rbx + 16]\n"
	"stmxcsr [rbx + 20]\n"
	"test esi, esi\n"
	"jz 1f\n"
	"vextractf128 [rbx + 32], ymm0, 1\n"
	"1: out 0x10, al\n"
	"fldpi\n"
	"fldcw [rbx + 128]\n"
	"ldmxcsr [rbx + 132]\n"
	"movdqu xmm2, [rbx + 64]\n"
	"test esi, esi\n"
	"jz 2f\n"
	"vmovdqu ymm3, [rbx + 96]\n"
	"2: out 0x11, al\n"
	"movdqu [rbx + 144], xmm4\n"
	"fnstcw [rbx + 160]\n"
	"out 0x12, al\n"
	"hlt\n");

TEST_F(st, guest_sees_and_leaves_fpu_state)
{
	int ymm = ymm_offset();
	uint8_t *data = self->vm.mem + DATA_GPA;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_xsave x;
	struct kvm_fpu f;

	if (!host_osxsave())
		SKIP(return, "host without XSAVE");
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	vm_load_code(&self->vm, guest_fpu);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	sregs.cr4 |= X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT | X86_CR4_OSXSAVE;
	vcpu_set_sregs(_metadata, &self->vcpu, &sregs);
	if (ymm) {
		struct kvm_xcrs xcrs = { .nr_xcrs = 1 };

		xcrs.xcrs[0].value = XF_FP | XF_SSE | XF_YMM;
		ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_XCRS, &xcrs));
	}
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	regs.rbx = DATA_GPA;
	regs.rsi = !!ymm;
	vcpu_set_regs(_metadata, &self->vcpu, &regs);

	memset(data, 0, 256);
	put32(data, 128, 0x7f);		/* FCW */
	put32(data, 132, 0x1fa0);	/* MXCSR */
	put64(data, 64, 0x0102030405060708ULL);
	put64(data, 96 + 16, 0x1112131415161718ULL);	/* YMM3 upper */

	fpsse_image(&x);
	if (ymm) {
		put64(x.region, XS_BV, XF_FP | XF_SSE | XF_YMM);
		put64(x.region, ymm, 0xe1e2e3e4e5e6e7e8ULL);
	}
	ASSERT_EQ(0, set_xsave(&self->vcpu, &x));

	/* 1: the guest stored what KVM_SET_XSAVE gave. */
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_OUT, 1, 0x10, 1);
	EXPECT_EQ(0xa1a2a3a4a5a6a7a8ULL, get64(data, 0));
	EXPECT_EQ(0xb1b2b3b4b5b6b7b8ULL, get64(data, 8));
	EXPECT_EQ(0x27f, get32(data, 16) & 0xffff);
	EXPECT_EQ(0x1fc0, get32(data, 20));
	if (ymm)
		EXPECT_EQ(0xe1e2e3e4e5e6e7e8ULL, get64(data, 32));

	/* 2: the host reads what the guest loaded. */
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_OUT, 1, 0x11, 1);
	get_xsave(_metadata, &self->vcpu, &x);
	EXPECT_EQ(XF_FP | XF_SSE, get64(x.region, XS_BV) & (XF_FP | XF_SSE));
	EXPECT_EQ(0x7f, get32(x.region, XS_FCW) & 0xffff);
	EXPECT_EQ(0x3800, get32(x.region, XS_FSW) & 0x3800);	/* TOP 7 */
	EXPECT_EQ(0x80, ((uint8_t *)x.region)[XS_FTW]);
	EXPECT_EQ(0xc90fdaa22168c235ULL, get64(x.region, XS_ST));
	EXPECT_EQ(0x4000, get32(x.region, XS_ST + 8) & 0xffff);
	EXPECT_EQ(0x1fa0, get32(x.region, XS_MXCSR));
	EXPECT_EQ(0x0102030405060708ULL, get64(x.region, XS_XMM + 2 * 16));
	if (ymm) {
		EXPECT_EQ(XF_YMM, get64(x.region, XS_BV) & XF_YMM);
		EXPECT_EQ(0x1112131415161718ULL,
			  get64(x.region, ymm + 3 * 16));
	}
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_FPU, &f));
	EXPECT_EQ(0x7f, f.fcw);
	EXPECT_EQ(0xc90fdaa22168c235ULL, get64(f.fpr[0], 0));
	EXPECT_EQ(0x0102030405060708ULL, get64(f.xmm[2], 0));

	/* 3: KVM_SET_FPU reaches the guest. */
	f.fcw = 0x37f;
	put64(f.xmm[4], 0, 0x5555aaaa5555aaaaULL);
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_FPU, &f));
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_OUT, 1, 0x12, 1);
	EXPECT_EQ(0x5555aaaa5555aaaaULL, get64(data, 144));
	EXPECT_EQ(0x37f, get32(data, 160) & 0xffff);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

/*
 * The VMM's own PKRU survives KVM_RUN: KVM swaps PKRU apart from the rest
 * of the FPU state, and the kernel does not reload a task's PKRU from its
 * XSAVE image on return to userspace, so a hypervisor that XRSTORs the
 * guest's PKRU leaves it behind in the VMM.
 */
GUEST_CODE(guest_out, 64, "out 0x10, al\n" "hlt\n");

TEST_F(st, vmm_pkru_survives_kvm_run)
{
	unsigned int a, b, c, d;
	uint32_t before, after;

	__cpuid_count(7, 0, a, b, c, d);
	if (!(c & (1u << 4)))
		SKIP(return, "host without OSPKE");
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	vm_load_code(&self->vm, guest_out);
	asm volatile("rdpkru" : "=a"(before) : "c"(0) : "rdx");
	ASSERT_NE(0, before);	/* Linux's default: keys 1-15 no access */
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_OUT, 1, 0x10, 1);
	asm volatile("rdpkru" : "=a"(after) : "c"(0) : "rdx");
	EXPECT_EQ(before, after);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	asm volatile("rdpkru" : "=a"(after) : "c"(0) : "rdx");
	EXPECT_EQ(before, after);
}

static struct kvm_clock_data get_clock(struct __test_metadata *_metadata,
				       int vm)
{
	struct kvm_clock_data d;

	memset(&d, 0xcc, sizeof(d));
	EXPECT_EQ(0, ioctl(vm, KVM_GET_CLOCK, &d))
		TH_LOG("KVM_GET_CLOCK: %s", strerror(errno));
	return d;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * NS + ts.tv_nsec;
}

/*
 * The VM clock counts from about 0 at VM creation and never goes back;
 * flags only name what is valid (realtime and host_tsc are 0 otherwise),
 * the padding is 0.
 */
TEST(clock_counts_from_vm_creation)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	struct kvm_clock_data a = get_clock(_metadata, vm), b;

	EXPECT_EQ(0, a.flags & ~0xeu);
	EXPECT_GT(60 * NS, a.clock);
	if (!(a.flags & KVM_CLOCK_REALTIME))
		EXPECT_EQ(0, a.realtime);
	if (!(a.flags & KVM_CLOCK_HOST_TSC))
		EXPECT_EQ(0, a.host_tsc);
	EXPECT_EQ(0, a.pad0);
	for (int i = 0; i < 4; i++)
		EXPECT_EQ(0, a.pad[i]);
	usleep(10000);
	b = get_clock(_metadata, vm);
	EXPECT_LE(a.clock + 10000000ULL, b.clock);
	EXPECT_GT(a.clock + 60 * NS, b.clock);
	close(vm);
	close(fd);
}

/*
 * KVM_SET_CLOCK moves this VM's clock only; what KVM_GET_CLOCK gave can
 * be passed back; unknown flags are EINVAL.
 */
TEST(set_clock_moves_this_vm_only)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	int other = create_vm(_metadata, fd);
	struct kvm_clock_data d = { .clock = 1000 * NS }, g;

	ASSERT_EQ(0, ioctl(vm, KVM_SET_CLOCK, &d));
	g = get_clock(_metadata, vm);
	EXPECT_LE(1000 * NS, g.clock);
	EXPECT_GT(1060 * NS, g.clock);
	EXPECT_GT(60 * NS, get_clock(_metadata, other).clock);

	/* Back to 1 s: the VM clock may be set backwards. */
	d.clock = NS;
	ASSERT_EQ(0, ioctl(vm, KVM_SET_CLOCK, &d));
	g = get_clock(_metadata, vm);
	EXPECT_LE(NS, g.clock);
	EXPECT_GT(61 * NS, g.clock);

	/* GET's own flags are accepted back. */
	d.flags = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_HOST_TSC;
	d.host_tsc = 12345;
	EXPECT_EQ(0, ioctl(vm, KVM_SET_CLOCK, &d));
	for (unsigned int f = 1; f; f <<= 1) {
		if (f & 0xe)
			continue;
		d.flags = f;
		EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_SET_CLOCK, &d));
	}
	g = get_clock(_metadata, vm);
	EXPECT_GT(61 * NS, g.clock);

	EXPECT_ERRNO(EFAULT, ioctl(vm, KVM_GET_CLOCK, 8));
	EXPECT_ERRNO(EFAULT, ioctl(vm, KVM_SET_CLOCK, 8));
	close(other);
	close(vm);
	close(fd);
}

/*
 * KVM_CLOCK_REALTIME: the clock moves forward by the wall-clock time
 * since `realtime`, never back when `realtime` lies ahead; without the
 * flag `realtime` is ignored.
 */
TEST(set_clock_realtime_adjusts_forward_only)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	struct kvm_clock_data d = { .clock = 100 * NS }, g;

	d.flags = KVM_CLOCK_REALTIME;
	d.realtime = realtime_ns() - 500 * NS;
	ASSERT_EQ(0, ioctl(vm, KVM_SET_CLOCK, &d));
	g = get_clock(_metadata, vm);
	EXPECT_LE(600 * NS, g.clock);
	EXPECT_GT(660 * NS, g.clock);

	d.realtime = realtime_ns() + 500 * NS;
	ASSERT_EQ(0, ioctl(vm, KVM_SET_CLOCK, &d));
	g = get_clock(_metadata, vm);
	EXPECT_LE(100 * NS, g.clock);
	EXPECT_GT(160 * NS, g.clock);

	d.flags = 0;
	d.realtime = realtime_ns() - 500 * NS;
	ASSERT_EQ(0, ioctl(vm, KVM_SET_CLOCK, &d));
	g = get_clock(_metadata, vm);
	EXPECT_LE(100 * NS, g.clock);
	EXPECT_GT(160 * NS, g.clock);
	close(vm);
	close(fd);
}

#define MSR_KVM_WALL_CLOCK_NEW	0x4b564d00
#define MSR_KVM_SYSTEM_TIME_NEW	0x4b564d01
#define PV_GPA	(DATA_GPA + 0x100)
#define WC_GPA	(DATA_GPA + 0x200)

struct pvti {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t mul;
	int8_t shift;
	uint8_t flags, pad[2];
};

struct wallclock {
	uint32_t version, sec, nsec;
};

/* What the guest computes from the structure at TSC @tsc. */
static uint64_t pvclock_read(const struct pvti *p, uint64_t tsc)
{
	uint64_t d = tsc - p->tsc_timestamp;

	d = p->shift < 0 ? d >> -p->shift : d << p->shift;
	return p->system_time + (uint64_t)(((unsigned __int128)d * p->mul) >> 32);
}

TEST(kvmclock_is_offered)
{
	int fd = open_kvm_dev(_metadata);
	int n = 256, sig = 0, feat = 0;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + 1024 * 4);
	int found = 0;

	ASSERT_NE(NULL, c);
	ASSERT_NE(NULL, l);
	c->nent = n;
	ASSERT_EQ(0, ioctl(fd, KVM_GET_SUPPORTED_CPUID, c));
	for (unsigned int i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 0x40000000) {
			sig = 1;
			EXPECT_LE(0x40000001, e->eax);
			EXPECT_EQ(0, memcmp(&e->ebx, "KVMK", 4));
			EXPECT_EQ(0, memcmp(&e->ecx, "VMKV", 4));
			EXPECT_EQ(0, memcmp(&e->edx, "M\0\0\0", 4));
		}
		if (e->function == 0x40000001) {
			feat = 1;
			/* KVM_FEATURE_CLOCKSOURCE and CLOCKSOURCE2 */
			EXPECT_EQ(0x9, e->eax & 0x9);
		}
	}
	EXPECT_TRUE(sig);
	EXPECT_TRUE(feat);
	l->nmsrs = 1024;
	ASSERT_EQ(0, ioctl(fd, KVM_GET_MSR_INDEX_LIST, l));
	for (unsigned int i = 0; i < l->nmsrs; i++)
		found += l->indices[i] == 0x11 || l->indices[i] == 0x12 ||
			 l->indices[i] == MSR_KVM_WALL_CLOCK_NEW ||
			 l->indices[i] == MSR_KVM_SYSTEM_TIME_NEW;
	EXPECT_EQ(4, found);
	free(l);
	free(c);
	close(fd);
}

/*
 * A guest enables kvmclock with MSR_KVM_SYSTEM_TIME_NEW: the structure
 * is written before its next instruction with an even version, and reads
 * the VM clock from the guest's TSC; RDMSR gives the value back;
 * KVM_SET_CLOCK rewrites it (two versions on).
 */
GUEST_CODE(guest_kvmclock, 64,
	"mov ecx, 0x4b564d01\n"
	"mov eax, 0x20101\n"	/* PV_GPA | enable */
	"xor edx, edx\n"
	"wrmsr\n"
	"rdtsc\n"
	"mov [rbx], eax\n"
	"mov [rbx + 4], edx\n"
	"out 0x10, al\n"
	"rdtsc\n"
	"mov [rbx], eax\n"
	"mov [rbx + 4], edx\n"
	"rdmsr\n"
	"mov [rbx + 8], eax\n"
	"out 0x11, al\n"
	"hlt\n");

TEST_F(st, guest_kvmclock_system_time)
{
	uint8_t *data = self->vm.mem + DATA_GPA;
	struct pvti *p = (struct pvti *)(self->vm.mem + PV_GPA);
	struct kvm_clock_data c, d = { .clock = 1000 * NS };
	struct kvm_regs regs;
	uint32_t v;

	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	vm_load_code(&self->vm, guest_kvmclock);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	regs.rbx = DATA_GPA;
	vcpu_set_regs(_metadata, &self->vcpu, &regs);
	/* Junk but the version; PVCLOCK_GUEST_STOPPED (2) is the guest's. */
	memset(p, 0xfd, sizeof(*p));
	p->version = 6;

	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_OUT, 1, 0x10, 1);
	c = get_clock(_metadata, self->vm.fd);
	v = p->version;
	EXPECT_EQ(0, v & 1);
	EXPECT_LE(8, v);
	EXPECT_NE(0, p->mul);
	EXPECT_EQ(0, p->flags & ~1);	/* PVCLOCK_TSC_STABLE_BIT at most */
	EXPECT_EQ(0, p->pad0);
	EXPECT_GE(c.clock, p->system_time);
	EXPECT_GT(p->system_time + 10 * NS, c.clock);
	/* The guest's clock at its RDTSC, against KVM_GET_CLOCK after it. */
	EXPECT_GE(c.clock + NS, pvclock_read(p, get64(data, 0)));
	EXPECT_LE(c.clock, pvclock_read(p, get64(data, 0)) + NS);

	ASSERT_EQ(0, ioctl(self->vm.fd, KVM_SET_CLOCK, &d));
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_OUT, 1, 0x11, 1);
	EXPECT_EQ(PV_GPA | 1, get32(data, 8));
	EXPECT_LE(v + 2, p->version);
	EXPECT_EQ(0, p->version & 1);
	EXPECT_LE(1000 * NS, pvclock_read(p, get64(data, 0)));
	EXPECT_GT(1010 * NS, pvclock_read(p, get64(data, 0)));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

/*
 * MSR_KVM_WALL_CLOCK_NEW, from the guest or KVM_SET_MSRS, writes at once
 * the wall-clock time of VM clock 0, with an even version; KVM_GET_MSRS
 * reads the MSRs back.
 */
GUEST_CODE(guest_wallclock, 64,
	"mov ecx, 0x4b564d00\n"
	"mov eax, 0x20200\n"	/* WC_GPA */
	"xor edx, edx\n"
	"wrmsr\n"
	"out 0x10, al\n"
	"hlt\n");

TEST_F(st, guest_kvmclock_wall_clock)
{
	struct wallclock *w = (struct wallclock *)(self->vm.mem + WC_GPA);
	struct wallclock *w2 = (struct wallclock *)(self->vm.mem + WC_GPA + 0x40);
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[2];
	} m = { .h.nmsrs = 2 };
	struct kvm_clock_data c;
	uint64_t epoch;

	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	vm_load_code(&self->vm, guest_wallclock);
	w->version = 3;		/* odd: junk, one more skipped */
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_OUT, 1, 0x10, 1);
	c = get_clock(_metadata, self->vm.fd);
	epoch = realtime_ns() - c.clock;
	EXPECT_EQ(6, w->version);
	EXPECT_GE(1, labs((long)w->sec - (long)(epoch / NS)));
	EXPECT_GT(NS, w->nsec);

	m.e[0].index = MSR_KVM_WALL_CLOCK_NEW;
	m.e[0].data = WC_GPA + 0x40;
	m.e[1].index = MSR_KVM_SYSTEM_TIME_NEW;
	m.e[1].data = PV_GPA;	/* disabled */
	ASSERT_EQ(2, ioctl(self->vcpu.fd, KVM_SET_MSRS, &m));
	EXPECT_EQ(2, w2->version);
	EXPECT_GE(1, labs((long)w2->sec - (long)(epoch / NS)));
	m.e[0].data = m.e[1].data = 0;
	ASSERT_EQ(2, ioctl(self->vcpu.fd, KVM_GET_MSRS, &m));
	EXPECT_EQ(WC_GPA + 0x40, m.e[0].data);
	EXPECT_EQ(PV_GPA, m.e[1].data);
}

TEST_HARNESS_MAIN
