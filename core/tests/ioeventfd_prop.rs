//! Property test for the ioeventfd table: random assigns, deassigns and
//! guest writes against a plain list that follows `virt/kvm/eventfd.c`
//! literally (linear collision check, first-match deassign, every entry
//! tried on a write).

use proptest::prelude::*;
use rkvm_core::ioeventfd::{
    collides_any, find_deassign, insert_at, lookup, request, Bus, Request, Spec, FLAG_DATAMATCH,
    FLAG_DEASSIGN, FLAG_PIO, FLAG_VIRTIO_CCW_NOTIFY,
};
use rkvm_core::uapi::KvmIoeventfd;

/// A table entry: the ioeventfd and a stand-in for its eventfd.
type Entry = (Spec, i32);

fn spec(e: &Entry) -> &Spec {
    &e.0
}

#[derive(Clone, Debug)]
enum Op {
    Call(KvmIoeventfd),
    Write(Bus, u64, Vec<u8>),
}

/// Few addresses, lengths, values and fds, so that collisions, duplicate
/// keys and deassign hits are common.
fn call() -> impl Strategy<Value = KvmIoeventfd> {
    (
        0u64..4,
        prop_oneof![Just(0u32), Just(1), Just(2), Just(3), Just(4), Just(8)],
        prop::bits::u32::between(0, 6),
        0u64..3,
        0i32..3,
    )
        .prop_map(|(addr, len, flags, datamatch, fd)| KvmIoeventfd {
            datamatch,
            addr: 0x100 + addr,
            len,
            fd,
            flags,
            pad: [0; 36],
        })
}

fn bus() -> impl Strategy<Value = Bus> {
    prop_oneof![Just(Bus::Mmio), Just(Bus::Pio), Just(Bus::Ccw)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => call().prop_map(Op::Call),
        2 => (bus(), 0x100u64..0x104, prop_oneof![Just(1usize), Just(2), Just(4), Just(8)], 0u8..3)
            .prop_map(|(b, a, n, v)| {
                let mut d = vec![0u8; n];
                d[0] = v;
                Op::Write(b, a, d)
            }),
    ]
}

/// The reference: KVM's list, searched front to back.
fn reference(list: &mut Vec<Entry>, args: &KvmIoeventfd) -> Result<(), &'static str> {
    let r = request(args).map_err(|_| "EINVAL")?;
    match r {
        Request::Assign(s) => {
            if list.iter().any(|(p, _)| p.collides(&s)) {
                return Err("EEXIST");
            }
            list.push((s, args.fd));
            Ok(())
        }
        Request::Deassign(s) => {
            let i = list
                .iter()
                .position(|(p, fd)| {
                    p.bus == s.bus
                        && *fd == args.fd
                        && p.addr == s.addr
                        && u32::from(p.len) == args.len
                        && p.datamatch.is_none() == (args.flags & FLAG_DATAMATCH == 0)
                        && (p.datamatch.is_none() || p.datamatch == Some(args.datamatch))
                })
                .ok_or("ENOENT")?;
            list.remove(i);
            Ok(())
        }
    }
}

/// The table as the module keeps it.
fn table(t: &mut Vec<Entry>, args: &KvmIoeventfd) -> Result<(), &'static str> {
    match request(args).map_err(|_| "EINVAL")? {
        Request::Assign(s) => {
            if collides_any(t, spec, &s) {
                return Err("EEXIST");
            }
            let at = insert_at(t, spec, &s);
            t.insert(at, (s, args.fd));
            Ok(())
        }
        Request::Deassign(s) => {
            let i = find_deassign(t, spec, |e| e.1 == args.fd, &s).ok_or("ENOENT")?;
            t.remove(i);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The sorted table answers every call and write as KVM's list does,
    /// stays sorted, and no write ever hits two ioeventfds.
    #[test]
    fn table_is_kvm_list(ops in prop::collection::vec(op(), 1..60)) {
        let (mut list, mut t) = (Vec::new(), Vec::new());
        for op in &ops {
            match op {
                Op::Call(a) => {
                    prop_assert_eq!(reference(&mut list, a), table(&mut t, a));
                    let mut l = list.clone();
                    let mut s = t.clone();
                    let k = |e: &Entry| (e.0.bus, e.0.addr, e.0.len, e.0.datamatch, e.1);
                    l.sort_by_key(k);
                    s.sort_by_key(k);
                    prop_assert_eq!(l, s);
                    prop_assert!(t.windows(2).all(|w| (w[0].0.bus, w[0].0.addr) <= (w[1].0.bus, w[1].0.addr)));
                }
                Op::Write(b, a, d) => {
                    let hits: Vec<&Entry> = list.iter().filter(|(p, _)| p.hit(*b, *a, d)).collect();
                    prop_assert!(hits.len() <= 1);
                    prop_assert_eq!(hits.first().copied(), lookup(&t, spec, *b, *a, d));
                }
            }
        }
    }
}

#[test]
fn flag_constants_are_kvms() {
    assert_eq!(
        (
            FLAG_DATAMATCH,
            FLAG_PIO,
            FLAG_DEASSIGN,
            FLAG_VIRTIO_CCW_NOTIFY
        ),
        (1, 2, 4, 8)
    );
}
