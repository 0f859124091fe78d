// SPDX-License-Identifier: GPL-2.0
/*
 * MMIO: a guest access to a GPA outside every memory slot exits with
 * KVM_EXIT_MMIO (phys_addr, len, is_write, data); a read is completed with
 * the data userspace leaves in kvm_run->mmio.data on the next KVM_RUN.
 * The instructions are emulated: MOV of every size, MOVZX/MOVSX, ALU
 * instructions with a memory operand (read, or read-modify-write), XCHG, BT
 * and string instructions. Writes to a KVM_MEM_READONLY slot exit as MMIO.
 *
 * The guests run in 64-bit mode with RBX = MMIO_GPA (0xd0000000).
 */
#include "vm_lib.h"

#define M MMIO_GPA

FIXTURE(lm) {
	struct vm vm;
	struct vcpu vcpu;
	struct kvm_regs regs;	/* after the final HLT */
};

FIXTURE_SETUP(lm)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
}

FIXTURE_TEARDOWN(lm)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

/* Runs to the final HLT and reads the registers into self->regs. */
#define RUN_TO_HLT() do {						\
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);				\
	vcpu_get_regs(_metadata, &self->vcpu, &self->regs);		\
} while (0)

#define LOAD(code) vm_load_code(&self->vm, code)
#define V (&self->vcpu)

/* --- MOV writes --- */

GUEST_CODE(w8, 64,
	"mov rbx, 0xd0000000\n"
	"mov byte ptr [rbx + 3], 0x5a\n"
	"hlt\n");

TEST_F(lm, mov_write_1_byte)
{
	LOAD(w8);
	EXPECT_EQ(0x5aULL, run_to_mmio_write(V, M + 3, 1));
	RUN_TO_HLT();
}

GUEST_CODE(w16, 64,
	"mov rbx, 0xd0000000\n"
	"mov word ptr [rbx + 2], 0x1234\n"
	"hlt\n");

TEST_F(lm, mov_write_2_bytes)
{
	LOAD(w16);
	EXPECT_EQ(0x1234ULL, run_to_mmio_write(V, M + 2, 2));
	RUN_TO_HLT();
}

GUEST_CODE(w32, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, 0xdeadbeef\n"
	"mov dword ptr [rbx + 0x100], eax\n"
	"hlt\n");

TEST_F(lm, mov_write_4_bytes)
{
	LOAD(w32);
	EXPECT_EQ(0xdeadbeefULL, run_to_mmio_write(V, M + 0x100, 4));
	RUN_TO_HLT();
}

GUEST_CODE(w64, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, 0x1122334455667788\n"
	"mov qword ptr [rbx + 8], rax\n"
	"hlt\n");

TEST_F(lm, mov_write_8_bytes)
{
	LOAD(w64);
	EXPECT_EQ(0x1122334455667788ULL, run_to_mmio_write(V, M + 8, 8));
	RUN_TO_HLT();
}

/* --- MOV reads: RAX starts all ones, so partial writes show --- */

GUEST_CODE(r8, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, -1\n"
	"mov al, byte ptr [rbx + 1]\n"
	"hlt\n");

TEST_F(lm, mov_read_1_byte_merges_into_al)
{
	LOAD(r8);
	run_to_mmio_read(V, M + 1, 1, 0x5a);
	RUN_TO_HLT();
	EXPECT_EQ(0xffffffffffffff5aULL, self->regs.rax);
}

GUEST_CODE(r16, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, -1\n"
	"mov ax, word ptr [rbx + 2]\n"
	"hlt\n");

TEST_F(lm, mov_read_2_bytes_merges_into_ax)
{
	LOAD(r16);
	run_to_mmio_read(V, M + 2, 2, 0x1234);
	RUN_TO_HLT();
	EXPECT_EQ(0xffffffffffff1234ULL, self->regs.rax);
}

GUEST_CODE(r32, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, -1\n"
	"mov eax, dword ptr [rbx + 4]\n"
	"hlt\n");

TEST_F(lm, mov_read_4_bytes_zero_extends)
{
	LOAD(r32);
	run_to_mmio_read(V, M + 4, 4, 0x87654321);
	RUN_TO_HLT();
	EXPECT_EQ(0x87654321ULL, self->regs.rax);
}

GUEST_CODE(r64, 64,
	"mov rbx, 0xd0000000\n"
	"mov rcx, qword ptr [rbx + 0x18]\n"
	"hlt\n");

TEST_F(lm, mov_read_8_bytes)
{
	LOAD(r64);
	run_to_mmio_read(V, M + 0x18, 8, 0x0102030405060708ULL);
	RUN_TO_HLT();
	EXPECT_EQ(0x0102030405060708ULL, self->regs.rcx);
}

