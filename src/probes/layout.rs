//! The kernel↔user record layouts: every struct of the BPF objects that Rust reads or writes
//! (the `ns_event` record, map keys and values), one [`Layout`] each, with the offset and size
//! of every field a decoder uses. The decoders read through these [`Field`]s only, and the unit
//! test below checks every one against the BTF of the embedded objects that define the struct,
//! so a C change that moves a field fails `cargo test --lib` instead of decoding garbage.
#![forbid(unsafe_code)]

/// One field of a kernel struct: its C member name, byte offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

const fn f(name: &'static str, offset: usize, size: usize) -> Field {
    Field { name, offset, size }
}

impl Field {
    /// The field's bytes, `None` when `b` is too short.
    pub fn bytes(self, b: &[u8]) -> Option<&[u8]> {
        b.get(self.offset..self.offset + self.size)
    }

    /// `N` bytes at the field's offset (the field, or its first element).
    fn array<const N: usize>(self, b: &[u8]) -> Option<[u8; N]> {
        b.get(self.offset..self.offset + N)?.try_into().ok()
    }

    pub fn u64(self, b: &[u8]) -> Option<u64> {
        self.array(b).map(u64::from_ne_bytes)
    }

    pub fn u32(self, b: &[u8]) -> Option<u32> {
        self.array(b).map(u32::from_ne_bytes)
    }

    pub fn u16(self, b: &[u8]) -> Option<u16> {
        self.array(b).map(u16::from_ne_bytes)
    }

    pub fn u8(self, b: &[u8]) -> Option<u8> {
        b.get(self.offset).copied()
    }

    /// A native-endian u32 at `at` bytes into the field (an array field's element).
    pub fn u32_at(self, b: &[u8], at: usize) -> Option<u32> {
        let o = self.offset + at;
        (at + 4 <= self.size)
            .then(|| b.get(o..o + 4)?.try_into().ok().map(u32::from_ne_bytes))
            .flatten()
    }
}

/// A struct as the Rust side reads it: its C name, the objects whose BTF defines it, its size
/// and the fields Rust uses.
#[derive(Debug)]
pub struct Layout {
    pub name: &'static str,
    pub objects: &'static [&'static str],
    pub size: usize,
    pub fields: &'static [Field],
}

/// `struct ns_event` (`bpf-asm/include/netprobes.h`): the ring buffer record of every probe.
pub mod ns_event {
    use super::{f, Field, Layout};
    pub const TS: Field = f("ts", 0, 8);
    /// packetloss: the freeing call site; latency probes: the latency in ns.
    pub const LOCATION: Field = f("location", 8, 8);
    pub const NETNS: Field = f("netns", 16, 4);
    /// packetloss: the drop reason; netiftxlat: the ifindex; softirq: `cpu << 8 | vector`;
    /// biolatency: the dev_t.
    pub const REASON: Field = f("reason", 20, 4);
    pub const STACK_ID: Field = f("stack_id", 24, 4);
    pub const FAMILY: Field = f("family", 28, 2);
    /// biolatency: the operation.
    pub const L4PROTO: Field = f("l4proto", 30, 1);
    pub const TYPE: Field = f("type", 31, 1);
    pub const STATE: Field = f("state", 32, 1);
    pub const SPORT: Field = f("sport", 34, 2);
    pub const DPORT: Field = f("dport", 36, 2);
    /// biolatency: the issuing task's comm.
    pub const SADDR: Field = f("saddr", 40, 16);
    /// biolatency: the issuing task's pid (bytes 0..4) and the request's bytes (4..8).
    pub const DADDR: Field = f("daddr", 56, 16);
    pub const LAYOUT: Layout = Layout {
        name: "ns_event",
        objects: &[
            "packetloss",
            "tcpreset",
            "tcpretrans",
            "netiftxlat",
            "softirq",
            "socketlatency",
            "kernellatency",
            "virtcmdlatency",
            "biolatency",
        ],
        size: 72,
        fields: &[
            TS, LOCATION, NETNS, REASON, STACK_ID, FAMILY, L4PROTO, TYPE, STATE, SPORT, DPORT,
            SADDR, DADDR,
        ],
    };
}

/// A bare `__u32` netns key (tcpretrans's `retrans`, kernellatency's `lat_tx`): BTF has no
/// struct to check it against, only its size (the maps' key size, checked at load).
pub mod netns_key {
    use super::{f, Field};
    pub const NETNS: Field = f("netns", 0, 4);
}

/// `struct drop_key` (packetloss's `drops`).
pub mod drop_key {
    use super::{f, Field, Layout};
    pub const NETNS: Field = f("netns", 0, 4);
    pub const REASON: Field = f("reason", 4, 4);
    pub const LOCATION: Field = f("location", 8, 8);
    pub const L4PROTO: Field = f("l4proto", 16, 1);
    pub const FAMILY: Field = f("family", 17, 1);
    pub const LAYOUT: Layout = Layout {
        name: "drop_key",
        objects: &["packetloss"],
        size: 24,
        fields: &[NETNS, REASON, LOCATION, L4PROTO, FAMILY],
    };
}

