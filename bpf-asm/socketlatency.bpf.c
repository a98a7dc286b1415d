// SPDX-License-Identifier: GPL-2.0-only
/*
 * socketlatency: per netns (of the socket), IPv4/IPv6 sockets only
 *   read: sock:sk_data_ready -> sock:sock_recv_length (ret > 0, not MSG_PEEK):
 *         how long data the kernel announced waited for the application. The
 *         first announcement since the last read is kept: in a direct-mapped
 *         table (array slot by a hash of sk, holding its sk), else, while
 *         another socket holds that slot, in an LRU hash keyed by sk, which
 *         is only searched while it may hold entries (a count of them).
 *   send: TCP only: sock:sock_send_length (ret > 0) returning with data the
 *         stack could not send yet (write_seq != snd_nxt: cwnd, receive
 *         window, Nagle, pacing) -> the net:net_dev_start_xmit of the
 *         segment carrying that write's last byte (TCP seq + payload from
 *         the packet reach the write_seq seen at the write's end). Writes
 *         sent within the call (all of UDP's, most of TCP's) waited for
 *         nothing and are not observed; while one write is pending, later
 *         ones on that socket are not sampled. net_dev_start_xmit looks for a
 *         pending write only while some may exist (a count of them).
 * Histograms: hash `lat` keyed (netns, stage), 1024 namespaces.
 * Events (type 1 read, 2 send) above `threshold_ns` with the socket's tuple.
 */
#include "latency.h"
#define FALLBACK_KPROBE_STASH
#include "fallback.h"
#include "chain.h"

char LICENSE[] SEC("license") = "GPL";

#define MSG_PEEK 2
#define IPPROTO_TCP 6

static __always_inline __u32 bpf_ntohl_(__u32 v)
{
	return __builtin_bswap32(v);
}

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct sock___lat {
	struct sock_common___p __sk_common;
	__u16 sk_protocol;
};

struct tcp_sock___lat {
	__u32 snd_nxt;
	__u32 write_seq;
};

struct sk_buff___lat {
	unsigned int len;
	unsigned char *head;
	unsigned char *data;
	__u16 transport_header;
};
#pragma clang attribute pop

/* sk -> first sk_data_ready since the last read: the fast path. */
struct ready_slot {
	__u64 sk; /* 0: free */
	__u64 ts;
};

#define READY_SLOTS_LOG2 14

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << READY_SLOTS_LOG2);
	__type(key, __u32);
	__type(value, struct ready_slot);
} ready_slots SEC(".maps");

/* sk -> first sk_data_ready since the last read, for sockets whose slot another one holds. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} readable SEC(".maps");

struct pending_write {
	__u64 ts;       /* the write returned */
	__u32 end_seq;  /* write_seq then: sent once a segment reaches it */
	__u32 _pad;
};

/* sk -> a write that left data unsent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pending_write);
} pending SEC(".maps");

/* Entries added to `readable` (0) and `pending` (1) minus those deleted: never below what the
 * maps hold (LRU evictions are not subtracted), so 0 means a map is empty and need not be
 * searched. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} spill_count SEC(".maps");

static __always_inline __u64 *spill(__u32 which)
{
	return bpf_map_lookup_elem(&spill_count, &which);
}

static __always_inline struct ready_slot *ready_slot(struct sock___p *sk)
{
	__u32 i = addr_slot(sk, READY_SLOTS_LOG2);

	return bpf_map_lookup_elem(&ready_slots, &i);
}

struct lat_key {
	__u32 netns;
	__u32 stage; /* 0 read, 1 send */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct lat_key);
	__type(value, struct hist);
} lat SEC(".maps");

/* sk_netns with plain loads, for typed pointers (tp_btf, fentry): the verifier makes them
 * fault-safe, without a bpf_probe_read_kernel call each. */
static __always_inline __u32 sk_netns_btf(struct sock___p *sk)
{
	struct net___p *net;

	if (!sk)
		return 0;
	net = sk->__sk_common.skc_net.net;
	return net ? net->ns.inum : 0;
}

