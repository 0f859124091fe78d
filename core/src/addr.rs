//! Typed addresses: a guest-physical address, a guest frame number, a
//! guest-virtual (linear) address and an address in the VMM's memory are
//! different types, so that one cannot be passed where another is meant.

/// Bytes in a page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The address `n` bytes further on (wrapping, as address
            /// arithmetic does on x86).
            pub const fn add(self, n: u64) -> Self {
                Self(self.0.wrapping_add(n))
            }
        }
    };
}

/// Page arithmetic on guest addresses.
macro_rules! page_methods {
    ($($name:ident),*) => {$(
        impl $name {
            /// The offset within its 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }

            /// Bytes from here to the end of its 4 KiB page (1 to 4096).
            pub const fn to_page_end(self) -> u64 {
                PAGE_SIZE - self.page_offset()
            }
        }
    )*};
}

address!(
    /// A guest-physical address.
    Gpa
);
address!(
    /// A guest-virtual (linear) address: what the guest's page tables map.
    Gva
);
address!(
    /// An address in the VMM's (host user) address space.
    Hva
);

page_methods!(Gpa, Gva);

/// A guest frame number: a guest-physical address divided by the page size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Gfn(pub u64);

impl Gpa {
    /// The frame this address is in.
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> PAGE_SHIFT)
    }
}

impl Gfn {
    /// The address of the frame's first byte.
    pub const fn gpa(self) -> Gpa {
        Gpa(self.0 << PAGE_SHIFT)
    }

    /// The frame `n` frames further on.
    pub const fn add(self, n: u64) -> Self {
        Self(self.0 + n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpa_and_gfn_convert() {
        assert_eq!(Gpa(0x1234_5678).gfn(), Gfn(0x12345));
        assert_eq!(Gfn(0x12345).gpa(), Gpa(0x1234_5000));
    }

    #[test]
    fn page_offsets() {
        assert_eq!(Gva(0x1fff).page_offset(), 0xfff);
        assert_eq!(Gva(0x1fff).to_page_end(), 1);
        assert_eq!(Gva(0x2000).to_page_end(), 4096);
        assert_eq!(Hva(u64::MAX).add(1), Hva(0));
        assert_eq!(Gpa(0x1234).page_offset(), 0x234);
    }
}
