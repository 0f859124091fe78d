// SPDX-License-Identifier: GPL-2.0

//! The KVM ABI as rkvm speaks it: ioctl numbers, capability numbers and
//! limits, identical to `include/uapi/linux/kvm.h`.

use crate::uapi::{
    KvmClockData, KvmCpuid2Header, KvmDebugregs, KvmDirtyLog, KvmEnableCap, KvmFpu, KvmGuestDebug,
    KvmIoeventfd, KvmIrqLevel, KvmIrqRoutingHeader, KvmIrqfd, KvmMsi, KvmMsrsHeader, KvmRegs,
    KvmSregs, KvmTranslation, KvmUserspaceMemoryRegion, KvmUserspaceMemoryRegion2, KvmVcpuEvents,
    KvmX86Mce, KvmXcrs,
};
use kernel::ioctl::{_IO, _IOR, _IOW, _IOWR};

/// `KVM_API_VERSION`: the only version KVM has ever shipped since 2007.
pub(crate) const API_VERSION: isize = 12;

/// The ioctl type byte of every KVM ioctl.
const KVMIO: u32 = 0xAE;

// System ioctls (on /dev/rkvm).
pub(crate) const KVM_GET_API_VERSION: u32 = _IO(KVMIO, 0x00);
pub(crate) const KVM_CREATE_VM: u32 = _IO(KVMIO, 0x01);
pub(crate) const KVM_CHECK_EXTENSION: u32 = _IO(KVMIO, 0x03);
pub(crate) const KVM_GET_VCPU_MMAP_SIZE: u32 = _IO(KVMIO, 0x04);
pub(crate) const KVM_GET_MSR_INDEX_LIST: u32 = _IOWR::<u32>(KVMIO, 0x02);
pub(crate) const KVM_GET_MSR_FEATURE_INDEX_LIST: u32 = _IOWR::<u32>(KVMIO, 0x0a);
pub(crate) const KVM_GET_SUPPORTED_CPUID: u32 = _IOWR::<KvmCpuid2Header>(KVMIO, 0x05);
pub(crate) const KVM_X86_GET_MCE_CAP_SUPPORTED: u32 = _IOR::<u64>(KVMIO, 0x9d);

// VM ioctls.
pub(crate) const KVM_CREATE_VCPU: u32 = _IO(KVMIO, 0x41);
pub(crate) const KVM_GET_DIRTY_LOG: u32 = _IOW::<KvmDirtyLog>(KVMIO, 0x42);
pub(crate) const KVM_SET_USER_MEMORY_REGION: u32 = _IOW::<KvmUserspaceMemoryRegion>(KVMIO, 0x46);
pub(crate) const KVM_SET_TSS_ADDR: u32 = _IO(KVMIO, 0x47);
pub(crate) const KVM_SET_IDENTITY_MAP_ADDR: u32 = _IOW::<u64>(KVMIO, 0x48);
pub(crate) const KVM_SET_USER_MEMORY_REGION2: u32 = _IOW::<KvmUserspaceMemoryRegion2>(KVMIO, 0x49);
pub(crate) const KVM_CREATE_IRQCHIP: u32 = _IO(KVMIO, 0x60);
pub(crate) const KVM_IOEVENTFD: u32 = _IOW::<KvmIoeventfd>(KVMIO, 0x79);
pub(crate) const KVM_IRQ_LINE: u32 = _IOW::<KvmIrqLevel>(KVMIO, 0x61);
pub(crate) const KVM_SET_GSI_ROUTING: u32 = _IOW::<KvmIrqRoutingHeader>(KVMIO, 0x6a);
pub(crate) const KVM_IRQFD: u32 = _IOW::<KvmIrqfd>(KVMIO, 0x76);
pub(crate) const KVM_IRQ_LINE_STATUS: u32 = _IOWR::<KvmIrqLevel>(KVMIO, 0x67);
pub(crate) const KVM_ENABLE_CAP: u32 = _IOW::<KvmEnableCap>(KVMIO, 0xa3);
pub(crate) const KVM_SIGNAL_MSI: u32 = _IOW::<KvmMsi>(KVMIO, 0xa5);
pub(crate) const KVM_SET_CLOCK: u32 = _IOW::<KvmClockData>(KVMIO, 0x7b);
pub(crate) const KVM_GET_CLOCK: u32 = _IOR::<KvmClockData>(KVMIO, 0x7c);

// vCPU ioctls.
pub(crate) const KVM_RUN: u32 = _IO(KVMIO, 0x80);
pub(crate) const KVM_GET_REGS: u32 = _IOR::<KvmRegs>(KVMIO, 0x81);
pub(crate) const KVM_SET_REGS: u32 = _IOW::<KvmRegs>(KVMIO, 0x82);
pub(crate) const KVM_GET_SREGS: u32 = _IOR::<KvmSregs>(KVMIO, 0x83);
pub(crate) const KVM_SET_SREGS: u32 = _IOW::<KvmSregs>(KVMIO, 0x84);
pub(crate) const KVM_TRANSLATE: u32 = _IOWR::<KvmTranslation>(KVMIO, 0x85);
pub(crate) const KVM_INTERRUPT: u32 = _IOW::<u32>(KVMIO, 0x86);
pub(crate) const KVM_GET_MSRS: u32 = _IOWR::<KvmMsrsHeader>(KVMIO, 0x88);
pub(crate) const KVM_SET_MSRS: u32 = _IOW::<KvmMsrsHeader>(KVMIO, 0x89);
pub(crate) const KVM_SET_CPUID2: u32 = _IOW::<KvmCpuid2Header>(KVMIO, 0x90);
pub(crate) const KVM_GET_CPUID2: u32 = _IOWR::<KvmCpuid2Header>(KVMIO, 0x91);
pub(crate) const KVM_GET_LAPIC: u32 = _IOR::<[u8; 1024]>(KVMIO, 0x8e);
pub(crate) const KVM_SET_LAPIC: u32 = _IOW::<[u8; 1024]>(KVMIO, 0x8f);
pub(crate) const KVM_GET_MP_STATE: u32 = _IOR::<u32>(KVMIO, 0x98);
pub(crate) const KVM_SET_MP_STATE: u32 = _IOW::<u32>(KVMIO, 0x99);
pub(crate) const KVM_NMI: u32 = _IO(KVMIO, 0x9a);
pub(crate) const KVM_SET_GUEST_DEBUG: u32 = _IOW::<KvmGuestDebug>(KVMIO, 0x9b);
pub(crate) const KVM_GET_VCPU_EVENTS: u32 = _IOR::<KvmVcpuEvents>(KVMIO, 0x9f);
pub(crate) const KVM_SET_VCPU_EVENTS: u32 = _IOW::<KvmVcpuEvents>(KVMIO, 0xa0);
pub(crate) const KVM_SET_TSC_KHZ: u32 = _IO(KVMIO, 0xa2);
pub(crate) const KVM_GET_TSC_KHZ: u32 = _IO(KVMIO, 0xa3);
pub(crate) const KVM_GET_DEBUGREGS: u32 = _IOR::<KvmDebugregs>(KVMIO, 0xa1);
pub(crate) const KVM_SET_DEBUGREGS: u32 = _IOW::<KvmDebugregs>(KVMIO, 0xa2);
pub(crate) const KVM_GET_XCRS: u32 = _IOR::<KvmXcrs>(KVMIO, 0xa6);
pub(crate) const KVM_SET_XCRS: u32 = _IOW::<KvmXcrs>(KVMIO, 0xa7);
pub(crate) const KVM_X86_SETUP_MCE: u32 = _IOW::<u64>(KVMIO, 0x9c);
pub(crate) const KVM_X86_SET_MCE: u32 = _IOW::<KvmX86Mce>(KVMIO, 0x9e);
pub(crate) const KVM_GET_FPU: u32 = _IOR::<KvmFpu>(KVMIO, 0x8c);
pub(crate) const KVM_SET_FPU: u32 = _IOW::<KvmFpu>(KVMIO, 0x8d);
/// `struct kvm_xsave` is 4 KiB of bytes.
type KvmXsave = [u8; crate::xsave::KVM_XSAVE_SIZE];
pub(crate) const KVM_GET_XSAVE: u32 = _IOR::<KvmXsave>(KVMIO, 0xa4);
pub(crate) const KVM_SET_XSAVE: u32 = _IOW::<KvmXsave>(KVMIO, 0xa5);
pub(crate) const KVM_GET_XSAVE2: u32 = _IOR::<KvmXsave>(KVMIO, 0xcf);
pub(crate) const KVM_SET_VAPIC_ADDR: u32 = _IOW::<u64>(KVMIO, 0x93);

/// `KVM_X86_DEFAULT_VM`: the only VM type rkvm creates.
pub(crate) const KVM_X86_DEFAULT_VM: usize = 0;

/// `KVM_MAX_VCPUS` (x86 default config) and `KVM_MAX_VCPU_IDS` (4 ids per
/// vCPU, as x86 KVM allows for APIC-id gaps).
pub(crate) const MAX_VCPUS: u32 = 1024;
pub(crate) const MAX_VCPU_IDS: u32 = MAX_VCPUS * 4;

// Capabilities (`KVM_CAP_*`) rkvm implements; every other number answers 0.
const KVM_CAP_USER_MEMORY: usize = 3;
const KVM_CAP_SET_TSS_ADDR: usize = 4;
const KVM_CAP_EXT_CPUID: usize = 7;
const KVM_CAP_NR_VCPUS: usize = 9;
const KVM_CAP_NR_MEMSLOTS: usize = 10;
const KVM_CAP_MP_STATE: usize = 14;
const KVM_CAP_DESTROY_MEMORY_REGION_WORKS: usize = 21;
const KVM_CAP_USER_NMI: usize = 22;
const KVM_CAP_SET_GUEST_DEBUG: usize = 23;
const KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: usize = 30;
const KVM_CAP_IOEVENTFD: usize = 36;
const KVM_CAP_SET_IDENTITY_MAP_ADDR: usize = 37;
const KVM_CAP_ADJUST_CLOCK: usize = 39;
const KVM_CAP_DEBUGREGS: usize = 50;
const KVM_CAP_X86_ROBUST_SINGLESTEP: usize = 51;
const KVM_CAP_XSAVE: usize = 55;
const KVM_CAP_XCRS: usize = 56;
const KVM_CAP_GET_TSC_KHZ: usize = 61;
const KVM_CAP_INTERNAL_ERROR_DATA: usize = 40;
const KVM_CAP_VCPU_EVENTS: usize = 41;
const KVM_CAP_MAX_VCPUS: usize = 66;
const KVM_CAP_READONLY_MEM: usize = 81;
const KVM_CAP_MCE: usize = 31;
pub(crate) const KVM_CAP_CHECK_EXTENSION_VM: usize = 105;
const KVM_CAP_MAX_VCPU_ID: usize = 128;
pub(crate) const KVM_CAP_SPLIT_IRQCHIP: usize = 121;
pub(crate) const KVM_CAP_X2APIC_API: usize = 129;
/// `KVM_X2APIC_API_USE_32BIT_IDS`.
pub(crate) const X2APIC_API_USE_32BIT_IDS: u32 = 1 << 0;
/// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`.
pub(crate) const X2APIC_API_DISABLE_BROADCAST_QUIRK: u32 = 1 << 1;
/// The `KVM_CAP_X2APIC_API` flags rkvm takes: not KVM's two EOI-broadcast
/// suppression flags.
pub(crate) const X2APIC_API_VALID_FLAGS: u32 =
    X2APIC_API_USE_32BIT_IDS | X2APIC_API_DISABLE_BROADCAST_QUIRK;
const KVM_CAP_IOEVENTFD_ANY_LENGTH: usize = 122;
const KVM_CAP_TSC_DEADLINE_TIMER: usize = 72;
const KVM_CAP_SIGNAL_MSI: usize = 77;
const KVM_CAP_IRQCHIP: usize = 0;
const KVM_CAP_IRQ_ROUTING: usize = 25;
const KVM_CAP_IRQ_INJECT_STATUS: usize = 26;
const KVM_CAP_IRQFD: usize = 32;
const KVM_CAP_ENABLE_CAP_VM: usize = 98;
const KVM_CAP_IOEVENTFD_NO_LENGTH: usize = 100;
const KVM_CAP_IMMEDIATE_EXIT: usize = 136;
const KVM_CAP_XSAVE2: usize = 208;
const KVM_CAP_GET_MSR_FEATURES: usize = 153;
const KVM_CAP_USER_MEMORY2: usize = 231;
const KVM_CAP_SET_GUEST_DEBUG2: usize = 195;

/// `KVM_CHECK_EXTENSION`, on the system fd or a VM fd: 0 for anything rkvm
/// does not implement, as KVM answers for capabilities it lacks.
pub(crate) fn check_extension(cap: usize) -> isize {
    match cap {
        KVM_CAP_USER_MEMORY
        | KVM_CAP_SET_TSS_ADDR
        | KVM_CAP_EXT_CPUID
        | KVM_CAP_DESTROY_MEMORY_REGION_WORKS
        | KVM_CAP_MP_STATE
        | KVM_CAP_USER_NMI
        | KVM_CAP_JOIN_MEMORY_REGIONS_WORKS
        | KVM_CAP_SET_IDENTITY_MAP_ADDR
        | KVM_CAP_DEBUGREGS
        | KVM_CAP_SET_GUEST_DEBUG
        | KVM_CAP_X86_ROBUST_SINGLESTEP
        | KVM_CAP_XSAVE
        | KVM_CAP_GET_TSC_KHZ
        | KVM_CAP_INTERNAL_ERROR_DATA
        | KVM_CAP_VCPU_EVENTS
        | KVM_CAP_READONLY_MEM
        | KVM_CAP_CHECK_EXTENSION_VM
        | KVM_CAP_IMMEDIATE_EXIT
        | KVM_CAP_USER_MEMORY2
        | KVM_CAP_SPLIT_IRQCHIP
        | KVM_CAP_TSC_DEADLINE_TIMER
        | KVM_CAP_SIGNAL_MSI
        | KVM_CAP_ENABLE_CAP_VM
        | KVM_CAP_IOEVENTFD
        | KVM_CAP_IOEVENTFD_NO_LENGTH
        | KVM_CAP_IOEVENTFD_ANY_LENGTH
        | KVM_CAP_IRQCHIP
        | KVM_CAP_IRQFD
        | KVM_CAP_IRQ_INJECT_STATUS
        | KVM_CAP_GET_MSR_FEATURES => 1,
        KVM_CAP_X2APIC_API => X2APIC_API_VALID_FLAGS as isize,
        KVM_CAP_NR_VCPUS => crate::sys::cpu::num_online_cpus().min(MAX_VCPUS as usize) as isize,
        KVM_CAP_MAX_VCPUS => MAX_VCPUS as isize,
        // The bank count, as KVM.
        KVM_CAP_MCE => crate::msr::mce::MAX_BANKS as isize,
        KVM_CAP_IRQ_ROUTING => crate::routing::MAX_IRQ_ROUTES as isize,
        // As KVM: only where the host has XSAVE.
        KVM_CAP_XCRS => isize::from(crate::sys::cpu::host_xcr0().is_some()),
        KVM_CAP_XSAVE2 => crate::sys::fpu::xsave2_size() as isize,
        // The flags KVM_SET_CLOCK accepts (KVM_CLOCK_VALID_FLAGS).
        KVM_CAP_ADJUST_CLOCK => crate::clock::KVM_CLOCK_VALID_FLAGS as isize,
        KVM_CAP_MAX_VCPU_ID => MAX_VCPU_IDS as isize,
        // The flags KVM_SET_GUEST_DEBUG knows.
        KVM_CAP_SET_GUEST_DEBUG2 => crate::debug::VALID_MASK as isize,
        KVM_CAP_NR_MEMSLOTS => crate::memslot::USER_MEM_SLOTS as isize,
        _ => 0,
    }
}

/// Pages mapped by the vCPU fd: `struct kvm_run`, then the PIO data page.
pub(crate) const VCPU_MMAP_PAGES: usize = 2;
/// The PIO data page's offset in the vCPU mapping (`KVM_PIO_PAGE_OFFSET`).
pub(crate) const PIO_PAGE_OFFSET: u64 = 1;