/* `btf`: `sk` is a typed pointer (tp_btf, fentry), read with plain loads. */
static __always_inline void observe(void *ctx, struct sock___p *sk, __u32 stage, __u64 ns, int btf)
{
	struct lat_key k = { .netns = btf ? sk_netns_btf(sk) : sk_netns(sk), .stage = stage };
	struct ns_event *e;
	__u16 proto = 0;

	hist_observe(&lat, &k, ns);
	if (ns < threshold_ns)
		return;
	e = event_reserve(ctx, k.netns, stage + 1);
	if (!e)
		return;
	sk_tuple(&sk->__sk_common, e);
	BPF_CORE_READ_INTO(&proto, (struct sock___lat *)sk, sk_protocol);
	e->l4proto = proto;
	if (proto != IPPROTO_TCP)
		e->state = 0;
	e->location = ns;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int on_data_ready(struct sock___p *sk, int btf)
{
	__u64 key = (__u64)sk, now;
	struct ready_slot *r;
	__u16 family = 0;
	__u64 *n;

	/* IP sockets only: unix and netlink sockets wake readers the same way. */
	if (btf)
		family = sk->__sk_common.skc_family;
	else
		BPF_CORE_READ_INTO(&family, sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	r = ready_slot(sk);
	n = spill(0);
	if (!r || !n)
		return 0;
	if (r->sk == key)
		return 0; /* unread data announced before: keep the first */
	if (*n && bpf_map_lookup_elem(&readable, &key))
		return 0;
	now = bpf_ktime_get_ns();
	if (!r->sk) {
		r->ts = now;
		r->sk = key;
		return 0;
	}
	if (bpf_map_update_elem(&readable, &key, &now, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(n, 1);
	return 0;
}

static __always_inline int on_recv(void *ctx, struct sock___p *sk, int ret, int flags, int btf)
{
	__u64 key = (__u64)sk, now, ts;
	struct ready_slot *r;
	__u64 *p, *n;

	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	r = ready_slot(sk);
	if (!r)
		return 0;
	if (r->sk == key) {
		ts = r->ts;
		r->sk = 0;
	} else {
		n = spill(0);
		if (!n || !*n)
			return 0;
		p = bpf_map_lookup_elem(&readable, &key);
		if (!p)
			return 0;
		ts = *p;
		if (bpf_map_delete_elem(&readable, &key) == 0)
			__sync_fetch_and_add(n, -1);
	}
	now = bpf_ktime_get_ns();
	if (now >= ts)
		observe(ctx, sk, 0, now - ts, btf);
	return 0;
}

/* `btf`: `sk` is a typed pointer (tp_btf, fexit): its protocol is read with a plain load (the
 * tcp_sock fields lie beyond struct sock, which the verifier allows only through a probe read). */
static __always_inline int on_send(struct sock___p *sk, int ret, int btf)
{
	struct tcp_sock___lat *tp = (struct tcp_sock___lat *)sk;
	__u32 snd_nxt = 0, write_seq = 0;
	__u64 key = (__u64)sk, now;
	__u16 proto = 0;

	if (ret <= 0)
		return 0;
	if (btf)
		proto = ((struct sock___lat *)sk)->sk_protocol;
	else
		BPF_CORE_READ_INTO(&proto, (struct sock___lat *)sk, sk_protocol);
	if (proto != IPPROTO_TCP)
		return 0;
	BPF_CORE_READ_INTO(&snd_nxt, tp, snd_nxt);
	BPF_CORE_READ_INTO(&write_seq, tp, write_seq);
	if (snd_nxt == write_seq)
		return 0;
	now = bpf_ktime_get_ns();
	{
		struct pending_write w = { .ts = now, .end_seq = write_seq };

		__u64 *n = spill(1);

		if (n && bpf_map_update_elem(&pending, &key, &w, BPF_NOEXIST) == 0)
			__sync_fetch_and_add(n, 1);
	}
	return 0;
}

struct tcphdr___raw {
	__u16 source;
	__u16 dest;
	__u32 seq;
	__u32 ack_seq;
	__u8 doff_res; /* data offset in the high nibble */
	__u8 flags;
};

/* The sequence number after the last byte of a TCP packet (payload only). */
static __always_inline int tcp_end_seq(struct sk_buff___p *skb, __u32 *end)
{
	struct sk_buff___lat *s = (struct sk_buff___lat *)skb;
	unsigned char *head = 0, *data = 0;
	struct tcphdr___raw th = {};
	unsigned int len = 0;
	__u16 thoff = 0;
	long l4, hdr;

	BPF_CORE_READ_INTO(&head, s, head);
	BPF_CORE_READ_INTO(&data, s, data);
	BPF_CORE_READ_INTO(&len, s, len);
	BPF_CORE_READ_INTO(&thoff, s, transport_header);
	if (!head || thoff == (__u16)~0U)
		return -1;
	if (bpf_probe_read_kernel(&th, sizeof(th), head + thoff))
		return -1;
	l4 = (long)(head + thoff - data); /* transport header offset in the packet */
	hdr = (th.doff_res >> 4) * 4;
	if (l4 < 0 || (long)len < l4 + hdr)
		return -1;
	*end = bpf_ntohl_(th.seq) + (__u32)(len - l4 - hdr);
	return 0;
}

static __always_inline int on_xmit(void *ctx, struct sk_buff___p *skb)
{
	struct sock___p *sk = 0;
	struct pending_write *w;
	__u64 key, now, *n = spill(1);
	__u32 end = 0;

	if (!n || !*n)
		return 0; /* no write pending anywhere */
	BPF_CORE_READ_INTO(&sk, skb, sk);
	if (!sk)
		return 0;
	key = (__u64)sk;
	w = bpf_map_lookup_elem(&pending, &key);
	if (!w)
		return 0;
	if (tcp_end_seq(skb, &end) || (__s32)(end - w->end_seq) < 0)
		return 0;
	now = bpf_ktime_get_ns();
	if (now >= w->ts)
		observe(ctx, sk, 1, now - w->ts, 0);
	if (bpf_map_delete_elem(&pending, &key) == 0)
		__sync_fetch_and_add(n, -1);
	return 0;
}

/* sk_data_ready(const struct sock *sk) */
SEC("tp_btf/sk_data_ready")
int ready_btf(__u64 *ctx) { return on_data_ready((struct sock___p *)ctx[0], 1); }
SEC("raw_tp/sk_data_ready")
int ready_raw(__u64 *ctx) { return on_data_ready((struct sock___p *)ctx[0], 0); }

/* sock_recv_length(struct sock *sk, int ret, int flags) */
SEC("tp_btf/sock_recv_length")
int recv_btf(__u64 *ctx) { return on_recv(ctx, (struct sock___p *)ctx[0], (int)ctx[1], (int)ctx[2], 1); }
SEC("raw_tp/sock_recv_length")
int recv_raw(__u64 *ctx) { return on_recv(ctx, (struct sock___p *)ctx[0], (int)ctx[1], (int)ctx[2], 0); }

/* sock_send_length(struct sock *sk, int ret, int flags) */
SEC("tp_btf/sock_send_length")
int send_btf(__u64 *ctx) { return on_send((struct sock___p *)ctx[0], (int)ctx[1], 1); }
SEC("raw_tp/sock_send_length")
int send_raw(__u64 *ctx) { return on_send((struct sock___p *)ctx[0], (int)ctx[1], 0); }

/* net_dev_start_xmit(const struct sk_buff *skb, const struct net_device *dev); shared with
 * netiftxlat (include/chain.h) */
CHAINED("tp_btf/net_dev_start_xmit", xmit_btf, on_xmit(ctx, (struct sk_buff___p *)ctx[0]))
CHAINED("raw_tp/net_dev_start_xmit", xmit_raw, on_xmit(ctx, (struct sk_buff___p *)ctx[0]))

/*
 * Fallbacks: sock:sk_data_ready, sock_recv_length and sock_send_length are 6.6+; before, these
 * functions (fentry/fexit, else kprobe/kretprobe) make the probe work:
 *   sk_data_ready:    sock_def_readable(struct sock *sk), entry: the sk_data_ready callback of
 *                     TCP and UDP sockets (the tracepoint sits just before the callback; sockets
 *                     whose callback is replaced, e.g. by sockmap or kTLS, are not seen)
 *   sock_recv_length: inet_recvmsg / inet6_recvmsg(struct socket *sock, struct msghdr *msg,
 *                     size_t size, int flags) -> int, return: what sock_recvmsg calls for IP
 *                     sockets, in another file (never inlined, unlike sock_recvmsg into its
 *                     callers); the result is the tracepoint's `ret`
 *   sock_send_length: tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size) -> int,
 *                     return: the TCP send the tracepoint reports (only TCP is measured)
 *   net_dev_start_xmit: dev_hard_start_xmit(struct sk_buff *first, ...), entry (see
 *                     netiftxlat.bpf.c: the first skb of a list)
 */
static __always_inline struct sock___p *socket_sk(__u64 sock)
{
	struct sock___p *sk = 0;

	if (sock)
		BPF_CORE_READ_INTO(&sk, (struct socket___p *)sock, sk);
	return sk;
}

SEC("fentry/sock_def_readable")
int ready_fentry(__u64 *ctx) { return on_data_ready((struct sock___p *)ctx[0], 1); }
SEC("kprobe/sock_def_readable")
int ready_kprobe(void *ctx) { return on_data_ready((struct sock___p *)KARG0(ctx), 0); }

SEC("fexit/inet_recvmsg")
int recv_fexit(__u64 *ctx) { return on_recv(ctx, socket_sk(ctx[0]), (int)ctx[4], (int)ctx[3], 0); }
SEC("fexit/inet6_recvmsg")
int recv6_fexit(__u64 *ctx) { return on_recv(ctx, socket_sk(ctx[0]), (int)ctx[4], (int)ctx[3], 0); }
SEC("kprobe/inet_recvmsg")
int recv_kprobe(void *ctx) { return kprobe_stash(KARG0(ctx), KARG3(ctx), 1); }
SEC("kprobe/inet6_recvmsg")
int recv6_kprobe(void *ctx) { return kprobe_stash(KARG0(ctx), KARG3(ctx), 1); }

static __always_inline int recv_return(void *ctx)
{
	struct kprobe_args a;

	if (!kprobe_unstash(&a) || a.a2 != 1)
		return 0;
	return on_recv(ctx, socket_sk(a.a0), (int)KRET(ctx), (int)a.a1, 0);
}

SEC("kretprobe/inet_recvmsg")
int recv_kretprobe(void *ctx) { return recv_return(ctx); }
SEC("kretprobe/inet6_recvmsg")
int recv6_kretprobe(void *ctx) { return recv_return(ctx); }

SEC("fexit/tcp_sendmsg")
int send_fexit(__u64 *ctx) { return on_send((struct sock___p *)ctx[0], (int)ctx[3], 1); }
SEC("kprobe/tcp_sendmsg")
int send_kprobe(void *ctx) { return kprobe_stash(KARG0(ctx), 0, 2); }
SEC("kretprobe/tcp_sendmsg")
int send_kretprobe(void *ctx)
{
	struct kprobe_args a;

	if (!kprobe_unstash(&a) || a.a2 != 2)
		return 0;
	return on_send((struct sock___p *)a.a0, (int)KRET(ctx), 0);
}

SEC("fentry/dev_hard_start_xmit")
int xmit_fentry(__u64 *ctx) { return on_xmit(ctx, (struct sk_buff___p *)ctx[0]); }
SEC("kprobe/dev_hard_start_xmit")
int xmit_kprobe(void *ctx) { return on_xmit(ctx, (struct sk_buff___p *)KARG0(ctx)); }
