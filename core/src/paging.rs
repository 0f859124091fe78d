//! Guest page-table walker: linear to guest-physical address with x86 access checks.
//!
//! The emulator and instruction fetch need the GPA behind a guest linear
//! address. This walks the guest's own tables (real mode or paging off,
//! 32-bit with PSE, PAE, 4- and 5-level long mode) and applies the checks the
//! CPU would: present, reserved bits, write with CR0.WP, user/supervisor,
//! NX with EFER.NXE, SMEP and SMAP. A failure comes back as the #PF error
//! code to inject, with CR2 being the linear address walked.
//!
//! Memory is read through [`GuestPhys`]; accessed and dirty bits are set with
//! compare-and-exchange after a successful walk, like hardware (and KVM) do,
//! and the walk restarts if another vCPU changed an entry meanwhile.
//!
//! Not modelled: protection keys, SMAP's implicit supervisor accesses, and
//! PAE PDPTE caching (PDPTEs are re-read from memory on every walk).
//!
//! Self-contained: uses only `core`.

/// #PF error code: the page was present (protection or reserved-bit fault).
pub const PFERR_PRESENT: u32 = 1 << 0;
/// #PF error code: the access was a write.
pub const PFERR_WRITE: u32 = 1 << 1;
/// #PF error code: the access was from CPL 3.
pub const PFERR_USER: u32 = 1 << 2;
/// #PF error code: a reserved bit was set in a paging-structure entry.
pub const PFERR_RSVD: u32 = 1 << 3;
/// #PF error code: the access was an instruction fetch.
pub const PFERR_FETCH: u32 = 1 << 4;

/// Page-table entry: present.
pub const PTE_P: u64 = 1 << 0;
/// Page-table entry: writable.
pub const PTE_RW: u64 = 1 << 1;
/// Page-table entry: user-accessible.
pub const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
/// Page-table entry: a large page (2 MiB/4 MiB/1 GiB) rather than a table.
pub const PTE_PS: u64 = 1 << 7;
const PTE_NX: u64 = 1 << 63;
/// Page-table entry: the physical-address bits (51:12).
pub const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

const CR0_PE: u64 = 1 << 0;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const RFLAGS_AC: u64 = 1 << 18;

/// How many times a walk restarts when an A/D update races with another writer.
const MAX_RETRIES: u32 = 8;

/// The guest's paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: linear addresses are physical.
    Off,
    /// 32-bit paging (two levels of 4-byte entries, 4 MiB pages with PSE).
    Bits32,
    /// PAE paging (4 PDPTEs, then two levels of 8-byte entries).
    Pae,
    /// 4-level long-mode paging.
    Long4,
    /// 5-level long-mode paging (CR4.LA57).
    Long5,
}

impl PagingMode {
    /// Derives the mode from CR0, CR4 and EFER.
    pub fn from_regs(cr0: u64, cr4: u64, efer: u64) -> Self {
        if cr0 & CR0_PG == 0 || cr0 & CR0_PE == 0 {
            PagingMode::Off
        } else if efer & EFER_LMA != 0 {
            if cr4 & CR4_LA57 != 0 {
                PagingMode::Long5
            } else {
                PagingMode::Long4
            }
        } else if cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }
}

/// Everything about the vCPU that affects a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkConfig {
    /// Paging mode.
    pub mode: PagingMode,
    /// CR3.
    pub cr3: u64,
    /// CR0.WP: supervisor writes honour read-only pages.
    pub wp: bool,
    /// CR4.PSE: 4 MiB pages in 32-bit paging.
    pub pse: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP.
    pub smap: bool,
    /// EFER.NXE: bit 63 is execute-disable rather than reserved.
    pub nxe: bool,
    /// RFLAGS.AC: lets supervisor data accesses reach user pages under SMAP.
    pub ac: bool,
    /// Guest MAXPHYADDR (CPUID 0x80000008 EAX[7:0]).
    pub maxphyaddr: u8,
    /// 1 GiB pages supported (CPUID 0x80000001 EDX[26]).
    pub gbpages: bool,
    /// AMD reserved-bit rules (bit 8 of PML4Es/PML5Es is reserved).
    pub amd: bool,
}

