// SPDX-License-Identifier: GPL-2.0

//! A VM's I/O bus: its ioeventfds (`KVM_IOEVENTFD`), guest writes to
//! chosen ports and MMIO addresses that signal an eventfd in the kernel instead of exiting
//! to userspace, as `virt/kvm/eventfd.c` does. The rules are
//! `ioeventfd.rs` of the core; this file owns the eventfds and publishes
//! the table.
//!
//! vCPUs read the table under SRCU, with no lock they share; an assign or
//! deassign copies it, publishes the copy and waits for readers of the old
//! one before dropping it (KVM's `kvm_io_bus` works the same way). Entries
//! are shared between copies, so a copy takes no eventfd references.

use crate::{
    ioeventfd::{self, Bus, Request, Spec},
    sys::{
        eventfd::EventfdCtx,
        srcu::{SrcuBox, SrcuRef},
    },
    uapi::KvmIoeventfd,
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

/// One ioeventfd: what it matches, and the eventfd it signals (held until
/// it is deassigned or the VM is destroyed).
struct Entry {
    spec: Spec,
    ctx: EventfdCtx,
}

fn spec(e: &Arc<Entry>) -> &Spec {
    &e.spec
}

/// The published table: sorted by bus and address (`ioeventfd::insert_at`).
#[derive(Default)]
struct Table(KVec<Arc<Entry>>);

/// A VM's ioeventfds.
#[pin_data]
pub(crate) struct Ioeventfds {
    table: SrcuBox<Table>,
    /// Held by whoever changes the table (KVM's `slots_lock`), so that
    /// changes apply in order.
    #[pin]
    lock: Mutex<()>,
}

impl Ioeventfds {
    /// No ioeventfds.
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let table = SrcuBox::new(KBox::new(Table::default(), GFP_KERNEL_ACCOUNT)?);
        Ok(try_pin_init!(Self {
            table,
            lock <- new_mutex!(()),
        }))
    }

    /// `KVM_IOEVENTFD`, with KVM's errnos in its order: `EINVAL` for a bad
    /// request, then `EBADF`/`EINVAL` for the fd, `EEXIST` for a collision,
    /// `ENOENT` for a deassign that names nothing. As in KVM, ioeventfds do
    /// not count towards the bus's device limit (`NR_IOBUS_DEVS`): there is
    /// no `ENOSPC`, only memory.
    pub(crate) fn ioctl(&self, args: &KvmIoeventfd) -> Result<isize> {
        let req = ioeventfd::request(args).map_err(|ioeventfd::Error::Inval| EINVAL)?;
        let ctx = EventfdCtx::from_fd(args.fd)?;
        let _w = self.lock.lock();
        let new = {
            let cur = self.table.read();
            let cur = &cur.0;
            match req {
                Request::Assign(s) => {
                    let entry = Arc::new(Entry { spec: s, ctx }, GFP_KERNEL_ACCOUNT)?;
                    if ioeventfd::collides_any(cur, spec, &s) {
                        return Err(EEXIST);
                    }
                    let at = ioeventfd::insert_at(cur, spec, &s);
                    let mut t = KVec::with_capacity(cur.len() + 1, GFP_KERNEL_ACCOUNT)?;
                    for e in &cur[..at] {
                        t.push(e.clone(), GFP_KERNEL_ACCOUNT)?;
                    }
                    t.push(entry, GFP_KERNEL_ACCOUNT)?;
                    for e in &cur[at..] {
                        t.push(e.clone(), GFP_KERNEL_ACCOUNT)?;
                    }
                    t
                }
                Request::Deassign(s) => {
                    let i = ioeventfd::find_deassign(cur, spec, |e| e.ctx.same(&ctx), &s)
                        .ok_or(ENOENT)?;
                    let mut t = KVec::with_capacity(cur.len() - 1, GFP_KERNEL_ACCOUNT)?;
                    for (j, e) in cur.iter().enumerate() {
                        if j != i {
                            t.push(e.clone(), GFP_KERNEL_ACCOUNT)?;
                        }
                    }
                    t
                }
            }
        };
        // Outside the read section: `replace` waits for every reader. The
        // old table's entries that are gone (a deassigned one) put their
        // eventfd when it drops here.
        drop(
            self.table
                .replace(KBox::new(Table(new), GFP_KERNEL_ACCOUNT)?),
        );
        Ok(0)
    }

    /// The table for one exit's writes.
    pub(crate) fn view(&self) -> View<'_> {
        View(self.table.read())
    }

    /// A guest write of `data` at `addr` on `bus`: signals the ioeventfd it
    /// hits and says whether there was one (then the write is done). Does
    /// not sleep.
    pub(crate) fn write(&self, bus: Bus, addr: u64, data: &[u8]) -> bool {
        self.view().write(bus, addr, data)
    }
}

/// The table as one exit sees it (an SRCU read section).
pub(crate) struct View<'a>(SrcuRef<'a, Table>);

impl View<'_> {
    /// Whether a write of `data` at `addr` on `bus` hits an ioeventfd.
    pub(crate) fn hits(&self, bus: Bus, addr: u64, data: &[u8]) -> bool {
        ioeventfd::lookup(&self.0 .0, spec, bus, addr, data).is_some()
    }

    /// [`Ioeventfds::write`] in this view.
    pub(crate) fn write(&self, bus: Bus, addr: u64, data: &[u8]) -> bool {
        match ioeventfd::lookup(&self.0 .0, spec, bus, addr, data) {
            Some(e) => {
                e.ctx.signal();
                true
            }
            None => false,
        }
    }
}
