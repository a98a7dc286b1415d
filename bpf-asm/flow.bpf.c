// SPDX-License-Identifier: GPL-2.0-only
/*
 * flow: bytes and packets per (local entity, direction, remote address[, ports]) on the
 * devices user space attaches us to (tcx links, else cls_bpf direct-action filters on
 * clsact). One program per tc hook; both return "next" (TCX_NEXT / TC_ACT_UNSPEC) and never
 * change the packet.
 *
 * User space fills `devices_direct`/`devices` (ifindex -> local entity) before it attaches a
 * device; packets of a device not in the map are not counted. The host side of a pod's veth carries the pod's
 * namespace and `FLIP`: what enters the host side left the pod, so directions are swapped to be
 * "as seen by the pod". An uplink carries the host namespace and no flip.
 *
 * Parsing: Ethernet, up to two VLAN tags in the packet (accelerated tags are not in the data),
 * IPv4 (options, fragments: ports only in the first), IPv6 with hop-by-hop, routing,
 * destination options, fragment and AH extension headers before the transport header;
 * TCP/UDP/UDP-Lite/SCTP ports (host byte order), ICMP/ICMPv6 without ports. The common
 * cases (untagged IPv4 without options, untagged IPv6 without extension headers, whole
 * headers in the linear data) are read in place; everything else through bpf_skb_load_bytes.
 * With the devices array below, this cut the program's run time for a 64-byte UDP datagram
 * (BPF_PROG_TEST_RUN, one run) from ~220 ns to ~100 ns, an empty tc program taking ~42 ns.
 *
 * Bytes are IP bytes as they travel on the wire: an aggregated (GSO) packet counts its
 * segments as packets and each segment's IP and transport headers in bytes.
 *
 * A packet is counted first in this CPU's table (`table4`, `table6`, below: no hash lookup),
 * and in the hashes only when its key finds no slot there.
 *
 * The maps `flows4` (IPv4, 16-byte key) and `flows` (IPv6, 28-byte key) are bounded per-CPU
 * hashes; an update that finds its map full is counted in `counts_full`. Per CPU, so a packet
 * costs plain adds instead of two locked atomic adds on a line other CPUs write too: in
 * `cargo bench --bench throughput` (flow alone, 9 rounds, 64-byte UDP) that took flow from
 * 93.9 % to 96.1 % of the no-probe rate (floor 98.1 %). Not preallocated: an entry costs 16
 * bytes per possible CPU only while the flow exists (a preallocated map would hold mapEntries x
 * CPUs x 16 bytes from the start; preallocation measured no faster per run). User space sums
 * the CPUs' values of both maps.
 *
 * Where a run's time goes (BPF_PROG_TEST_RUN of a 64-byte IPv4 UDP datagram, minimum of 7 x 2M
 * runs, variants of this file): an empty tc program 33 ns, + the device lookup 35, + parsing
 * 42, + a flows lookup that misses 81, the whole program with one 28-byte key for both
 * families 80-85. The per-CPU hash lookup (an out-of-line call to the hash lookup, which calls
 * jhash and, on a hit, memcmp; every return through this AMD host's SRSO return thunk) is
 * about half of the run; the update of the value costs nothing measurable. IPv4's own map with
 * a 16-byte key (jhash2 over 4 words instead of 7, a 16-byte compare) brought the run to
 * 68-76 ns; 32-bit instead of byte-wise address copies gained nothing. At line rate with
 * run-time stats on (a veth, cls_bpf) an empty program reads 75-86 ns per run, parsing adds
 * 10-40 and the lookup 60-100: the rest is the tc hook, the stats' clock reads and cache misses
 * between runs, which no program body avoids. The per-CPU tables replace that lookup for the
 * keys they hold: 58-67 -> 37-45 ns for the IPv4 datagram, 65-93 -> 42-47 ns for IPv6, an empty
 * tc program 26-30 ns (same measurement, one session).
 */
#include "netsleuth.h"

char LICENSE[] SEC("license") = "GPL";