impl WalkConfig {
    /// Builds a configuration from control registers.
    pub fn from_regs(cr0: u64, cr3: u64, cr4: u64, efer: u64, rflags: u64) -> Self {
        WalkConfig {
            mode: PagingMode::from_regs(cr0, cr4, efer),
            cr3,
            wp: cr0 & CR0_WP != 0,
            pse: cr4 & CR4_PSE != 0,
            smep: cr4 & CR4_SMEP != 0,
            smap: cr4 & CR4_SMAP != 0,
            nxe: efer & EFER_NXE != 0,
            ac: rflags & RFLAGS_AC != 0,
            maxphyaddr: 52,
            gbpages: true,
            amd: false,
        }
    }
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A write.
    pub write: bool,
    /// From CPL 3.
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

impl Access {
    /// Supervisor data read.
    pub const READ: Self = Access {
        write: false,
        user: false,
        fetch: false,
    };
    /// Supervisor data write.
    pub const WRITE: Self = Access {
        write: true,
        user: false,
        fetch: false,
    };
    /// Supervisor instruction fetch.
    pub const FETCH: Self = Access {
        write: false,
        user: false,
        fetch: true,
    };

    /// The same access made from CPL 3 when `user` is true.
    pub const fn user(self, user: bool) -> Self {
        Access { user, ..self }
    }
}

/// A paging-structure entry could not be read or updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError;

/// Guest-physical memory as the walker sees it.
pub trait GuestPhys {
    /// Reads the 4-byte entry at `gpa`.
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemError>;
    /// Reads the 8-byte entry at `gpa`.
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemError>;
    /// Stores `new` at `gpa` if it still holds `old`; returns whether it did.
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Result<bool, MemError>;
    /// Stores `new` at `gpa` if it still holds `old`; returns whether it did.
    fn cmpxchg_u64(&mut self, gpa: u64, old: u64, new: u64) -> Result<bool, MemError>;
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Guest physical address of the byte at the linear address.
    pub gpa: u64,
    /// Size of the page that maps it (4 KiB, 2 MiB, 4 MiB or 1 GiB).
    pub page_size: u64,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// Executable (no NX at any level).
    pub executable: bool,
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// Inject #PF with this error code and CR2 = the linear address.
    PageFault {
        /// The #PF error code (`PFERR_*`).
        error_code: u32,
    },
    /// The address is not canonical (#GP, or #SS for stack accesses).
    NonCanonical,
    /// A paging-structure entry at this GPA is not in guest RAM.
    Memory {
        /// GPA of the entry.
        gpa: u64,
    },
    /// Entries kept changing under the walk; try again later.
    Busy,
}

/// Mask of bits `lo..=hi`.
const fn bits(lo: u32, hi: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & !((1u64 << lo) - 1)
}

/// One paging-structure entry visited by the walk, for A/D updates.
#[derive(Clone, Copy, Default)]
struct Visited {
    gpa: u64,
    val: u64,
    wide: bool,
    /// PAE PDPTEs have no accessed bit to set.
    no_ad: bool,
}

enum Attempt {
    Done(Translation),
    Retry,
}

/// Translates linear address `gva` for `access` under `cfg`.
pub fn translate<M: GuestPhys>(
    mem: &mut M,
    cfg: &WalkConfig,
    gva: u64,
    access: Access,
) -> Result<Translation, WalkError> {
    for _ in 0..MAX_RETRIES {
        match walk(mem, cfg, gva, access)? {
            Attempt::Done(t) => return Ok(t),
            Attempt::Retry => {}
        }
    }
    Err(WalkError::Busy)
}

fn walk<M: GuestPhys>(
    mem: &mut M,
    cfg: &WalkConfig,
    gva: u64,
    access: Access,
) -> Result<Attempt, WalkError> {
    let (levels, wide) = match cfg.mode {
        PagingMode::Off => {
            return Ok(Attempt::Done(Translation {
                gpa: gva & 0xffff_ffff,
                page_size: 1 << 12,
                writable: true,
                user: true,
                executable: true,
            }))
        }
        PagingMode::Bits32 => (2u32, false),
        PagingMode::Pae => (3, true),
        PagingMode::Long4 => (4, true),
        PagingMode::Long5 => (5, true),
    };
    let long = levels >= 4;
    let va = if long {
        let top = if levels == 5 { 56 } else { 47 };
        let ext = ((gva as i64) << (63 - top)) >> (63 - top);
        if ext as u64 != gva {
            return Err(WalkError::NonCanonical);
        }
        gva
    } else {
        gva & 0xffff_ffff
    };

    let maxphy = u32::from(cfg.maxphyaddr.clamp(32, 52));
    let addr_mask = bits(12, maxphy - 1);
    // Bits above MAXPHYADDR are reserved; PAE entries also reserve 62:52.
    let high_rsvd = if maxphy < 52 {
        bits(maxphy, if long { 51 } else { 62 })
    } else if long {
        0
    } else {
        bits(52, 62)
    };
    let nx_rsvd = if cfg.nxe { 0 } else { PTE_NX };
    // The I/D bit is reported only where execute permission exists.
    let fetch_reported = access.fetch && (cfg.smep || (cfg.nxe && wide));
    let mut base_err = 0;
    if access.write {
        base_err |= PFERR_WRITE;
    }
    if access.user {
        base_err |= PFERR_USER;
    }
    if fetch_reported {
        base_err |= PFERR_FETCH;
    }
    let not_present = WalkError::PageFault {
        error_code: base_err,
    };
    let rsvd = WalkError::PageFault {
        error_code: base_err | PFERR_PRESENT | PFERR_RSVD,
    };

    let mut table = match cfg.mode {
        PagingMode::Bits32 => cfg.cr3 & bits(12, 31),
        PagingMode::Pae => cfg.cr3 & bits(5, 31),
        _ => cfg.cr3 & addr_mask,
    };
    let mut writable = true;
    let mut user = true;
    let mut nx = false;
    let mut visited = [Visited::default(); 5];
    let mut nvisited = 0;
    let mut level = levels;
    let (gpa, page_size) = loop {
        let (shift, index) = if wide {
            let shift = 12 + 9 * (level - 1);
            (shift, (va >> shift) & 0x1ff)
        } else {
            let shift = 12 + 10 * (level - 1);
            (shift, (va >> shift) & 0x3ff)
        };
        let entry_gpa = table + index * if wide { 8 } else { 4 };
        let pte = if wide {
            mem.read_u64(entry_gpa)
        } else {
            mem.read_u32(entry_gpa).map(u64::from)
        }
        .map_err(|_| WalkError::Memory { gpa: entry_gpa })?;
        if pte & PTE_P == 0 {
            return Err(not_present);
        }

        if cfg.mode == PagingMode::Pae && level == 3 {
            // PDPTEs carry no permissions and no A bit.
            if pte & (PTE_NX | high_rsvd | bits(5, 8) | bits(1, 2)) != 0 {
                return Err(rsvd);
            }
            visited[nvisited] = Visited {
                gpa: entry_gpa,
                val: pte,
                wide,
                no_ad: true,
            };
            nvisited += 1;
            table = pte & addr_mask;
            level -= 1;
            continue;
        }

        let large = pte & PTE_PS != 0
            && match (wide, level) {
                (false, 2) => cfg.pse,
                (true, 2) => true,
                (true, 3) => long,
                _ => false,
            };
        let mut reserved = 0;
        if wide {
            reserved |= high_rsvd | nx_rsvd;
            if level >= 4 {
                reserved |= PTE_PS;
                if cfg.amd {
                    reserved |= 1 << 8;
                }
            }
            if level == 3 && long && pte & PTE_PS != 0 && !cfg.gbpages {
                reserved |= PTE_PS;
            }
            if large {
                // Between PAT (bit 12) and the frame address.
                reserved |= bits(13, shift - 1);
            }
        } else if large {
            // PSE-36: bits (M-19):13 hold address bits (M-1):32, M <= 40.
            let m = maxphy.min(40);
            reserved |= bits(m - 19, 21);
        }
        if pte & reserved != 0 {
            return Err(rsvd);
        }

        writable &= pte & PTE_RW != 0;
        user &= pte & PTE_US != 0;
        nx |= cfg.nxe && wide && pte & PTE_NX != 0;
        visited[nvisited] = Visited {
            gpa: entry_gpa,
            val: pte,
            wide,
            no_ad: false,
        };
        nvisited += 1;

        if level == 1 || large {
            let size = 1u64 << shift;
            let frame = if wide {
                pte & addr_mask & !(size - 1)
            } else if large {
                (pte & bits(22, 31)) | (((pte >> 13) & 0xff) << 32)
            } else {
                pte & bits(12, 31)
            };
            break (frame | (va & (size - 1)), size);
        }
        table = pte & if wide { addr_mask } else { bits(12, 31) };
        level -= 1;
    };

    let denied = if access.user {
        !user || (access.write && !writable)
    } else {
        (access.write && !writable && cfg.wp)
            || (access.fetch && cfg.smep && user)
            || (!access.fetch && cfg.smap && user && !cfg.ac)
    } || (access.fetch && nx);
    if denied {
        return Err(WalkError::PageFault {
            error_code: base_err | PFERR_PRESENT,
        });
    }

    // Set A on every entry used and D on the leaf for writes.
    for (i, v) in visited[..nvisited].iter().enumerate() {
        if v.no_ad {
            continue;
        }
        let mut new = v.val | PTE_A;
        if access.write && i == nvisited - 1 {
            new |= PTE_D;
        }
        if new == v.val {
            continue;
        }
        let ok = if v.wide {
            mem.cmpxchg_u64(v.gpa, v.val, new)
        } else {
            mem.cmpxchg_u32(v.gpa, v.val as u32, new as u32)
        }
        .map_err(|_| WalkError::Memory { gpa: v.gpa })?;
        if !ok {
            return Ok(Attempt::Retry);
        }
    }

    Ok(Attempt::Done(Translation {
        gpa,
        page_size,
        writable,
        user,
        executable: !nx,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 KiB of guest memory at GPA 0.
    struct Mem {
        bytes: [u8; 0x10000],
        /// Make the next compare-and-exchange fail, as if another vCPU raced.
        fail_cmpxchg: u32,
    }

    impl Mem {
        fn new() -> Self {
            Mem {
                bytes: [0; 0x10000],
                fail_cmpxchg: 0,
            }
        }
        fn set64(&mut self, gpa: u64, v: u64) {
            let a = gpa as usize;
            self.bytes[a..a + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn set32(&mut self, gpa: u64, v: u32) {
            let a = gpa as usize;
            self.bytes[a..a + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn get64(&self, gpa: u64) -> u64 {
            let a = gpa as usize;
            u64::from_le_bytes(self.bytes[a..a + 8].try_into().unwrap())
        }
    }

    impl GuestPhys for Mem {
        fn read_u32(&mut self, gpa: u64) -> Result<u32, MemError> {
            let a = usize::try_from(gpa).map_err(|_| MemError)?;
            let b = self.bytes.get(a..a + 4).ok_or(MemError)?;
            Ok(u32::from_le_bytes(b.try_into().unwrap()))
        }
        fn read_u64(&mut self, gpa: u64) -> Result<u64, MemError> {
            let a = usize::try_from(gpa).map_err(|_| MemError)?;
            let b = self.bytes.get(a..a + 8).ok_or(MemError)?;
            Ok(u64::from_le_bytes(b.try_into().unwrap()))
        }
        fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Result<bool, MemError> {
            if self.fail_cmpxchg > 0 {
                self.fail_cmpxchg -= 1;
                return Ok(false);
            }
            if self.read_u32(gpa)? != old {
                return Ok(false);
            }
            self.set32(gpa, new);
            Ok(true)
        }
        fn cmpxchg_u64(&mut self, gpa: u64, old: u64, new: u64) -> Result<bool, MemError> {
            if self.fail_cmpxchg > 0 {
                self.fail_cmpxchg -= 1;
                return Ok(false);
            }
            if self.read_u64(gpa)? != old {
                return Ok(false);
            }
            self.set64(gpa, new);
            Ok(true)
        }
    }

    const P: u64 = PTE_P;
    const RW: u64 = PTE_RW;
    const US: u64 = PTE_US;

    fn long4(cr3: u64) -> WalkConfig {
        WalkConfig {
            mode: PagingMode::Long4,
            cr3,
            wp: true,
            pse: false,
            smep: false,
            smap: false,
            nxe: true,
            ac: false,
            maxphyaddr: 48,
            gbpages: true,
            amd: false,
        }
    }

    /// 4-level tables at 0x1000.. mapping 0x7f_0000_1000 -> 0x9000 with `leaf` flags.
    fn long4_tables(leaf: u64) -> (Mem, u64) {
        let mut m = Mem::new();
        let va = 0x7f_0000_1000u64;
        m.set64(0x1000 + ((va >> 39) & 0x1ff) * 8, 0x2000 | P | RW | US);
        m.set64(0x2000 + ((va >> 30) & 0x1ff) * 8, 0x3000 | P | RW | US);
        m.set64(0x3000 + ((va >> 21) & 0x1ff) * 8, 0x4000 | P | RW | US);
        m.set64(0x4000 + ((va >> 12) & 0x1ff) * 8, 0x9000 | leaf);
        (m, va)
    }

    #[test]
    fn paging_off_is_identity() {
        let mut m = Mem::new();
        let cfg = WalkConfig::from_regs(0, 0, 0, 0, 0);
        let t = translate(&mut m, &cfg, 0xb8000, Access::WRITE).unwrap();
        assert_eq!(t.gpa, 0xb8000);
    }

    #[test]
    fn long4_translates_and_sets_accessed_and_dirty() {
        let (mut m, va) = long4_tables(P | RW);
        let t = translate(&mut m, &long4(0x1000), va + 0x123, Access::WRITE).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x9123, 0x1000));
        assert_eq!(m.get64(0x4000 + 8) & (PTE_A | PTE_D), PTE_A | PTE_D);
        assert_ne!(m.get64(0x1000 + ((va >> 39) & 0x1ff) * 8) & PTE_A, 0);
    }

    #[test]
    fn read_sets_accessed_but_not_dirty() {
        let (mut m, va) = long4_tables(P | RW);
        translate(&mut m, &long4(0x1000), va, Access::READ).unwrap();
        assert_eq!(m.get64(0x4000 + 8) & (PTE_A | PTE_D), PTE_A);
    }

    #[test]
    fn not_present_leaf_gives_error_code_without_p() {
        let (mut m, va) = long4_tables(0);
        let e = translate(&mut m, &long4(0x1000), va, Access::WRITE.user(true));
        assert_eq!(
            e,
            Err(WalkError::PageFault {
                error_code: PFERR_WRITE | PFERR_USER
            })
        );
    }

    #[test]
    fn supervisor_write_to_read_only_page_faults_only_with_wp() {
        let (mut m, va) = long4_tables(P);
        let mut cfg = long4(0x1000);
        assert_eq!(
            translate(&mut m, &cfg, va, Access::WRITE),
            Err(WalkError::PageFault {
                error_code: PFERR_PRESENT | PFERR_WRITE
            })
        );
        cfg.wp = false;
        assert!(translate(&mut m, &cfg, va, Access::WRITE).is_ok());
    }

    #[test]
    fn user_access_to_supervisor_page_faults() {
        let (mut m, va) = long4_tables(P | RW);
        assert_eq!(
            translate(&mut m, &long4(0x1000), va, Access::READ.user(true)),
            Err(WalkError::PageFault {
                error_code: PFERR_PRESENT | PFERR_USER
            })
        );
    }

    #[test]
    fn nx_page_faults_on_fetch_with_id_bit() {
        let (mut m, va) = long4_tables(P | PTE_NX);
        assert_eq!(
            translate(&mut m, &long4(0x1000), va, Access::FETCH),
            Err(WalkError::PageFault {
                error_code: PFERR_PRESENT | PFERR_FETCH
            })
        );
    }

    #[test]
    fn nx_bit_is_reserved_without_nxe() {
        let (mut m, va) = long4_tables(P | PTE_NX);
        let mut cfg = long4(0x1000);
        cfg.nxe = false;
        assert_eq!(
            translate(&mut m, &cfg, va, Access::READ),
            Err(WalkError::PageFault {
                error_code: PFERR_PRESENT | PFERR_RSVD
            })
        );
    }

    #[test]
    fn address_bits_above_maxphyaddr_are_reserved() {
        let (mut m, va) = long4_tables(P | (1 << 50));
        assert_eq!(
            translate(&mut m, &long4(0x1000), va, Access::READ),
            Err(WalkError::PageFault {
                error_code: PFERR_PRESENT | PFERR_RSVD
            })
        );
    }

    #[test]
    fn smep_blocks_supervisor_fetch_from_user_page() {
        let (mut m, va) = long4_tables(P | US);
        let mut cfg = long4(0x1000);
        cfg.smep = true;
        assert_eq!(
            translate(&mut m, &cfg, va, Access::FETCH),
            Err(WalkError::PageFault {
                error_code: PFERR_PRESENT | PFERR_FETCH
            })
        );
    }

    #[test]
    fn smap_blocks_supervisor_read_of_user_page_unless_ac() {
        let (mut m, va) = long4_tables(P | US);
        let mut cfg = long4(0x1000);
        cfg.smap = true;
        assert!(translate(&mut m, &cfg, va, Access::READ).is_err());
        cfg.ac = true;
        assert!(translate(&mut m, &cfg, va, Access::READ).is_ok());
    }

    #[test]
    fn two_mib_page() {
        let mut m = Mem::new();
        m.set64(0x1000, 0x2000 | P | RW);
        m.set64(0x2000, 0x3000 | P | RW);
        m.set64(0x3000 + 8, 0x40_0000 | P | RW | PTE_PS);
        let t = translate(&mut m, &long4(0x1000), 0x2f_1234, Access::READ).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x4f_1234, 0x20_0000));
    }

    #[test]
    fn misaligned_large_page_frame_is_reserved() {
        let mut m = Mem::new();
        m.set64(0x1000, 0x2000 | P | RW);
        m.set64(0x2000, 0x3000 | P | RW);
        m.set64(0x3000, 0x40_2000 | P | PTE_PS);
        assert!(matches!(
            translate(&mut m, &long4(0x1000), 0x1000, Access::READ),
            Err(WalkError::PageFault { error_code }) if error_code & PFERR_RSVD != 0
        ));
    }

    #[test]
    fn one_gib_page_needs_gbpages() {
        let mut m = Mem::new();
        m.set64(0x1000, 0x2000 | P | RW);
        m.set64(0x2000 + 8, 0x8000_0000 | P | RW | PTE_PS);
        let mut cfg = long4(0x1000);
        let t = translate(&mut m, &cfg, 0x4000_0042, Access::READ).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x8000_0042, 1 << 30));
        cfg.gbpages = false;
        assert!(translate(&mut m, &cfg, 0x4000_0042, Access::READ).is_err());
    }

    #[test]
    fn ps_in_pml4e_is_reserved() {
        let mut m = Mem::new();
        m.set64(0x1000, 0x2000 | P | PTE_PS);
        assert_eq!(
            translate(&mut m, &long4(0x1000), 0, Access::READ),
            Err(WalkError::PageFault {
                error_code: PFERR_PRESENT | PFERR_RSVD
            })
        );
    }

    #[test]
    fn five_level_walk() {
        let mut m = Mem::new();
        let va: u64 = 0x0001_0000_0000_0000 | 0x5000;
        // The level-5 index is bits 56:48.
        let i5 = (va >> 48) & 0x1ff;
        m.set64(0x1000 + i5 * 8, 0x2000 | P | RW);
        m.set64(0x2000, 0x3000 | P | RW);
        m.set64(0x3000, 0x4000 | P | RW);
        m.set64(0x4000, 0x5000 | P | RW);
        m.set64(0x5000 + 5 * 8, 0xa000 | P | RW);
        let mut cfg = long4(0x1000);
        cfg.mode = PagingMode::Long5;
        let t = translate(&mut m, &cfg, va | 0x10, Access::READ).unwrap();
        assert_eq!(t.gpa, 0xa010);
    }

    #[test]
    fn non_canonical_address_is_rejected() {
        let mut m = Mem::new();
        assert_eq!(
            translate(&mut m, &long4(0x1000), 0x0000_8000_0000_0000, Access::READ),
            Err(WalkError::NonCanonical)
        );
    }

    #[test]
    fn bits32_with_4k_and_4m_pages() {
        let mut m = Mem::new();
        // PDE 0 -> PT at 0x2000; PTE 3 -> 0x7000.
        m.set32(0x1000, 0x2000 | 0x3);
        m.set32(0x2000 + 3 * 4, 0x7000 | 0x3);
        // PDE 1: 4 MiB page at 0x0080_0000, plus PSE-36 bits (address bit 32).
        m.set32(0x1004, 0x0080_0000 | (1 << 13) | 0x83);
        let mut cfg = WalkConfig::from_regs(CR0_PE | CR0_PG, 0x1000, CR4_PSE, 0, 0);
        cfg.maxphyaddr = 40;
        assert_eq!(
            translate(&mut m, &cfg, 0x3456, Access::READ).unwrap().gpa,
            0x7456
        );
        let t = translate(&mut m, &cfg, 0x0040_1234, Access::READ).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x1_0080_1234, 0x40_0000));
        // Without CR4.PSE the PS bit is ignored: 0x0080_0000 is a page table.
        cfg.pse = false;
        assert!(matches!(
            translate(&mut m, &cfg, 0x0040_1234, Access::READ),
            Err(WalkError::Memory { .. })
        ));
    }

