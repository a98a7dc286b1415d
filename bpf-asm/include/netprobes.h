/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * netprobes.h: what the eBPF probes (packetloss, tcpreset, tcpretrans, and the
 * latency probes to come) share: kernel types as CO-RE "flavors" (the
 * `___p` suffix is ignored when matching the kernel's BTF, so these never
 * clash with netsleuth.h's minimal types), namespace attribution, tuples,
 * the common event record and its ring buffer, stacks.
 *
 * Attribution is always by the namespace of the packet's device or socket,
 * never by the current task: drops, resets and retransmits run in softirq
 * context on behalf of whichever pod owns the packet.
 */
#ifndef NETSLEUTH_NETPROBES_H
#define NETSLEUTH_NETPROBES_H

#include "netsleuth.h"
#include "ratelimit.h"

#define BPF_F_FAST_STACK_CMP (1ULL << 9)
#define STACK_DEPTH 32

static long (*bpf_get_stackid)(void *ctx, void *map, __u64 flags) = (void *)27;

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common___p {
	unsigned int inum;
};

struct net___p {
	struct ns_common___p ns;
};

typedef struct {
	struct net___p *net;
} possible_net_t___p;

struct net_device___p {
	possible_net_t___p nd_net;
};

struct in6_addr___p {
	__u8 s6_addr[16];
};

struct sock_common___p {
	__u32 skc_daddr;
	__u32 skc_rcv_saddr;
	__u16 skc_dport;
	__u16 skc_num;
	__u16 skc_family;
	unsigned char skc_state;
	possible_net_t___p skc_net;
	struct in6_addr___p skc_v6_daddr;
	struct in6_addr___p skc_v6_rcv_saddr;
};

struct sock___p {
	struct sock_common___p __sk_common;
};

struct request_sock___p {
	struct sock_common___p __req_common;
};

struct sk_buff___p {
	struct net_device___p *dev;
	struct sock___p *sk;
	char cb[48];
	__u16 protocol;
	__u16 network_header;
	unsigned char *head;
};

#pragma clang attribute pop

/* One record layout for every probe's events; `type` is probe-specific. */
struct ns_event {
	__u64 ts;       /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 location; /* packetloss: the freeing call site */
	__u32 netns;    /* inode of the attributed network namespace */
	__u32 reason;   /* packetloss: skb_drop_reason; tcpreset: sk_rst_reason */
	__s32 stack_id; /* < 0: no stack */
	__u16 family;   /* AF_INET, AF_INET6, 0 (not IP) */
	__u8 l4proto;   /* IPPROTO_* */
	__u8 type;      /* probe-specific subtype */
	__u8 state;     /* TCP state, 0 if none */
	__u8 _pad[1];
	__u16 sport;    /* host byte order */
	__u16 dport;    /* host byte order */
	__u16 _pad2;
	__u8 saddr[16]; /* IPv4: first 4 bytes */
	__u8 daddr[16];
};

/* Set by user space before load. */
const volatile __u8 emit_events = 0;
const volatile __u8 enable_stack = 0;

/*
 * Never read: it puts struct ns_event into every object's BTF. The record is only written
 * through inlined helpers, which leave no type behind, and src/probes/layout.rs checks the
 * offsets its decoder uses against the object's BTF (a zeroed .rodata entry, nothing else).
 */
const volatile struct ns_event ns_event_layout = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Records the programs could not reserve (ring buffer full): read by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} events_lost SEC(".maps");

/* Stack ids are deleted by user space after symbolizing: the map never fills up for good. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1024);
	__uint(key_size, 4);
	__uint(value_size, STACK_DEPTH * 8);
} stacks SEC(".maps");

/* Counter updates that found the counting map full (nothing grows past max_entries). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts_full SEC(".maps");

static __always_inline void bump_percpu(void *map)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(map, &zero);

	if (v)
		*v += 1;
}

/* Adds `n` to the counter at `key` of a hash map; counts a full map. */
static __always_inline void count_add(void *map, const void *key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (v) {
		__sync_fetch_and_add(v, n);
		return;
	}
	if (bpf_map_update_elem(map, key, &n, BPF_NOEXIST) == 0)
		return;
	v = bpf_map_lookup_elem(map, key); /* lost a race with another CPU */
	if (v)
		__sync_fetch_and_add(v, n);
	else
		bump_percpu(&counts_full);
}

static __always_inline __u32 net_inum(struct net___p *net)
{
	__u32 inum = 0;

	if (net)
		BPF_CORE_READ_INTO(&inum, net, ns.inum);
	return inum;
}