/// `struct rst_key` (tcpreset's `resets`).
pub mod rst_key {
    use super::{f, Field, Layout};
    pub const NETNS: Field = f("netns", 0, 4);
    pub const TYPE: Field = f("type", 4, 4);
    pub const LAYOUT: Layout = Layout {
        name: "rst_key",
        objects: &["tcpreset"],
        size: 8,
        fields: &[NETNS, TYPE],
    };
}

/// `struct lat_key` of the per-stage latency probes (socketlatency, kernellatency).
pub mod stage_key {
    use super::{f, Field, Layout};
    pub const NETNS: Field = f("netns", 0, 4);
    pub const STAGE: Field = f("stage", 4, 4);
    pub const LAYOUT: Layout = Layout {
        name: "lat_key",
        objects: &["socketlatency", "kernellatency"],
        size: 8,
        fields: &[NETNS, STAGE],
    };
}

/// `struct lat_key` of netiftxlat (per device).
pub mod txlat_key {
    use super::{f, Field, Layout};
    pub const NETNS: Field = f("netns", 0, 4);
    pub const DEV: Field = f("dev", 8, 16);
    pub const LAYOUT: Layout = Layout {
        name: "lat_key",
        objects: &["netiftxlat"],
        size: 24,
        fields: &[NETNS, DEV],
    };
}

/// `struct lat_pair` of netiftxlat: a device's two `struct hist`, qdisc then device stage.
pub mod txlat_pair {
    use super::{f, Field, Layout};
    /// `struct hist stage[2]`.
    pub const STAGE: Field = f("stage", 0, 2 * HIST);
    /// `sizeof(struct hist)`.
    pub const HIST: usize = 37 * 8;
    pub const LAYOUT: Layout = Layout {
        name: "lat_pair",
        objects: &["netiftxlat"],
        size: 2 * HIST,
        fields: &[STAGE],
    };
}

/// `struct lat_key` of biolatency (per device and operation).
pub mod bio_key {
    use super::{f, Field, Layout};
    pub const DEV: Field = f("dev", 0, 4);
    pub const OP: Field = f("op", 4, 4);
    pub const LAYOUT: Layout = Layout {
        name: "lat_key",
        objects: &["biolatency"],
        size: 8,
        fields: &[DEV, OP],
    };
}

/// `struct hist` (`bpf-asm/include/latency.h`): the latency maps' value.
pub mod hist {
    use super::{f, Field, Layout};
    /// `HIST_SLOTS` u64 slots.
    pub const SLOTS: Field = f("slots", 0, 36 * 8);
    pub const SUM_NS: Field = f("sum_ns", 36 * 8, 8);
    pub const LAYOUT: Layout = Layout {
        name: "hist",
        objects: &[
            "netiftxlat",
            "softirq",
            "socketlatency",
            "kernellatency",
            "virtcmdlatency",
            "biolatency",
        ],
        size: 37 * 8,
        fields: &[SLOTS, SUM_NS],
    };
}

/// `struct flow_key` (flow's `flows`, IPv6; IPv4 keys are `flow_key4`).
pub mod flow_key {
    use super::{f, Field, Layout};
    pub const NETNS: Field = f("netns", 0, 4);
    pub const DIR: Field = f("dir", 4, 1);
    pub const FAMILY: Field = f("family", 5, 1);
    pub const PROTO: Field = f("proto", 6, 1);
    pub const LPORT: Field = f("lport", 8, 2);
    pub const RPORT: Field = f("rport", 10, 2);
    pub const RADDR: Field = f("raddr", 12, 16);
    pub const LAYOUT: Layout = Layout {
        name: "flow_key",
        objects: &["flow"],
        size: 28,
        fields: &[NETNS, DIR, FAMILY, PROTO, LPORT, RPORT, RADDR],
    };
}

/// `struct flow_key4` (flow's `flows4`, IPv4): `flow_key`'s first 16 bytes, a 4-byte address.
pub mod flow_key4 {
    use super::flow_key::{DIR, FAMILY, LPORT, NETNS, PROTO, RPORT};
    use super::{f, Field, Layout};
    pub const RADDR: Field = f("raddr", 12, 4);
    pub const LAYOUT: Layout = Layout {
        name: "flow_key4",
        objects: &["flow"],
        size: 16,
        fields: &[NETNS, DIR, FAMILY, PROTO, LPORT, RPORT, RADDR],
    };
}

/// `struct flow_val` (flow's `flows4` and `flows`).
pub mod flow_val {
    use super::{f, Field, Layout};
    pub const BYTES: Field = f("bytes", 0, 8);
    pub const PACKETS: Field = f("packets", 8, 8);
    pub const LAYOUT: Layout = Layout {
        name: "flow_val",
        objects: &["flow"],
        size: 16,
        fields: &[BYTES, PACKETS],
    };
}

