// SPDX-License-Identifier: GPL-2.0

//! Port IO exits: IN/OUT through the PIO page, and INS/OUTS a page of data
//! at a time.

use super::{Flow, Inner, Pending, Vcpu};
use crate::{
    abi,
    addr::Gva,
    backend::{ArchVcpu, Backend, IoExit},
    decode::Segment,
    iobus::Ioeventfds,
    ioeventfd::Bus,
    memory::MemOnce,
    uapi,
    x86::RFLAGS_DF,
};
use kernel::prelude::*;

impl<B: Backend> Vcpu<B> {
    /// An IN/OUT exit: an OUT an ioeventfd takes completes in the kernel;
    /// other data goes through the PIO page, as in KVM.
    pub(super) fn io(
        &self,
        bus: &Ioeventfds,
        mem: &mut MemOnce<'_>,
        inner: &mut Inner<B>,
        io: IoExit,
    ) -> Result<Flow> {
        let size = usize::from(io.size);
        if !io.string {
            let rip = inner.arch.rip();
            if !io.input {
                let v = inner.gpr(0).to_le_bytes();
                if bus.write(Bus::Pio, u64::from(io.port), &v[..size]) {
                    inner.advance_rip(io.next_rip);
                    return Ok(Flow::Resume);
                }
                self.pages[1].write_shared(0, &v[..size]);
                // RIP moves past the OUT when the exit completes, except for
                // port 0x7e (KVM_X86_QUIRK_OUT_7E_INC_RIP, on by default).
                if io.port == 0x7e {
                    inner.advance_rip(io.next_rip);
                } else {
                    inner.pending = Pending::IoOut {
                        next_rip: io.next_rip,
                        rip,
                    };
                }
            }
            set_io_exit(inner, &io, 1);
            if io.input {
                inner.pending = Pending::IoIn { io, count: 1, rip };
            }
            return Ok(Flow::User);
        }
        let amask = addr_mask(io.addr_size);
        let count = if io.rep { inner.gpr(1) & amask } else { 1 };
        if count == 0 {
            inner.advance_rip(io.next_rip);
            return Ok(Flow::Resume);
        }
        // At most one PIO page per exit, as KVM does.
        let count = count.min((4096 / size) as u64) as u32;
        let count = if !io.input {
            let mut data = core::mem::take(&mut inner.pio_buf);
            let base = inner.arch.segment_base(io.seg);
            let si = inner.gpr(6) & amask;
            let down = inner.arch.rflags() & RFLAGS_DF != 0;
            for i in 0..count as usize {
                let off = if down {
                    si.wrapping_sub((i * size) as u64)
                } else {
                    si.wrapping_add((i * size) as u64)
                };
                let lin = Gva(base.wrapping_add(off & amask));
                let r = mem.get().read_linear(
                    &inner.paging(),
                    lin,
                    &mut data[i * size..(i + 1) * size],
                );
                if let Err(f) = r {
                    inner.pio_buf = data;
                    return Ok(self.linear_fault(inner, f));
                }
            }
            // As KVM's emulator, element by element: those an ioeventfd
            // takes are done here, and the guest runs the instruction
            // again for the rest; the first one none takes exits, with
            // those after it up to the next one an ioeventfd would take.
            let port = u64::from(io.port);
            let elem = |i: usize| &data[i * size..(i + 1) * size];
            let view = bus.view();
            let mut taken = 0;
            while taken < count as usize && view.write(Bus::Pio, port, elem(taken)) {
                taken += 1;
            }
            if taken > 0 {
                drop(view);
                inner.pio_buf = data;
                return self.string_io_done(mem, inner, &io, taken as u32, None);
            }
            let mut user = 1;
            while user < count as usize && !view.hits(Bus::Pio, port, elem(user)) {
                user += 1;
            }
            drop(view);
            self.pages[1].write_shared(0, &data[..size * user]);
            inner.pio_buf = data;
            let count = user as u32;
            inner.pending = Pending::IoOutString { io, count };
            count
        } else {
            let rip = inner.arch.rip();
            inner.pending = Pending::IoIn { io, count, rip };
            count
        };
        set_io_exit(inner, &io, count);
        Ok(Flow::User)
    }

    /// After userspace handled `count` INS/OUTS iterations: store INS data,
    /// advance RSI/RDI and RCX, and finish the instruction once RCX is 0.
    pub(super) fn string_io_done(
        &self,
        mem: &mut MemOnce<'_>,
        inner: &mut Inner<B>,
        io: &IoExit,
        count: u32,
        data: Option<&[u8]>,
    ) -> Result<Flow> {
        let size = u64::from(io.size);
        let amask = addr_mask(io.addr_size);
        let down = inner.arch.rflags() & RFLAGS_DF != 0;
        let step = |v: u64, n: u64| -> u64 {
            let d = size * n;
            let nv = if down {
                v.wrapping_sub(d)
            } else {
                v.wrapping_add(d)
            };
            (v & !amask) | (nv & amask)
        };
        if let Some(data) = data {
            let base = inner.arch.segment_base(Segment::Es);
            let di = inner.gpr(7);
            for i in 0..u64::from(count) {
                let lin = Gva(base.wrapping_add(step(di, i) & amask));
                let chunk = &data[(i * size) as usize..((i + 1) * size) as usize];
                if let Err(f) = mem.get().write_linear(&inner.paging(), lin, chunk) {
                    return Ok(self.linear_fault(inner, f));
                }
            }
            let v = step(di, u64::from(count));
            inner.set_gpr(7, v);
        } else {
            let v = step(inner.gpr(6), u64::from(count));
            inner.set_gpr(6, v);
        }
        let mut done = true;
        if io.rep {
            let rcx = inner.gpr(1);
            let left = (rcx & amask).wrapping_sub(u64::from(count)) & amask;
            inner.set_gpr(1, (rcx & !amask) | left);
            done = left == 0;
        }
        if done {
            inner.advance_rip(io.next_rip);
        }
        // Not done: RIP stays, so the guest runs the instruction again and
        // exits with the next chunk.
        Ok(Flow::Resume)
    }
}

/// Fills in `KVM_EXIT_IO` for `count` iterations of `io`, data in the PIO
/// page.
fn set_io_exit<B: Backend>(inner: &mut Inner<B>, io: &IoExit, count: u32) {
    let dir = if io.input {
        uapi::KVM_EXIT_IO_IN
    } else {
        uapi::KVM_EXIT_IO_OUT
    };
    let page_off = abi::PIO_PAGE_OFFSET * 4096;
    inner.staging.set_io(dir, io.size, io.port, count, page_off);
}

fn addr_mask(addr_size: u8) -> u64 {
    match addr_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}