static __always_inline __u32 sk_netns(struct sock___p *sk)
{
	struct net___p *net = 0;

	if (!sk)
		return 0;
	BPF_CORE_READ_INTO(&net, sk, __sk_common.skc_net.net);
	return net_inum(net);
}

/* The namespace of the skb's device, else of its socket. */
static __always_inline __u32 skb_netns(struct sk_buff___p *skb)
{
	struct net_device___p *dev = 0;
	struct net___p *net = 0;
	struct sock___p *sk = 0;

	if (!skb)
		return 0;
	BPF_CORE_READ_INTO(&dev, skb, dev);
	if (dev) {
		BPF_CORE_READ_INTO(&net, dev, nd_net.net);
		if (net)
			return net_inum(net);
	}
	BPF_CORE_READ_INTO(&sk, skb, sk);
	return sk_netns(sk);
}

static __always_inline __u16 bswap16(__u16 v)
{
	return (__u16)((v >> 8) | (v << 8));
}

struct iphdr___raw {
	__u8 ihl_version;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct ipv6hdr___raw {
	__u32 vtc_flow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

/*
 * The packet's 5-tuple from its network header (set from the IP layer on).
 * Ports in host byte order; `swap` puts the packet's destination first (the
 * side that answers, e.g. the sender of a RST for an incoming segment).
 */
static __always_inline void skb_tuple(struct sk_buff___p *skb, struct ns_event *e, int swap)
{
	unsigned char *head = 0;
	__u16 nh = 0, proto = 0, ports[2] = {};
	__u32 l4off = 0;

	BPF_CORE_READ_INTO(&proto, skb, protocol);
	BPF_CORE_READ_INTO(&head, skb, head);
	BPF_CORE_READ_INTO(&nh, skb, network_header);
	if (!head || nh == (__u16)~0U)
		return;
	proto = bswap16(proto);
	if (proto == ETH_P_IP) {
		struct iphdr___raw ip = {};

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return;
		if ((ip.ihl_version >> 4) != 4)
			return;
		e->family = AF_INET;
		e->l4proto = ip.protocol;
		__builtin_memcpy(swap ? e->daddr : e->saddr, &ip.saddr, 4);
		__builtin_memcpy(swap ? e->saddr : e->daddr, &ip.daddr, 4);
		l4off = nh + (ip.ihl_version & 0xf) * 4;
		/* Ports only in the first fragment. */
		if (bswap16(ip.frag_off) & 0x1fff)
			return;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr___raw ip6 = {};

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return;
		e->family = AF_INET6;
		e->l4proto = ip6.nexthdr;
		__builtin_memcpy(swap ? e->daddr : e->saddr, ip6.saddr, 16);
		__builtin_memcpy(swap ? e->saddr : e->daddr, ip6.daddr, 16);
		l4off = nh + sizeof(ip6);
	} else {
		return;
	}
	if (e->l4proto != 6 && e->l4proto != 17 && e->l4proto != 132)
		return;
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + l4off))
		return;
	e->sport = bswap16(swap ? ports[1] : ports[0]);
	e->dport = bswap16(swap ? ports[0] : ports[1]);
}

/* A socket's tuple: local side first. */
static __always_inline void sk_tuple(struct sock_common___p *skc, struct ns_event *e)
{
	__u16 family = 0, num = 0, dport = 0;
	unsigned char state = 0;

	if (!skc)
		return;
	BPF_CORE_READ_INTO(&family, skc, skc_family);
	BPF_CORE_READ_INTO(&num, skc, skc_num);
	BPF_CORE_READ_INTO(&dport, skc, skc_dport);
	BPF_CORE_READ_INTO(&state, skc, skc_state);
	e->family = family;
	e->l4proto = 6;
	e->state = state;
	e->sport = num;
	e->dport = bswap16(dport);
	if (family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, skc, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, skc, skc_daddr);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr___p *)e->saddr, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr___p *)e->daddr, skc, skc_v6_daddr);
	}
}

/* A zeroed event record, or NULL when events are off, over the type's rate limit or the
 * buffer is full (both counted). */
static __always_inline struct ns_event *event_reserve(void *ctx, __u32 netns, __u8 type)
{
	struct ns_event *e;

	if (!emit_events || !rl_allow(type))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		bump_percpu(&events_lost);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->netns = netns;
	e->type = type;
	e->stack_id = enable_stack ? bpf_get_stackid(ctx, &stacks, BPF_F_FAST_STACK_CMP) : -1;
	return e;
}

#endif /* NETSLEUTH_NETPROBES_H */