static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;

/* The UAPI context (not a kernel struct: the verifier rewrites accesses by offset). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__u64 flow_keys;
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
};

#define TC_NEXT -1

#define DIR_INGRESS 0
#define DIR_EGRESS 1
#define DEV_FLIP 1

#define AF_INET 2
#define AF_INET6 10

/* Set by user space before load: ports in the key (`enablePortInLabel`). */
const volatile __u8 with_ports = 0;
/* Set by user space before load: the per-CPU tables' size - 1 (a power of two - 1), and
 * whether they are used at all (`cpuTableEntries` > 0). */
const volatile __u32 table_mask = 0;
/* 64 - log2(size) (63 for one slot): a slot index is the top bits of the key's multiplicative
 * hash, the only bits of a product that every bit of the key reaches (the low bits would
 * ignore the address's last bytes, where a cluster's addresses differ). */
const volatile __u32 table_shift = 63;
const volatile __u8 with_table = 0;

struct dev_info {
	__u32 netns; /* inode of the local entity's namespace */
	__u32 flags; /* DEV_FLIP */
	__u32 table_id; /* the namespace's id in the per-CPU tables; 0: not in them */
};

struct flow_key {
	__u32 netns;
	__u8 dir;    /* as seen by the local entity */
	__u8 family; /* AF_INET, AF_INET6 */
	__u8 proto;  /* IPPROTO_* of the transport header (after IPv6 extension headers) */
	__u8 _pad;
	__u16 lport; /* host byte order; 0 without ports */
	__u16 rport;
	__u8 raddr[16]; /* remote address; IPv4 in the first 4 bytes */
};

/* An IPv4 key (map `flows4`): the first 16 bytes of a `struct flow_key` whose family is
 * AF_INET, so the program fills one `struct flow_key` and hands the IPv4 map a pointer to it. */
struct flow_key4 {
	__u32 netns;
	__u8 dir;
	__u8 family; /* AF_INET */
	__u8 proto;
	__u8 _pad;
	__u16 lport;
	__u16 rport;
	__u8 raddr[4];
};

struct flow_val {
	__u64 bytes;
	__u64 packets;
};

/* Devices with ifindex < DEV_DIRECT are in the array `devices_direct` (an array lookup is
 * inlined by the verifier: ~30 ns less per packet than a hash lookup), netns 0 meaning "not
 * attached"; higher ifindexes (a node with much pod churn) in the hash `devices`. */
#define DEV_DIRECT 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEV_DIRECT);
	__type(key, __u32);
	__type(value, struct dev_info);
} devices_direct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct dev_info);
} devices SEC(".maps");

/* IPv4 flows: a 16-byte key (jhash2 over 4 words, a 16-byte compare). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct flow_key4);
	__type(value, struct flow_val);
} flows4 SEC(".maps");

/* IPv6 flows: the whole 28-byte key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts_full SEC(".maps");

/*
 * The per-CPU tables in front of the hashes: open addressing over a per-CPU array, whose
 * lookup the verifier inlines (6.10+; a helper call without hashing before), so a packet of
 * a flow this CPU already holds costs a multiply, a few loads and compares and two adds, no
 * call. A slot's key is the flow's key with the namespace's `table_id` in place of its inode;
 * a slot, once claimed, keeps its key until its id is retired (user space clears the id's
 * entry in `table_ids` when the namespace is reaped, and never reuses an id), and is then
 * reclaimed by the next key of this CPU that probes it. A key that finds no slot within
 * TABLE_PROBES goes to the hash. Each CPU writes only its own table; per CPU a key holds at
 * most one slot (a key claims a slot only after probing its whole path without finding
 * itself), and every packet is added in exactly one place, a slot or the hash (a key in the
 * hash may get a slot later, when one on its path is retired), so user space sums both and
 * counts nothing twice. Claiming writes the counts, then the key, the word with
 * the id last: user space reads a slot from its first word on and skips a slot whose id is
 * 0 or retired.
 */
#define TABLE_PROBES 4
#define TABLE_IDS 4096

#define barrier() __asm__ __volatile__("" ::: "memory")

struct flow_slot4 {
	struct flow_key4 key;
	struct flow_val val;
};

struct flow_slot {
	struct flow_key key;
	__u32 _pad;
	struct flow_val val;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct flow_slot4);
} table4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct flow_slot);
} table6 SEC(".maps");

/* table_ids[id % TABLE_IDS] == id: the id is live (user space allocates ids so that live ones
 * never share an entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TABLE_IDS);
	__type(key, __u32);
	__type(value, __u32);
} table_ids SEC(".maps");

static __always_inline __u16 swap16(__u16 v)
{
	return (__u16)((v >> 8) | (v << 8));
}

/* `map` is `flows4` (the key's first 16 bytes) for IPv4, `flows` for IPv6. */
static __always_inline int add_to(void *map, struct flow_key *key, __u64 bytes, __u64 packets)
{
	struct flow_val *v = bpf_map_lookup_elem(map, key);
	if (!v) {
		struct flow_val init = {.bytes = bytes, .packets = packets};
		if (bpf_map_update_elem(map, key, &init, BPF_NOEXIST) == 0)
			return TC_NEXT;
		v = bpf_map_lookup_elem(map, key); /* another CPU created it */
		if (!v) {
			__u32 zero = 0;
			__u64 *full = bpf_map_lookup_elem(&counts_full, &zero);
			if (full)
				*full += 1;
			return TC_NEXT;
		}
	}
	/* this CPU's value: tc programs do not migrate while they run */
	v->bytes += bytes;
	v->packets += packets;
	return TC_NEXT;
}

/* Whether the slot's id (the low half of its first word) is retired. */
static __always_inline int retired(__u64 w0)
{
	__u32 id = (__u32)w0, idx = id % TABLE_IDS;
	__u32 *live = bpf_map_lookup_elem(&table_ids, &idx);
	return !live || *live != id;
}

/* The key's words (`n` of them, the id in the first) in this CPU's table slot, if it finds
 * one: 1 counted, 0 not (the caller uses the hash). */
static __always_inline int add_slot(void *table, const __u64 *w, int n, __u64 bytes, __u64 packets)
{
	__u64 h = w[0] * 0x9E3779B97F4A7C15ULL;
	h = (h ^ w[1]) * 0x9E3779B97F4A7C15ULL;
	if (n > 2) {
		h = (h ^ w[2]) * 0x9E3779B97F4A7C15ULL;
		h = (h ^ w[3]) * 0x9E3779B97F4A7C15ULL;
	}
	__u32 i = (__u32)(h >> table_shift);
	__u64 *free = 0;
#pragma unroll
	for (int p = 0; p < TABLE_PROBES; p++) {
		__u32 idx = (i + p) & table_mask;
		__u64 *s = bpf_map_lookup_elem(table, &idx);
		if (!s)
			break;
		if (s[0] == w[0] && s[1] == w[1] && (n == 2 || (s[2] == w[2] && s[3] == w[3]))) {
			struct flow_val *v = (void *)(s + n);
			v->bytes += bytes;
			v->packets += packets;
			return 1;
		}
		if (s[0] == 0) {
			/* never claimed: no key went past it */
			if (!free)
				free = s;
			break;
		}
		if (!free && retired(s[0]))
			free = s;
	}
	if (!free)
		return 0;
	/* in this order (the compiler barriers keep it): the counts, the key, its first word
	 * last */
	struct flow_val *v = (void *)(free + n);
	v->bytes = bytes;
	v->packets = packets;
	barrier();
	if (n > 2) {
		free[3] = w[3];
		free[2] = w[2];
	}
	free[1] = w[1];
	barrier();
	free[0] = w[0];
	return 1;
}