GUEST_CODE(r_moffs, 64,
	"movabs eax, dword ptr [0xd0000010]\n"
	"hlt\n");

TEST_F(lm, mov_read_absolute_64bit_address)
{
	LOAD(r_moffs);
	run_to_mmio_read(V, M + 0x10, 4, 0xabcdef01);
	RUN_TO_HLT();
	EXPECT_EQ(0xabcdef01ULL, self->regs.rax);
}

/* --- MOVZX / MOVSX --- */

GUEST_CODE(movzx8, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, -1\n"
	"movzx eax, byte ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, movzx_byte)
{
	LOAD(movzx8);
	run_to_mmio_read(V, M, 1, 0x80);
	RUN_TO_HLT();
	EXPECT_EQ(0x80ULL, self->regs.rax);
}

GUEST_CODE(movzx16, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, -1\n"
	"movzx rax, word ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, movzx_word)
{
	LOAD(movzx16);
	run_to_mmio_read(V, M, 2, 0x8001);
	RUN_TO_HLT();
	EXPECT_EQ(0x8001ULL, self->regs.rax);
}

GUEST_CODE(movsx8, 64,
	"mov rbx, 0xd0000000\n"
	"movsx rax, byte ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, movsx_byte)
{
	LOAD(movsx8);
	run_to_mmio_read(V, M, 1, 0x80);
	RUN_TO_HLT();
	EXPECT_EQ(0xffffffffffffff80ULL, self->regs.rax);
}

GUEST_CODE(movsx16, 64,
	"mov rbx, 0xd0000000\n"
	"mov rax, -1\n"
	"movsx eax, word ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, movsx_word_into_32bit_register)
{
	LOAD(movsx16);
	run_to_mmio_read(V, M, 2, 0x8000);
	RUN_TO_HLT();
	EXPECT_EQ(0xffff8000ULL, self->regs.rax);
}

GUEST_CODE(movsxd, 64,
	"mov rbx, 0xd0000000\n"
	"movsxd rax, dword ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, movsxd_dword)
{
	LOAD(movsxd);
	run_to_mmio_read(V, M, 4, 0x80000000);
	RUN_TO_HLT();
	EXPECT_EQ(0xffffffff80000000ULL, self->regs.rax);
}

/* --- ALU with a memory operand --- */

GUEST_CODE(add_reg_mem, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, 5\n"
	"add eax, dword ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, add_register_from_mmio_reads_once)
{
	LOAD(add_reg_mem);
	run_to_mmio_read(V, M, 4, 7);
	RUN_TO_HLT();
	EXPECT_EQ(12ULL, self->regs.rax);
}

GUEST_CODE(add_mem_reg, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, 5\n"
	"add dword ptr [rbx], eax\n"
	"hlt\n");

TEST_F(lm, add_to_mmio_reads_then_writes)
{
	LOAD(add_mem_reg);
	run_to_mmio_read(V, M, 4, 7);
	EXPECT_EQ(12ULL, run_to_mmio_write(V, M, 4));
	RUN_TO_HLT();
}

GUEST_CODE(or_mem_imm, 64,
	"mov rbx, 0xd0000000\n"
	"or dword ptr [rbx + 4], 0xf0\n"
	"hlt\n");

TEST_F(lm, or_immediate_to_mmio)
{
	LOAD(or_mem_imm);
	run_to_mmio_read(V, M + 4, 4, 0x0f);
	EXPECT_EQ(0xffULL, run_to_mmio_write(V, M + 4, 4));
	RUN_TO_HLT();
}

GUEST_CODE(and_mem_reg, 64,
	"mov rbx, 0xd0000000\n"
	"mov rcx, 0x0ff00ff00ff00ff0\n"
	"and qword ptr [rbx], rcx\n"
	"hlt\n");

TEST_F(lm, and_register_to_mmio_8_bytes)
{
	LOAD(and_mem_reg);
	run_to_mmio_read(V, M, 8, 0xff00ff00ff00ff00ULL);
	EXPECT_EQ(0x0f000f000f000f00ULL, run_to_mmio_write(V, M, 8));
	RUN_TO_HLT();
}

GUEST_CODE(xor_mem_imm8, 64,
	"mov rbx, 0xd0000000\n"
	"xor byte ptr [rbx + 1], 0xff\n"
	"hlt\n");

TEST_F(lm, xor_byte_in_mmio)
{
	LOAD(xor_mem_imm8);
	run_to_mmio_read(V, M + 1, 1, 0x0f);
	EXPECT_EQ(0xf0ULL, run_to_mmio_write(V, M + 1, 1));
	RUN_TO_HLT();
}

GUEST_CODE(cmp_mem_reg, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, 7\n"
	"cmp dword ptr [rbx], eax\n"
	"hlt\n");

TEST_F(lm, cmp_with_mmio_only_reads_and_sets_flags)
{
	LOAD(cmp_mem_reg);
	run_to_mmio_read(V, M, 4, 5);	/* 5 - 7: borrow, negative */
	RUN_TO_HLT();
	EXPECT_EQ(X86_RFLAGS_CF | X86_RFLAGS_SF, self->regs.rflags &
		  (X86_RFLAGS_CF | X86_RFLAGS_SF | X86_RFLAGS_ZF));
	EXPECT_EQ(7ULL, self->regs.rax);
}

GUEST_CODE(test_mem_reg, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, 0x0f\n"
	"test dword ptr [rbx], eax\n"
	"hlt\n");

TEST_F(lm, test_with_mmio_only_reads_and_sets_flags)
{
	LOAD(test_mem_reg);
	run_to_mmio_read(V, M, 4, 0xf0);
	RUN_TO_HLT();
	EXPECT_EQ(X86_RFLAGS_ZF, self->regs.rflags &
		  (X86_RFLAGS_CF | X86_RFLAGS_SF | X86_RFLAGS_ZF));
}

/* --- XCHG, BT --- */

GUEST_CODE(xchg_mem, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, 0x22222222\n"
	"xchg dword ptr [rbx], eax\n"
	"hlt\n");

TEST_F(lm, xchg_with_mmio_reads_then_writes)
{
	LOAD(xchg_mem);
	run_to_mmio_read(V, M, 4, 0x11111111);
	EXPECT_EQ(0x22222222ULL, run_to_mmio_write(V, M, 4));
	RUN_TO_HLT();
	EXPECT_EQ(0x11111111ULL, self->regs.rax);
}

GUEST_CODE(bt_imm, 64,
	"mov rbx, 0xd0000000\n"
	"bt dword ptr [rbx], 5\n"
	"hlt\n");

TEST_F(lm, bt_immediate_reads_and_sets_cf)
{
	LOAD(bt_imm);
	run_to_mmio_read(V, M, 4, 0x20);
	RUN_TO_HLT();
	EXPECT_EQ(X86_RFLAGS_CF, self->regs.rflags & X86_RFLAGS_CF);
}

GUEST_CODE(bt_reg, 64,
	"mov rbx, 0xd0000000\n"
	"mov ecx, 35\n"
	"bt dword ptr [rbx], ecx\n"
	"hlt\n");

TEST_F(lm, bt_register_offset_addresses_next_dword)
{
	/* Bit 35 of the bit string at M is bit 3 of the dword at M + 4. */
	LOAD(bt_reg);
	run_to_mmio_read(V, M + 4, 4, 0x8);
	RUN_TO_HLT();
	EXPECT_EQ(X86_RFLAGS_CF, self->regs.rflags & X86_RFLAGS_CF);
}

/* --- string instructions --- */

GUEST_CODE(rep_stosb, 64,
	"cld\n"
	"mov rdi, 0xd0000000\n"
	"mov ecx, 3\n"
	"mov al, 0xab\n"
	"rep stosb\n"
	"hlt\n");

TEST_F(lm, rep_stosb_writes_each_byte)
{
	LOAD(rep_stosb);
	for (int i = 0; i < 3; i++) {
		EXPECT_EQ(0xabULL, run_to_mmio_write(V, M + i, 1));
	}
	RUN_TO_HLT();
	EXPECT_EQ(0ULL, self->regs.rcx);
	EXPECT_EQ(M + 3, self->regs.rdi);
}

GUEST_CODE(rep_movsd, 64,
	"cld\n"
	"mov rsi, 0x20000\n"
	"mov rdi, 0xd0000100\n"
	"mov ecx, 2\n"
	"rep movsd\n"
	"hlt\n");

TEST_F(lm, rep_movsd_from_ram_to_mmio)
{
	mem_write32(&self->vm, DATA_GPA, 0xaaaa5555);
	mem_write32(&self->vm, DATA_GPA + 4, 0x12121212);
	LOAD(rep_movsd);
	EXPECT_EQ(0xaaaa5555ULL, run_to_mmio_write(V, M + 0x100, 4));
	EXPECT_EQ(0x12121212ULL, run_to_mmio_write(V, M + 0x104, 4));
	RUN_TO_HLT();
	EXPECT_EQ(0ULL, self->regs.rcx);
	EXPECT_EQ(DATA_GPA + 8, self->regs.rsi);
	EXPECT_EQ(M + 0x108, self->regs.rdi);
}

GUEST_CODE(movsq_from_mmio, 64,
	"cld\n"
	"mov rsi, 0xd0000000\n"
	"mov rdi, 0x20000\n"
	"movsq\n"
	"hlt\n");

TEST_F(lm, movsq_from_mmio_to_ram)
{
	uint64_t got;

	LOAD(movsq_from_mmio);
	run_to_mmio_read(V, M, 8, 0x0badc0ffee0ddf00ULL);
	RUN_TO_HLT();
	memcpy(&got, self->vm.mem + DATA_GPA, 8);
	EXPECT_EQ(0x0badc0ffee0ddf00ULL, got);
}

/* --- a read is completed by the next KVM_RUN --- */

GUEST_CODE(r_then_out, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, dword ptr [rbx]\n"
	"out 0x10, eax\n"
	"mov eax, dword ptr [rbx]\n"
	"out 0x10, eax\n"
	"hlt\n");

TEST_F(lm, each_read_gets_the_data_of_its_own_exit)
{
	LOAD(r_then_out);
	run_to_mmio_read(V, M, 4, 0x01010101);
	EXPECT_EQ(0x01010101, run_to_out(V, 4, 0x10));
	run_to_mmio_read(V, M, 4, 0x02020202);
	EXPECT_EQ(0x02020202, run_to_out(V, 4, 0x10));
	RUN_TO_HLT();
}

/* --- KVM_MEM_READONLY --- */

#define RO_GPA 0x40000000UL
GUEST_CODE(ro_slot, 64,
	"mov eax, dword ptr [0x40000000]\n"
	"mov dword ptr [0x40000000], 0x12345678\n"
	"mov ecx, dword ptr [0x40000000]\n"
	"hlt\n");

TEST_F(lm, readonly_slot_reads_memory_and_writes_exit_as_mmio)
{
	uint8_t *page = alloc_guest_mem(_metadata, 4096);

	memset(page, 0x77, 4096);
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, KVM_MEM_READONLY, RO_GPA,
				   4096, page));
	LOAD(ro_slot);
	/* The first read does not exit; the write does. */
	EXPECT_EQ(0x12345678ULL, run_to_mmio_write(V, RO_GPA, 4));
	RUN_TO_HLT();
	EXPECT_EQ(0x77777777ULL, self->regs.rax);
	EXPECT_EQ(0x77777777ULL, self->regs.rcx);
	EXPECT_EQ(0x77777777U, *(uint32_t *)page);
	munmap(page, 4096);
}

/* --- MMIO through non-identity mappings --- */

GUEST_CODE(alias_write, 64,
	"mov rbx, 0xffffffffd0000000\n"	/* LONG_MMIO_VA */
	"mov dword ptr [rbx + 0x40], 0x1234\n"
	"hlt\n");

TEST_F(lm, write_through_high_virtual_alias_reports_gpa)
{
	LOAD(alias_write);
	EXPECT_EQ(0x1234ULL, run_to_mmio_write(V, M + 0x40, 4));
	RUN_TO_HLT();
}

GUEST_CODE(code_at_alias, 64,
	"mov rbx, 0xd0000000\n"
	"mov eax, dword ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, mmio_from_code_at_high_virtual_alias)
{
	/* The emulator fetches the instruction through the guest's mapping. */
	LOAD(code_at_alias);
	vcpu_set_rip(_metadata, V, LONG_ALIAS_VA + CODE_GPA);
	run_to_mmio_read(V, M, 4, 0x31415926);
	RUN_TO_HLT();
	EXPECT_EQ(0x31415926ULL, self->regs.rax);
	EXPECT_EQ(LONG_ALIAS_VA + CODE_GPA + (code_at_alias_end - code_at_alias),
		  self->regs.rip);
}

GUEST_CODE(pm_mmio, 32,
	"mov dword ptr [0x800010], 0xabcd\n"	/* PROT32_MMIO_VA + 0x10 */
	"mov ax, word ptr [0x800020]\n"
	"hlt\n");

TEST(mmio_through_32bit_paging)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_protected(_metadata, &vm, &v, 1);
	vm_load_code(&vm, pm_mmio);
	EXPECT_EQ(0xabcdULL, run_to_mmio_write(&v, M + 0x10, 4));
	run_to_mmio_read(&v, M + 0x20, 2, 0x5678);
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &v, &regs);
	EXPECT_EQ(0x5678ULL, regs.rax & 0xffff);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/* --- accesses that cross a page boundary --- */

GUEST_CODE(cross_write, 64,
	"mov rbx, 0xd0000ffe\n"
	"mov dword ptr [rbx], 0x11223344\n"
	"hlt\n");

TEST_F(lm, write_crossing_pages_exits_per_page)
{
	/* Each exit stays inside one page; together they are the write. */
	uint8_t seen[4] = { 0 }, want[4] = { 0x44, 0x33, 0x22, 0x11 };
	unsigned int n = 0, exits = 0;

	LOAD(cross_write);
	for (;;) {
		struct kvm_run *run = V->run;
		uint64_t a;

		vcpu_run(_metadata, V);
		if (run->exit_reason != KVM_EXIT_MMIO)
			break;
		exits++;
		a = run->mmio.phys_addr;
		ASSERT_EQ(1, run->mmio.is_write);
		ASSERT_LE(M + 0xffe, a);
		ASSERT_GE(M + 0x1002, a + run->mmio.len);
		EXPECT_EQ(a >> 12, (a + run->mmio.len - 1) >> 12);
		memcpy(seen + (a - (M + 0xffe)), run->mmio.data, run->mmio.len);
		n += run->mmio.len;
	}
	TH_LOG("%u bytes in %u exits", n, exits);
	ASSERT_EQ(KVM_EXIT_HLT, V->run->exit_reason);
	EXPECT_EQ(4, n);
	EXPECT_EQ(0, memcmp(want, seen, 4));
}

GUEST_CODE(cross_read, 64,
	"mov rbx, 0xd0000ffc\n"
	"mov rax, qword ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, read_crossing_pages_gets_each_part)
{
	unsigned int n = 0, exits = 0;

	LOAD(cross_read);
	for (;;) {
		struct kvm_run *run = V->run;
		uint64_t a;

		vcpu_run(_metadata, V);
		if (run->exit_reason != KVM_EXIT_MMIO)
			break;
		exits++;
		a = run->mmio.phys_addr;
		ASSERT_EQ(0, run->mmio.is_write);
		ASSERT_LE(M + 0xffc, a);
		ASSERT_GE(M + 0x1004, a + run->mmio.len);
		EXPECT_EQ(a >> 12, (a + run->mmio.len - 1) >> 12);
		/* Byte at M + 0xffc + i reads as 0xa0 + i. */
		for (unsigned int i = 0; i < run->mmio.len; i++)
			run->mmio.data[i] = 0xa0 + (a - (M + 0xffc)) + i;
		n += run->mmio.len;
	}
	TH_LOG("%u bytes in %u exits", n, exits);
	ASSERT_EQ(KVM_EXIT_HLT, V->run->exit_reason);
	EXPECT_EQ(8, n);
	vcpu_get_regs(_metadata, V, &self->regs);
	EXPECT_EQ(0xa7a6a5a4a3a2a1a0ULL, self->regs.rax);
}

GUEST_CODE(ram_mmio_straddle, 64,
	"mov dword ptr [0x1ffffe], 0x11223344\n"
	"hlt\n");

TEST_F(lm, write_straddling_ram_and_mmio_splits)
{
	/* Slot 0 ends at VM_MEM_SIZE (2 MiB): two bytes land in RAM. */
	LOAD(ram_mmio_straddle);
	EXPECT_EQ(0x1122ULL, run_to_mmio_write(V, VM_MEM_SIZE, 2));
	RUN_TO_HLT();
	EXPECT_EQ(0x44, self->vm.mem[VM_MEM_SIZE - 2]);
	EXPECT_EQ(0x33, self->vm.mem[VM_MEM_SIZE - 1]);
}

/* --- MMIO from real mode --- */

GUEST_CODE(rm_mmio, 16,
	"mov ax, 0xd000\n"
	"mov ds, ax\n"
	"mov word ptr [0x10], 0x1234\n"
	"mov cx, word ptr [0x20]\n"
	"hlt\n");

TEST(real_mode_mmio_uses_segment_base)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;

	/* Only 64 KiB of memory: 0xd0000 is MMIO. */
	vm_create_empty(_metadata, &vm);
	vm.mem_size = 0x10000;
	vm.mem = alloc_guest_mem(_metadata, vm.mem_size);
	ASSERT_EQ(0, vm_set_region(&vm, 0, 0, 0, vm.mem_size, vm.mem));
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_real(_metadata, &v);
	vm_load_code(&vm, rm_mmio);
	EXPECT_EQ(0x1234ULL, run_to_mmio_write(&v, 0xd0010, 2));
	run_to_mmio_read(&v, 0xd0020, 2, 0x4321);
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &v, &regs);
	EXPECT_EQ(0x4321ULL, regs.rcx & 0xffff);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN
