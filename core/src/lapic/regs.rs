//! Register access: the xAPIC MMIO page, the x2APIC MSRs, and the
//! `KVM_GET_LAPIC`/`KVM_SET_LAPIC` image (`kvm_lapic_reg_read`,
//! `kvm_lapic_reg_write`, `apic_mmio_*`, `kvm_x2apic_msr_*`,
//! `kvm_apic_get_state`/`kvm_apic_set_state`).
//!
//! Both access paths share one set of rules, as in KVM; they differ in
//! how a refusal shows: an MMIO read of an unreadable register gives 0 and
//! a refused MMIO write is dropped, where the MSR access is #GP.

use super::{
    reg, x2apic_ldr, Effects, Gp, InvalidState, Ipi, Lapic, Lvt, Shorthand, LVR_DIRECTED_EOI,
    LVT_MASKED, SPIV_DIRECTED_EOI, SPIV_ENABLED, STATE_SIZE, VECTOR_MASK,
};
use crate::msr::{X2APIC_FIRST, X2APIC_LAST};

/// Size of the xAPIC MMIO window (`LAPIC_MMIO_LENGTH`).
pub const MMIO_SIZE: u32 = 0x1000;

/// ICR delivery-status bit: KVM delivers at once, so it always reads 0.
const ICR_BUSY: u32 = 1 << 12;
/// x2APIC ICR bits that are #GP when set (31:20, 17:16, 13).
const X2APIC_ICR_RESERVED: u64 = 0xfff0_0000 | (3 << 16) | (1 << 13);

/// Bit of register `offset` in a readable-register mask (`APIC_REG_MASK`).
const fn bit(offset: u32) -> u64 {
    1 << (offset >> 4)
}

/// `APIC_REGS_MASK(first, 8)`: the eight words of a vector bank.
const fn bank(first: u32) -> u64 {
    bit(first) * 0xff
}

/// Registers readable in both modes (`kvm_lapic_readable_reg_mask`).
const READABLE: u64 = bit(reg::ID)
    | bit(reg::LVR)
    | bit(reg::TPR)
    | bit(reg::PPR)
    | bit(reg::LDR)
    | bit(reg::SPIV)
    | bank(reg::ISR)
    | bank(reg::TMR)
    | bank(reg::IRR)
    | bit(reg::ESR)
    | bit(reg::ICR)
    | bit(reg::LVT_TIMER)
    | bit(reg::LVT_THERMAL)
    | bit(reg::LVT_PMC)
    | bit(reg::LVT_LINT0)
    | bit(reg::LVT_LINT1)
    | bit(reg::LVT_ERROR)
    | bit(reg::TMICT)
    | bit(reg::TMCCT)
    | bit(reg::TDCR);

/// Readable in xAPIC mode only.
const READABLE_XAPIC: u64 = bit(reg::APR) | bit(reg::DFR) | bit(reg::ICR2);

impl Lapic {
    /// Which registers (bit `offset >> 4`) a read may see: EOI and
    /// SELF_IPI are write-only, reserved words unreadable; CMCI needs
    /// [`Config::cmci`](super::Config::cmci); APR, DFR and ICR2 exist in
    /// xAPIC mode only.
    pub fn readable_mask(&self) -> u64 {
        let mut m = READABLE;
        if self.lvt_supported(Lvt::Cmci) {
            m |= bit(reg::LVT_CMCI);
        }
        if !self.x2apic_mode() {
            m |= READABLE_XAPIC;
        }
        m
    }

    /// Whether the xAPIC page decodes: hardware-enabled and not in x2APIC
    /// mode. Otherwise KVM with its default `KVM_X86_QUIRK_LAPIC_MMIO_HOLE`
    /// reads all ones and drops writes (what [`Lapic::mmio_read`] and
    /// [`Lapic::mmio_write`] do); without the quirk the access is not the
    /// APIC's and the kernel should route it as ordinary MMIO.
    pub fn mmio_active(&self) -> bool {
        self.hw_enabled() && !self.x2apic_mode()
    }

    /// The value of the aligned register at `offset` (`__apic_read`).
    fn read_aligned(&self, offset: u32, now_ns: u64) -> u32 {
        match offset {
            reg::APR => 0,
            reg::TMCCT => self.current_count(now_ns),
            reg::PPR => u32::from(self.ppr()),
            _ => self.reg(offset),
        }
    }

    /// `kvm_lapic_reg_read`: `len` bytes at `offset`, or `None` for an
    /// access KVM refuses (crossing the 32-bit word, unreadable register,
    /// a length other than 1, 2 or 4).
    fn reg_read(&self, offset: u32, len: usize, now_ns: u64) -> Option<u32> {
        let align = offset & 0xf;
        // The length first: it bounds the sum and the shift below.
        if !matches!(len, 1 | 2 | 4) || align as usize + len > 4 {
            return None;
        }
        if offset > reg::SELF_IPI || self.readable_mask() & bit(offset) == 0 {
            return None;
        }
        let v = self.read_aligned(offset & !0xf, now_ns) >> (8 * align);
        Some(match len {
            1 => v & 0xff,
            2 => v & 0xffff,
            _ => v,
        })
    }

    /// A guest read of `len` bytes at `offset` in the xAPIC page at host
    /// time `now_ns` (`apic_mmio_read`), little-endian in the low bytes.
    /// When the page does not decode ([`Lapic::mmio_active`]) every byte
    /// reads 0xff (8 at most here: wider reads are all ones too). A read
    /// KVM refuses gives 0: KVM leaves the destination as it was.
    pub fn mmio_read(&self, offset: u32, len: usize, now_ns: u64) -> u64 {
        if !self.mmio_active() {
            return match len {
                0 => 0,
                1..=7 => (1u64 << (8 * len)) - 1,
                _ => u64::MAX,
            };
        }
        if offset >= MMIO_SIZE {
            return 0;
        }
        self.reg_read(offset, len, now_ns).map_or(0, u64::from)
    }

    /// A guest write of `data` at `offset` in the xAPIC page
    /// (`apic_mmio_write`): only aligned 4-byte writes count (SDM: 32-bit
    /// accesses to 16-byte-aligned registers), others are dropped, as are
    /// writes while the page does not decode and writes KVM refuses
    /// (read-only and reserved registers).
    pub fn mmio_write(&mut self, offset: u32, data: &[u8], now_ns: u64) -> Effects {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return Effects::default();
        };
        if !self.mmio_active() || offset & 0xf != 0 || offset >= MMIO_SIZE {
            return Effects::default();
        }
        self.write_tracked(offset, u32::from_le_bytes(bytes), now_ns)
            .unwrap_or_default()
    }

    /// `kvm_lapic_reg_write` with its effects; `Err` where KVM returns 1.
    fn write_tracked(&mut self, offset: u32, v: u32, now_ns: u64) -> Result<Effects, Gp> {
        let before = self.before();
        let mut fx = Effects::default();
        let r = self.reg_write(offset, v, now_ns, &mut fx);
        // A refused write changes nothing, but the effects stay honest.
        let fx = self.after(before, fx);
        r.map(|()| fx)
    }

    /// `kvm_lapic_reg_write`.
    fn reg_write(&mut self, offset: u32, v: u32, now_ns: u64, fx: &mut Effects) -> Result<(), Gp> {
        let x2 = self.x2apic_mode();
        match offset {
            reg::ID if !x2 => self.set_xapic_id(v >> 24),
            reg::TPR => {
                self.set_reg(reg::TPR, v & 0xff);
                self.update_ppr();
            }
            // Any value, in both modes: KVM does not check x2APIC's "write 0".
            reg::EOI => fx.eoi = self.do_eoi(),
            reg::LDR if !x2 => self.set_reg(reg::LDR, v & 0xff00_0000),
            reg::DFR if !x2 => self.set_reg(reg::DFR, v | 0x0fff_ffff),
            reg::SPIV => self.write_spiv(v),
            reg::ICR if !x2 => {
                let v = v & !ICR_BUSY;
                fx.ipi = Some(Ipi::from_icr(v, self.reg(reg::ICR2), false));
                self.set_reg(reg::ICR, v);
            }
            reg::ICR2 if !x2 => self.set_reg(reg::ICR2, v & 0xff00_0000),
            reg::LVT_TIMER => {
                let v = self.lvt_value(v) & (Lvt::Timer.write_mask() | self.cfg.timer_modes.mask());
                self.set_reg(reg::LVT_TIMER, v);
                self.update_lvtt();
            }
            reg::LVT_THERMAL
            | reg::LVT_PMC
            | reg::LVT_LINT0
            | reg::LVT_LINT1
            | reg::LVT_ERROR
            | reg::LVT_CMCI => {
                let lvt = Lvt::at(offset).ok_or(Gp)?;
                if !self.lvt_supported(lvt) {
                    return Err(Gp);
                }
                let v = self.lvt_value(v) & lvt.write_mask();
                self.set_reg(offset, v);
            }
            reg::TMICT => self.write_tmict(v, now_ns),
            reg::TDCR => self.write_tdcr(v, now_ns),
            // ESR is not latched (KVM records no errors); x2APIC wants 0.
            reg::ESR if x2 && v != 0 => return Err(Gp),
            reg::ESR => {}
            reg::SELF_IPI if x2 && v & !VECTOR_MASK == 0 => {
                fx.ipi = Some(Ipi {
                    shorthand: Shorthand::ToSelf,
                    ..Ipi::from_icr(v, 0, true)
                });
            }
            // Read-only (LVR, APR, PPR, banks, TMCCT), reserved, RRR, and
            // the xAPIC-only registers in x2APIC mode.
            _ => return Err(Gp),
        }
        Ok(())
    }

    /// An LVT write while software-disabled keeps the mask bit set.
    fn lvt_value(&self, v: u32) -> u32 {
        if self.sw_enabled() {
            v
        } else {
            v | LVT_MASKED
        }
    }

    /// A SPIV write: bits 9:0, and 12 if the LVR offers directed EOI.
    /// Clearing the software enable masks every LVT (the timer keeps
    /// counting, masked).
    fn write_spiv(&mut self, v: u32) {
        let mut mask = 0x3ff;
        if self.reg(reg::LVR) & LVR_DIRECTED_EOI != 0 {
            mask |= SPIV_DIRECTED_EOI;
        }
        self.set_reg(reg::SPIV, v & mask);
        if v & SPIV_ENABLED == 0 {
            for lvt in self.lvts() {
                let o = lvt.offset();
                self.set_reg(o, self.reg(o) | LVT_MASKED);
            }
            self.update_lvtt();
        }
    }

    /// Map an x2APIC MSR to its register offset; #GP unless in x2APIC mode.
    fn x2apic_offset(&self, msr: u32) -> Result<u32, Gp> {
        if !(X2APIC_FIRST..=X2APIC_LAST).contains(&msr) || !self.x2apic_mode() {
            return Err(Gp);
        }
        Ok((msr - X2APIC_FIRST) << 4)
    }

    /// RDMSR of x2APIC register MSR `msr` (0x800–0x8ff) at `now_ns`
    /// (`kvm_x2apic_msr_read`): #GP outside x2APIC mode, for an MSR outside
    /// the range, or for an unreadable register (write-only EOI and
    /// SELF_IPI, APR, DFR, ICR2, reserved). ICR (0x830) reads all 64 bits.
    pub fn rdmsr(&self, msr: u32, now_ns: u64) -> Result<u64, Gp> {
        let offset = self.x2apic_offset(msr)?;
        if offset == reg::ICR {
            return Ok(u64::from(self.reg(reg::ICR)) | (u64::from(self.reg(reg::ICR2)) << 32));
        }
        self.reg_read(offset, 4, now_ns).map(u64::from).ok_or(Gp)
    }

    /// WRMSR of x2APIC register MSR `msr` at `now_ns`
    /// (`kvm_x2apic_msr_write`). #GP outside x2APIC mode or the range; for
    /// bits 63:32 set (but in ICR); for ID, LDR, DFR, ICR2, read-only and
    /// reserved registers; a non-zero ESR write; SELF_IPI bits above 7; ICR
    /// bits 31:20, 17:16 or 13. Other reserved bits are dropped, as KVM.
    /// ICR's busy bit is cleared (KVM ignores it, as Intel does).
    pub fn wrmsr(&mut self, msr: u32, value: u64, now_ns: u64) -> Result<Effects, Gp> {
        let offset = self.x2apic_offset(msr)?;
        if offset == reg::ICR {
            if value & X2APIC_ICR_RESERVED != 0 {
                return Err(Gp);
            }
            let (low, high) = (value as u32 & !ICR_BUSY, (value >> 32) as u32);
            // Stored split, as ICR/ICR2 (KVM's layout on SVM; on VMX it is
            // one 64-bit word, which KVM_GET_LAPIC splits the same way).
            self.set_reg(reg::ICR, low);
            self.set_reg(reg::ICR2, high);
            return Ok(Effects {
                ipi: Some(Ipi::from_icr(low, high, true)),
                ..Effects::default()
            });
        }
        let v = u32::try_from(value).map_err(|_| Gp)?;
        self.write_tracked(offset, v, now_ns)
    }

    /// `KVM_GET_LAPIC` at `now_ns` (`kvm_apic_get_state`): the register
    /// page with TMCCT computed. In x2APIC mode the ID is the x2APIC ID,
    /// stored as is with `x2apic_format` (`KVM_X2APIC_API_USE_32BIT_IDS`)
    /// and shifted left by 24 (as an xAPIC ID) without.
    pub fn get_state(&self, now_ns: u64, x2apic_format: bool) -> [u8; STATE_SIZE] {
        let mut regs = self.regs;
        regs[reg::TMCCT as usize / 4] = self.read_aligned(reg::TMCCT, now_ns);
        if self.x2apic_mode() && !x2apic_format {
            regs[reg::ID as usize / 4] = self.vcpu_id << 24;
        }
        let mut out = [0; STATE_SIZE];
        // Indexed, not zipped: the zip of chunk iterators leaves code
        // objtool cannot follow in the module.
        for (i, w) in regs.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// `KVM_SET_LAPIC` at `now_ns` (`kvm_apic_set_state`): the page is
    /// taken as it is, except that LVR is recomputed, PPR recomputed, and
    /// in x2APIC mode the ID is the vCPU's (without `x2apic_format` any ID
    /// given is ignored; with it a different one is refused) and LDR is
    /// derived from it. The timer restarts from the state's TMCCT (see
    /// `timer.rs`), the TSC deadline stays, the arbitration count resets.
    ///
    /// As KVM, SPIV is applied before the ID check, so a refused state
    /// still leaves its SPIV.
    pub fn set_state(
        &mut self,
        state: &[u8; STATE_SIZE],
        now_ns: u64,
        x2apic_format: bool,
    ) -> Result<Effects, InvalidState> {
        let before = self.before();
        let mut regs = [0u32; STATE_SIZE / 4];
        for (i, w) in regs.iter_mut().enumerate() {
            let mut b = [0; 4];
            b.copy_from_slice(&state[i * 4..i * 4 + 4]);
            *w = u32::from_le_bytes(b);
        }
        self.set_reg(reg::SPIV, regs[reg::SPIV as usize / 4]);
        if self.x2apic_mode() {
            let id = &mut regs[reg::ID as usize / 4];
            if x2apic_format && *id != self.vcpu_id {
                return Err(InvalidState);
            }
            *id = self.vcpu_id;
            regs[reg::LDR as usize / 4] = x2apic_ldr(self.vcpu_id);
        }
        self.regs = regs;
        self.set_version();
        self.update_ppr();
        self.restart_from_state(now_ns);
        self.arb_prio = 0;
        let mut fx = self.after(before, Effects::default());
        // KVM always asks for KVM_REQ_EVENT here.
        fx.event = self.pending_vector().is_some();
        Ok(fx)
    }
}