static __always_inline int add(struct flow_key *key, __u32 table_id, __u64 bytes, __u64 packets)
{
	if (with_table && table_id) {
		/* the key's words with the id in place of the inode (the key's first member) */
		__u64 w[4] = {};
		__builtin_memcpy(w, key, 28);
		w[0] = (w[0] & ~0xffffffffULL) | table_id;
		if (key->family == AF_INET) {
			if (add_slot(&table4, w, 2, bytes, packets))
				return TC_NEXT;
		} else if (add_slot(&table6, w, 4, bytes, packets)) {
			return TC_NEXT;
		}
	}
	if (key->family == AF_INET)
		return add_to(&flows4, key, bytes, packets);
	return add_to(&flows, key, bytes, packets);
}

/* The key's local and remote ports from a segment's source and destination ports. */
static __always_inline void set_ports(struct flow_key *key, __u8 dir, __u16 sport, __u16 dport)
{
	key->lport = dir == DIR_EGRESS ? sport : dport;
	key->rport = dir == DIR_EGRESS ? dport : sport;
}

/*
 * Count the skb under `key`: its bytes from the network header on (`l3off`) and, for a GSO
 * skb, every segment, each but the first carrying its own `hdrs` bytes of IP and transport
 * headers once cut.
 */
static __always_inline int add_skb(struct flow_key *key, __u32 table_id, struct __sk_buff *skb,
				   __u32 l3off, __u32 hdrs)
{
	__u32 len = skb->len;
	__u64 bytes = len > l3off ? len - l3off : 0, packets = 1;
	__u32 segs = skb->gso_segs;
	if (segs > 1) {
		packets = segs;
		bytes += (__u64)(segs - 1) * hdrs;
	}
	return add(key, table_id, bytes, packets);
}

/* In place: the ports (when counted) and the transport header's length of a first segment. */
static __always_inline __u32 l4_in_place(struct flow_key *key, __u8 dir, const __u8 *l4h, __u8 l4)
{
	if (with_ports)
		set_ports(key, dir, swap16(*(__u16 *)l4h), swap16(*(__u16 *)(l4h + 2)));
	if (l4 == 6)
		return (l4h[12] >> 4) * 4;
	return l4 != 132 ? 8 : 0;
}