    #[test]
    fn bits32_sets_accessed_with_four_byte_entries() {
        let mut m = Mem::new();
        m.set32(0x1000, 0x2000 | 0x3);
        m.set32(0x2000, 0x7000 | 0x3);
        let cfg = WalkConfig::from_regs(CR0_PE | CR0_PG, 0x1000, 0, 0, 0);
        translate(&mut m, &cfg, 0x10, Access::WRITE).unwrap();
        assert_eq!(m.read_u32(0x2000).unwrap() & 0x60, 0x60);
        // The neighbouring entry is untouched.
        assert_eq!(m.read_u32(0x2004).unwrap(), 0);
    }

    #[test]
    fn pae_walk_and_pdpte_reserved_bits() {
        let mut m = Mem::new();
        // CR3 at 0x1020 (32-byte aligned): PDPTE 1 -> PD at 0x2000.
        m.set64(0x1020 + 8, 0x2000 | P);
        m.set64(0x2000, 0x3000 | P | RW);
        m.set64(0x3000 + 8, 0x8000 | P | RW);
        let cfg = WalkConfig::from_regs(CR0_PE | CR0_PG, 0x1020, CR4_PAE, EFER_NXE, 0);
        let t = translate(&mut m, &cfg, 0x4000_1abc, Access::WRITE).unwrap();
        assert_eq!(t.gpa, 0x8abc);
        // PDPTEs have no A bit and RW is reserved in them.
        assert_eq!(m.get64(0x1028), 0x2000 | P);
        m.set64(0x1028, 0x2000 | P | RW);
        assert!(matches!(
            translate(&mut m, &cfg, 0x4000_1abc, Access::READ),
            Err(WalkError::PageFault { error_code }) if error_code & PFERR_RSVD != 0
        ));
    }

    #[test]
    fn walk_retries_after_lost_race_on_accessed_bit() {
        let (mut m, va) = long4_tables(P | RW);
        m.fail_cmpxchg = 2;
        assert!(translate(&mut m, &long4(0x1000), va, Access::READ).is_ok());
        m = long4_tables(P | RW).0;
        m.fail_cmpxchg = u32::MAX;
        assert_eq!(
            translate(&mut m, &long4(0x1000), va, Access::READ),
            Err(WalkError::Busy)
        );
    }

    #[test]
    fn entry_outside_guest_memory_is_a_memory_error() {
        let mut m = Mem::new();
        m.set64(0x1000, 0x10_0000 | P);
        assert_eq!(
            translate(&mut m, &long4(0x1000), 0, Access::READ),
            Err(WalkError::Memory { gpa: 0x10_0000 })
        );
    }
}