/// `struct dev_info` (flow's `devices`, `devices_direct`): written by Rust.
pub mod dev_info {
    use super::{f, Field, Layout};
    pub const NETNS: Field = f("netns", 0, 4);
    pub const FLAGS: Field = f("flags", 4, 4);
    pub const TABLE_ID: Field = f("table_id", 8, 4);
    pub const LAYOUT: Layout = Layout {
        name: "dev_info",
        objects: &["flow"],
        size: 12,
        fields: &[NETNS, FLAGS, TABLE_ID],
    };
}

/// `struct flow_slot4` (flow's per-CPU `table4`): a `flow_key4` whose `netns` holds the
/// namespace's table id, then a `flow_val`.
pub mod flow_slot4 {
    use super::{f, Field, Layout};
    pub const KEY: Field = f("key", 0, 16);
    pub const VAL: Field = f("val", 16, 16);
    pub const LAYOUT: Layout = Layout {
        name: "flow_slot4",
        objects: &["flow"],
        size: 32,
        fields: &[KEY, VAL],
    };
}

/// `struct flow_slot` (flow's per-CPU `table6`): a `flow_key` (table id in `netns`), 4 bytes
/// of padding, a `flow_val`.
pub mod flow_slot {
    use super::{f, Field, Layout};
    pub const KEY: Field = f("key", 0, 28);
    pub const VAL: Field = f("val", 32, 16);
    pub const LAYOUT: Layout = Layout {
        name: "flow_slot",
        objects: &["flow"],
        size: 48,
        fields: &[KEY, VAL],
    };
}

/// Every layout the Rust side relies on.
pub const ALL: &[&Layout] = &[
    &ns_event::LAYOUT,
    &drop_key::LAYOUT,
    &rst_key::LAYOUT,
    &stage_key::LAYOUT,
    &txlat_key::LAYOUT,
    &txlat_pair::LAYOUT,
    &bio_key::LAYOUT,
    &hist::LAYOUT,
    &flow_key::LAYOUT,
    &flow_key4::LAYOUT,
    &flow_val::LAYOUT,
    &flow_slot4::LAYOUT,
    &flow_slot::LAYOUT,
    &dev_info::LAYOUT,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::btf::{Btf, Kind};

    fn object_btf(name: &str) -> Btf {
        let obj =
            crate::bpf::embedded::object(name).unwrap_or_else(|| panic!("{name}: not embedded"));
        crate::bpf::object::Object::parse(obj)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .btf
            .unwrap_or_else(|| panic!("{name}: no .BTF"))
    }

    fn check(l: &Layout, obj: &str, size: usize, member: &dyn Fn(&str) -> Option<(usize, usize)>) {
        assert_eq!(size, l.size, "{obj}: sizeof(struct {})", l.name);
        for fl in l.fields {
            let (off, sz) = member(fl.name)
                .unwrap_or_else(|| panic!("{obj}: struct {} has no {}", l.name, fl.name));
            assert_eq!(
                off, fl.offset,
                "{obj}: offsetof(struct {}, {})",
                l.name, fl.name
            );
            assert_eq!(sz, fl.size, "{obj}: sizeof(struct {}.{})", l.name, fl.name);
        }
    }

    /// Every offset and size a decoder uses equals the struct's in the object's own BTF
    /// (`ns_event` is there through `ns_event_layout` in `netprobes.h`).
    #[test]
    fn layouts_match_the_objects_btf() {
        for l in ALL {
            for obj in l.objects {
                let btf = object_btf(obj);
                let id = btf
                    .find_by_name_kind(l.name, Kind::Struct)
                    .unwrap_or_else(|| panic!("{obj}: no struct {} in its BTF", l.name));
                let size = btf.resolve_size(id).unwrap() as usize;
                check(l, obj, size, &|name| {
                    let (m, bit_off) = btf.find_member(id, name).unwrap()?;
                    assert_eq!(m.bitfield_size, 0, "{obj}: {}.{name}", l.name);
                    assert_eq!(bit_off % 8, 0, "{obj}: {}.{name}", l.name);
                    Some((
                        bit_off as usize / 8,
                        btf.resolve_size(m.ty).unwrap() as usize,
                    ))
                });
            }
        }
    }

    #[test]
    fn fields_read_native_endian_and_refuse_short_input() {
        let mut b = [0u8; 72];
        b[20..24].copy_from_slice(&0x0304_0102u32.to_ne_bytes());
        assert_eq!(ns_event::REASON.u32(&b), Some(0x0304_0102));
        assert_eq!(ns_event::DADDR.u32_at(&b, 12), Some(0));
        assert_eq!(ns_event::DADDR.u32_at(&b, 13), None);
        assert_eq!(ns_event::DADDR.u64(&b[..60]), None);
    }
}
