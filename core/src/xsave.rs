//! The guest FPU state in KVM's userspace formats, as KVM converts it:
//! `struct kvm_xsave` (the standard, uncompacted XSAVE layout;
//! `fpu_copy_guest_fpstate_to_uabi` / `fpu_copy_uabi_to_guest_fpstate`)
//! and `struct kvm_fpu` (`kvm_arch_vcpu_ioctl_get/set_fpu`).
//!
//! The vCPU's save area is what the host's XSAVE (standard form) or FXSAVE
//! wrote, so component offsets are the same in both; what differs is what
//! KVM shows and accepts.

use crate::uapi::KvmFpu;

/// `sizeof(struct kvm_xsave)`: what `KVM_GET/SET_XSAVE` copy, and the
/// smallest `KVM_CAP_XSAVE2` answer.
pub const KVM_XSAVE_SIZE: usize = 4096;

/// XSAVE component bits (`XFEATURE_MASK_*`).
pub const XFEATURE_FP: u64 = 1 << 0;
/// SSE: XMM0-15 (and MXCSR).
pub const XFEATURE_SSE: u64 = 1 << 1;
/// AVX: the upper halves of YMM0-15 (and MXCSR).
pub const XFEATURE_YMM: u64 = 1 << 2;
/// `XFEATURE_MASK_FPSSE`: what KVM always shows, XSAVE or not.
pub const XFEATURE_FPSSE: u64 = XFEATURE_FP | XFEATURE_SSE;

/// Offsets in the legacy (FXSAVE) region.
const FCW: usize = 0;
const FSW: usize = 2;
const FTW: usize = 4;
const FOP: usize = 6;
const FIP: usize = 8;
const FDP: usize = 16;
const MXCSR: usize = 24;
const MXCSR_MASK: usize = 28;
const ST: usize = 32;
const XMM: usize = 160;
/// Bytes 416-463 are zero in KVM's output.
const PADDING: usize = 416;
/// Bytes 464-511: the software-reserved words (`xstate_fx_sw_bytes`).
const SW_RESERVED: usize = 464;
/// The legacy region's size.
pub const LEGACY_SIZE: usize = 512;
/// The XSAVE header: XSTATE_BV, XCOMP_BV, 48 reserved bytes.
const HEADER: usize = 512;
const XCOMP_BV: usize = HEADER + 8;
const HEADER_RESERVED: usize = HEADER + 16;
/// The first extended component's offset.
pub const EXTENDED: usize = 576;

/// x87 control word and MXCSR after FNINIT/RESET.
pub const FCW_INIT: u16 = 0x037f;
/// MXCSR's RESET value.
pub const MXCSR_INIT: u32 = 0x1f80;

/// An XSAVE image was refused (KVM answers `EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// What the host's XSAVE support looks like, as KVM's FPU code sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    /// `(offset, size)` of each component in the standard format (CPUID
    /// 0xD.i EBX and EAX); only bits of `xcr0` are meaningful.
    pub layout: [(u32, u32); 64],
    /// The host's XCR0 (`fpu_user_cfg.max_features`), 0 without XSAVE.
    pub xcr0: u64,
    /// What `KVM_SET_XSAVE` accepts: `kvm_caps.supported_xcr0` (here: the
    /// components rkvm offers guests, where the host has them).
    pub supported: u64,
    /// MXCSR_MASK as FXSAVE reports it (0 on CPUs that predate it).
    pub mxcsr_mask: u32,
}

impl Host {
    /// The MXCSR bits a guest may set (`mxcsr_feature_mask`).
    pub fn mxcsr_feature_mask(&self) -> u32 {
        if self.mxcsr_mask == 0 {
            0x0000_ffbf
        } else {
            self.mxcsr_mask
        }
    }

    fn has_xsave(&self) -> bool {
        self.xcr0 != 0
    }

    /// `KVM_CAP_XSAVE2`: the standard-format size of what KVM may show,
    /// never less than `struct kvm_xsave`.
    pub fn xsave2_size(&self) -> usize {
        let end = (2..64)
            .filter(|i| self.supported & (1 << i) != 0)
            .map(|i| {
                let (o, s) = self.layout[i];
                o as usize + s as usize
            })
            .max()
            .unwrap_or(0);
        end.max(KVM_XSAVE_SIZE)
    }
}