static __always_inline int count(struct __sk_buff *skb, __u8 tc_dir)
{
	__u32 ifindex = skb->ifindex;
	struct dev_info *dev;

	if (ifindex < DEV_DIRECT) {
		dev = bpf_map_lookup_elem(&devices_direct, &ifindex);
		if (dev && dev->netns == 0)
			return TC_NEXT;
	} else {
		dev = bpf_map_lookup_elem(&devices, &ifindex);
	}
	if (!dev)
		return TC_NEXT;

	struct flow_key key __attribute__((aligned(8))) = {};
	__u32 table_id = dev->table_id;
	__u32 off, l3off, hdrs;
	__u8 dir = tc_dir;
	if (dev->flags & DEV_FLIP)
		dir ^= 1;
	key.netns = dev->netns;
	key.dir = dir;

	/* Fast path: untagged IPv4 without options, read in place (no helper calls). */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *h = data;
	if (data + 14 + 20 + 20 <= data_end && *(__u16 *)(h + 12) == swap16(0x0800) && h[14] == 0x45) {
		__u8 l4 = h[23];
		key.family = AF_INET;
		key.proto = l4;
		__builtin_memcpy(key.raddr, dir == DIR_EGRESS ? h + 30 : h + 26, 4);
		__u32 l4hdr = 0;
		int first = ((h[20] & 0x1f) | h[21]) == 0;
		if (first && (l4 == 6 || l4 == 17 || l4 == 132 || l4 == 136))
			l4hdr = l4_in_place(&key, dir, h + 34, l4);
		l3off = 14;
		hdrs = 20 + l4hdr;
		goto counted;
	}
	/* Untagged IPv6 without extension headers, in place. */
	if (data + 14 + 40 + 20 <= data_end && *(__u16 *)(h + 12) == swap16(0x86DD)) {
		__u8 l4 = h[20];
		if (l4 == 6 || l4 == 17 || l4 == 58 || l4 == 132 || l4 == 136) {
			key.family = AF_INET6;
			key.proto = l4;
			__builtin_memcpy(key.raddr, dir == DIR_EGRESS ? h + 38 : h + 22, 16);
			__u32 l4hdr = 0;
			if (l4 != 58)
				l4hdr = l4_in_place(&key, dir, h + 54, l4);
			l3off = 14;
			hdrs = 40 + l4hdr;
			goto counted;
		}
	}

	off = 14;
	__u16 proto;
	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return TC_NEXT;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != swap16(0x8100) && proto != swap16(0x88a8))
			break;
		if (bpf_skb_load_bytes(skb, off + 2, &proto, 2))
			return TC_NEXT;
		off += 4;
	}

	l3off = off;
	__u32 l4off;
	__u8 l4proto;
	int ports = 1; /* 0: a later fragment, no transport header */
	if (proto == swap16(0x0800)) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, off, ip, 20))
			return TC_NEXT;
		__u32 ihl = (ip[0] & 0xf) * 4;
		if (ihl < 20)
			return TC_NEXT;
		/* fragment offset != 0: no ports */
		if (((ip[6] & 0x1f) | ip[7]) != 0)
			ports = 0;
		l4proto = ip[9];
		key.family = AF_INET;
		if (dir == DIR_EGRESS)
			__builtin_memcpy(key.raddr, &ip[16], 4);
		else
			__builtin_memcpy(key.raddr, &ip[12], 4);
		l4off = off + ihl;
	} else if (proto == swap16(0x86DD)) {
		__u8 ip6[40];
		if (bpf_skb_load_bytes(skb, off, ip6, 40))
			return TC_NEXT;
		l4proto = ip6[6];
		key.family = AF_INET6;
		if (dir == DIR_EGRESS)
			__builtin_memcpy(key.raddr, &ip6[24], 16);
		else
			__builtin_memcpy(key.raddr, &ip6[8], 16);
		l4off = off + 40;
#pragma unroll
		for (int i = 0; i < 6; i++) {
			__u8 ext[4];
			if (l4proto != 0 && l4proto != 43 && l4proto != 60 && l4proto != 44 && l4proto != 51)
				break;
			if (bpf_skb_load_bytes(skb, l4off, ext, 4))
				return TC_NEXT;
			__u8 next = ext[0];
			if (l4proto == 44) {
				/* fragment header: offset in ext[2..3] (13 bits, then flags) */
				if ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8)
					ports = 0;
				l4off += 8;
			} else if (l4proto == 51) {
				l4off += ((__u32)ext[1] + 2) * 4;
			} else {
				l4off += ((__u32)ext[1] + 1) * 8;
			}
			l4proto = next;
			if (!ports)
				break;
		}
	} else {
		return TC_NEXT;
	}
	key.proto = l4proto;

	__u32 l4hdr = 0;
	if (ports && (l4proto == 6 || l4proto == 17 || l4proto == 132 || l4proto == 136)) {
		__u16 p[2];
		if (bpf_skb_load_bytes(skb, l4off, p, 4) == 0 && with_ports)
			set_ports(&key, dir, swap16(p[0]), swap16(p[1]));
		if (l4proto == 6) {
			__u8 doff;
			if (bpf_skb_load_bytes(skb, l4off + 12, &doff, 1) == 0)
				l4hdr = (doff >> 4) * 4;
		} else if (l4proto == 17 || l4proto == 136) {
			l4hdr = 8;
		}
	}

	/* every segment but the first carries its own IP and transport headers */
	hdrs = (l4off - l3off) + l4hdr;
counted:
	/* one call site: the table's probes are inlined once per program */
	return add_skb(&key, table_id, skb, l3off, hdrs);
}

SEC("tc")
int flow_ingress(struct __sk_buff *skb)
{
	return count(skb, DIR_INGRESS);
}

SEC("tc")
int flow_egress(struct __sk_buff *skb)
{
	return count(skb, DIR_EGRESS);
}