fn get16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn get32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn get64(b: &[u8], o: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

fn put(b: &mut [u8], o: usize, v: &[u8]) {
    b[o..o + v.len()].copy_from_slice(v);
}

/// Copies `area[o..o + n]` (or zeros where `area` ends) into `out` at `o`,
/// as far as `out` goes.
fn copy_range(out: &mut [u8], area: &[u8], o: usize, n: usize) {
    let end = (o + n).min(out.len());
    if o >= end {
        return;
    }
    let have = end.min(area.len()).max(o);
    out[o..have].copy_from_slice(&area[o..have]);
    out[have..end].fill(0);
}

/// A save area's XSTATE_BV.
pub fn xstate_bv(area: &[u8]) -> u64 {
    get64(area, HEADER)
}

/// `KVM_GET_XSAVE(2)`: fills `out` (zeroed by the caller, at least the
/// legacy region and header long) from the save `area`, showing only the
/// components the guest may use (`guest_xcr0`, FP and SSE always) whose
/// XSTATE_BV bit is set, the init values of FP/SSE otherwise, and the
/// host's software-reserved words.
pub fn to_uabi(host: &Host, area: &[u8], guest_xcr0: u64, out: &mut [u8]) {
    if !host.has_xsave() {
        // The FXSAVE image, made restorable on an XSAVE host.
        out[..LEGACY_SIZE].copy_from_slice(&area[..LEGACY_SIZE]);
        put(out, HEADER, &XFEATURE_FPSSE.to_le_bytes());
        return;
    }
    let bv = xstate_bv(area) & host.xcr0 & (guest_xcr0 | XFEATURE_FPSSE);
    // x87 up to MXCSR.
    if bv & XFEATURE_FP != 0 {
        copy_range(out, area, 0, MXCSR);
    } else {
        out[..MXCSR].fill(0);
        put(out, FCW, &FCW_INIT.to_le_bytes());
    }
    // MXCSR and MXCSR_MASK go with SSE or AVX.
    if bv & (XFEATURE_SSE | XFEATURE_YMM) != 0 {
        copy_range(out, area, MXCSR, 8);
    } else {
        put(out, MXCSR, &MXCSR_INIT.to_le_bytes());
        put(out, MXCSR_MASK, &host.mxcsr_mask.to_le_bytes());
    }
    if bv & XFEATURE_FP != 0 {
        copy_range(out, area, ST, XMM - ST);
    } else {
        out[ST..XMM].fill(0);
    }
    if bv & XFEATURE_SSE != 0 {
        copy_range(out, area, XMM, PADDING - XMM);
    } else {
        out[XMM..PADDING].fill(0);
    }
    out[PADDING..SW_RESERVED].fill(0);
    out[SW_RESERVED..HEADER].fill(0);
    put(out, SW_RESERVED, &host.xcr0.to_le_bytes());
    out[HEADER..EXTENDED].fill(0);
    put(out, HEADER, &bv.to_le_bytes());
    if out.len() > EXTENDED {
        out[EXTENDED..].fill(0);
    }
    for i in 2..64 {
        if bv & (1 << i) != 0 {
            let (o, s) = host.layout[i];
            copy_range(out, area, o as usize, s as usize);
        }
    }
}

/// `KVM_SET_XSAVE`: checks the image `buf` as KVM does (components within
/// `host.supported` and the host's, XCOMP_BV and the reserved header bytes
/// zero, MXCSR within the feature mask when a component that holds it is
/// given) and copies the given components into the save `area`, whose
/// XSTATE_BV becomes the image's. Nothing changes on `Invalid`.
pub fn from_uabi(host: &Host, buf: &[u8], area: &mut [u8]) -> Result<(), Invalid> {
    let bv = get64(buf, HEADER);
    let mxcsr = get32(buf, MXCSR);
    if !host.has_xsave() {
        if bv & !XFEATURE_FPSSE != 0 || mxcsr & !host.mxcsr_feature_mask() != 0 {
            return Err(Invalid);
        }
        area[..LEGACY_SIZE].copy_from_slice(&buf[..LEGACY_SIZE]);
        return Ok(());
    }
    if bv & !host.supported != 0 || bv & !host.xcr0 != 0 {
        return Err(Invalid);
    }
    if get64(buf, XCOMP_BV) != 0 || buf[HEADER_RESERVED..EXTENDED].iter().any(|b| *b != 0) {
        return Err(Invalid);
    }
    let holds_mxcsr = bv & (XFEATURE_FP | XFEATURE_SSE | XFEATURE_YMM) != 0;
    if holds_mxcsr && mxcsr & !host.mxcsr_feature_mask() != 0 {
        return Err(Invalid);
    }
    // Every component given must fit in both (it does for what rkvm
    // offers); check before changing anything.
    let range = |i: usize| match i {
        0 => (0, XMM),
        1 => (XMM, PADDING - XMM),
        _ => (host.layout[i].0 as usize, host.layout[i].1 as usize),
    };
    let fits = |i: usize| {
        let (o, s) = range(i);
        o + s <= buf.len() && o + s <= area.len()
    };
    if (0..64).any(|i| bv & (1 << i) != 0 && !fits(i)) {
        return Err(Invalid);
    }
    if holds_mxcsr && bv & XFEATURE_FP == 0 {
        // SSE and AVX need MXCSR even without x87.
        area[MXCSR..ST].copy_from_slice(&buf[MXCSR..ST]);
    }
    for i in 0..64 {
        if bv & (1 << i) != 0 {
            let (o, s) = range(i);
            area[o..o + s].copy_from_slice(&buf[o..o + s]);
        }
    }
    put(area, HEADER, &bv.to_le_bytes());
    Ok(())
}

/// `KVM_GET_FPU`: the legacy region as it is, whatever XSTATE_BV says;
/// MXCSR is not reported (KVM leaves it 0).
pub fn fpu_get(area: &[u8]) -> KvmFpu {
    let mut f = KvmFpu::default();
    for (i, r) in f.fpr.iter_mut().enumerate() {
        r.copy_from_slice(&area[ST + 16 * i..ST + 16 * (i + 1)]);
    }
    for (i, r) in f.xmm.iter_mut().enumerate() {
        r.copy_from_slice(&area[XMM + 16 * i..XMM + 16 * (i + 1)]);
    }
    f.fcw = get16(area, FCW);
    f.fsw = get16(area, FSW);
    f.ftwx = area[FTW];
    f.last_opcode = get16(area, FOP);
    f.last_ip = get64(area, FIP);
    f.last_dp = get64(area, FDP);
    f
}

/// `KVM_SET_FPU`: writes the legacy region's x87 and XMM fields (MXCSR
/// and XSTATE_BV stay as they are; the abridged tag word's high byte
/// becomes 0).
pub fn fpu_set(area: &mut [u8], f: &KvmFpu) {
    for (i, r) in f.fpr.iter().enumerate() {
        put(area, ST + 16 * i, r);
    }
    for (i, r) in f.xmm.iter().enumerate() {
        put(area, XMM + 16 * i, r);
    }
    put(area, FCW, &f.fcw.to_le_bytes());
    put(area, FSW, &f.fsw.to_le_bytes());
    put(area, FTW, &u16::from(f.ftwx).to_le_bytes());
    put(area, FOP, &f.last_opcode.to_le_bytes());
    put(area, FIP, &f.last_ip.to_le_bytes());
    put(area, FDP, &f.last_dp.to_le_bytes());
}

/// A fresh save area's legacy region as KVM initialises it
/// (`fpstate_init_fxstate`): FCW and MXCSR at their RESET values, the rest
/// (XSTATE_BV included) zero.
pub fn init_area(area: &mut [u8]) {
    area.fill(0);
    put(area, FCW, &FCW_INIT.to_le_bytes());
    put(area, MXCSR, &MXCSR_INIT.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        let mut layout = [(0, 0); 64];
        layout[2] = (576, 256);
        layout[9] = (2688, 8);
        Host {
            layout,
            xcr0: 0x207,
            supported: 0x7,
            mxcsr_mask: 0xffff,
        }
    }

    fn area() -> [u8; 4096] {
        let mut a = [0u8; 4096];
        init_area(&mut a);
        a
    }

    #[test]
    fn fresh_area_shows_init_state_and_sw_bytes() {
        let h = host();
        let mut a = area();
        a[XMM] = 0x55; // stale data behind a clear XSTATE_BV bit
        let mut out = [0xaau8; 4096];
        to_uabi(&h, &a, 0, &mut out);
        assert_eq!(get16(&out, FCW), 0x37f);
        assert_eq!(get32(&out, MXCSR), 0x1f80);
        assert_eq!(get32(&out, MXCSR_MASK), 0xffff);
        assert_eq!(out[XMM], 0);
        assert_eq!(get64(&out, SW_RESERVED), 0x207);
        assert_eq!(get64(&out, HEADER), 0);
        assert!(out[EXTENDED..].iter().all(|b| *b == 0));
        assert!(out[SW_RESERVED + 8..HEADER].iter().all(|b| *b == 0));
    }

    #[test]
    fn round_trip_and_guest_xcr0_masks_ymm() {
        let h = host();
        let mut buf = [0u8; 4096];
        put(&mut buf, HEADER, &7u64.to_le_bytes());
        put(&mut buf, FCW, &0x27fu16.to_le_bytes());
        put(&mut buf, MXCSR, &0x1f81u32.to_le_bytes());
        buf[XMM + 3] = 9;
        buf[600] = 7;
        let mut a = area();
        from_uabi(&h, &buf, &mut a).unwrap();
        assert_eq!(xstate_bv(&a), 7);
        let mut out = [0u8; 4096];
        to_uabi(&h, &a, 7, &mut out);
        assert_eq!(get16(&out, FCW), 0x27f);
        assert_eq!(get32(&out, MXCSR), 0x1f81);
        assert_eq!(out[XMM + 3], 9);
        assert_eq!(out[600], 7);
        assert_eq!(get64(&out, HEADER), 7);
        // Without AVX in the guest's XCR0, YMM is neither shown nor flagged.
        to_uabi(&h, &a, 1, &mut out);
        assert_eq!(get64(&out, HEADER), 3);
        assert_eq!(out[600], 0);
    }

    #[test]
    fn refusals() {
        let h = host();
        let good = {
            let mut b = [0u8; 4096];
            put(&mut b, HEADER, &3u64.to_le_bytes());
            b
        };
        let mut a = area();
        let before = a;
        for (o, v) in [
            (HEADER, 0x200u64), // PKRU: the host's, not offered
            (HEADER, 0x8),      // not the host's
            (XCOMP_BV, 1 << 63),
            (HEADER + 40, 1),
        ] {
            let mut b = good;
            if o == HEADER {
                put(&mut b, o, &(v | 3).to_le_bytes());
            } else {
                put(&mut b, o, &v.to_le_bytes());
            }
            assert_eq!(from_uabi(&h, &b, &mut a), Err(Invalid), "{o} {v:#x}");
        }
        let mut b = good;
        put(&mut b, MXCSR, &0x10000u32.to_le_bytes());
        assert_eq!(from_uabi(&h, &b, &mut a), Err(Invalid));
        // MXCSR is only checked when a component holding it is given.
        put(&mut b, HEADER, &0u64.to_le_bytes());
        assert_eq!(from_uabi(&h, &b, &mut a), Ok(()));
        assert_eq!(get32(&a, MXCSR), MXCSR_INIT);
        assert_eq!(a[..HEADER], before[..HEADER]);
    }

    #[test]
    fn sse_without_fp_takes_mxcsr_only() {
        let h = host();
        let mut b = [0u8; 4096];
        put(&mut b, HEADER, &2u64.to_le_bytes());
        put(&mut b, MXCSR, &0x1f00u32.to_le_bytes());
        put(&mut b, FCW, &0x1234u16.to_le_bytes());
        let mut a = area();
        from_uabi(&h, &b, &mut a).unwrap();
        assert_eq!(get32(&a, MXCSR), 0x1f00);
        assert_eq!(get16(&a, FCW), FCW_INIT);
    }

    #[test]
    fn fpu_round_trip_keeps_mxcsr_and_header() {
        let mut a = area();
        put(&mut a, HEADER, &1u64.to_le_bytes());
        let mut f = KvmFpu {
            fcw: 0x7f,
            fsw: 0x3800,
            ftwx: 0x81,
            last_opcode: 0x123,
            last_ip: 0x1122,
            last_dp: 0x3344,
            mxcsr: 0xdead,
            ..Default::default()
        };
        f.fpr[7][9] = 1;
        f.xmm[15][15] = 2;
        fpu_set(&mut a, &f);
        let g = fpu_get(&a);
        assert_eq!(g.mxcsr, 0);
        f.mxcsr = 0;
        assert_eq!(g, f);
        assert_eq!(get32(&a, MXCSR), MXCSR_INIT);
        assert_eq!(xstate_bv(&a), 1);
    }

    #[test]
    fn fxsave_host() {
        let h = Host {
            xcr0: 0,
            supported: 0,
            ..host()
        };
        let mut a = area();
        a[XMM] = 5;
        let mut out = [0u8; 4096];
        to_uabi(&h, &a, 0, &mut out);
        assert_eq!(out[XMM], 5);
        assert_eq!(get64(&out, HEADER), 3);
        let mut b = out;
        put(&mut b, HEADER, &7u64.to_le_bytes());
        assert_eq!(from_uabi(&h, &b, &mut a), Err(Invalid));
    }

    #[test]
    fn xsave2_size() {
        let mut h = host();
        assert_eq!(h.xsave2_size(), 4096);
        h.supported = 1 << 18;
        h.layout[18] = (2752, 8192);
        assert_eq!(h.xsave2_size(), 2752 + 8192);
    }
}
