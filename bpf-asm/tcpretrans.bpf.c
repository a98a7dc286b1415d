// SPDX-License-Identifier: GPL-2.0-only
/*
 * tcpretrans: retransmitted segments per netns, counted the way the kernel
 * counts Tcp RetransSegs (successful retransmits only, by segment count),
 * and optionally one TCPRETRANS event per retransmit (type 1: data/SYN,
 * type 2: SYN-ACK). Args are typed (tp_btf/raw_tp), so no tracepoint record
 * layout is assumed (KubeSkoop's hand-written one missed `family`).
 */
#define FALLBACK_KPROBE_STASH
#include "fallback.h"

char LICENSE[] SEC("license") = "GPL";

/* 1024 namespaces. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} retrans SEC(".maps");

/* The skb's TCP control block (skb->cb): tcp_skb_pcount() reads tcp_gso_segs. */
struct tcp_skb_cb___raw {
	__u32 seq;
	__u32 end_seq;
	__u16 tcp_gso_segs;
};

static __always_inline int on_retransmit(void *ctx, struct sock___p *sk, struct sk_buff___p *skb, int err)
{
	struct tcp_skb_cb___raw cb = {};
	struct ns_event *e;
	__u32 netns;
	__u64 segs;

	/* The kernel counts RetransSegs only for a successful retransmit. */
	if (err)
		return 0;
	netns = sk_netns(sk);
	if (skb)
		bpf_probe_read_kernel(&cb, sizeof(cb), __builtin_preserve_access_index(&skb->cb));
	segs = cb.tcp_gso_segs ? cb.tcp_gso_segs : 1;
	count_add(&retrans, &netns, segs);
	e = event_reserve(ctx, netns, 1);
	if (!e)
		return 0;
	sk_tuple(&sk->__sk_common, e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline int on_retransmit_synack(void *ctx, struct sock___p *sk, struct request_sock___p *req)
{
	struct ns_event *e;
	__u32 netns = sk_netns(sk);

	count_add(&retrans, &netns, 1);
	e = event_reserve(ctx, netns, 2);
	if (!e)
		return 0;
	sk_tuple(&req->__req_common, e);
	e->state = 3; /* TCP_SYN_RECV */
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err) */
SEC("tp_btf/tcp_retransmit_skb")
int retransmit_btf(__u64 *ctx)
{
	return on_retransmit(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], (int)ctx[2]);
}

SEC("raw_tp/tcp_retransmit_skb")
int retransmit_raw(__u64 *ctx)
{
	return on_retransmit(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], (int)ctx[2]);
}

/* Kernels before 6.13 have no `err` argument (and trace successful retransmits only):
 * tcp_retransmit_skb(sk, skb). The programs above read a third argument, which those kernels
 * refuse (tp_btf: at load, raw_tp: at attach). */
SEC("tp_btf/tcp_retransmit_skb")
int retransmit_noerr_btf(__u64 *ctx)
{
	return on_retransmit(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], 0);
}

SEC("raw_tp/tcp_retransmit_skb")
int retransmit_noerr_raw(__u64 *ctx)
{
	return on_retransmit(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], 0);
}

/* tcp_retransmit_synack(const struct sock *sk, const struct request_sock *req) */
SEC("tp_btf/tcp_retransmit_synack")
int retransmit_synack_btf(__u64 *ctx)
{
	return on_retransmit_synack(ctx, (struct sock___p *)ctx[0], (struct request_sock___p *)ctx[1]);
}

SEC("raw_tp/tcp_retransmit_synack")
int retransmit_synack_raw(__u64 *ctx)
{
	return on_retransmit_synack(ctx, (struct sock___p *)ctx[0], (struct request_sock___p *)ctx[1]);
}

/*
 * Fallbacks (no usable tracepoint): the functions the tracepoints sit in, at
 * their return (the tracepoints fire only on success):
 *   __tcp_retransmit_skb(struct sock *sk, struct sk_buff *skb, int segs) -> int
 *     (also the tail loss probe's retransmits, as the tracepoint)
 *   tcp_rtx_synack(const struct sock *sk, struct request_sock *req) -> int
 * fexit sees arguments and result; a kprobe keeps the arguments for its
 * kretprobe (fallback.h).
 */
SEC("fexit/__tcp_retransmit_skb")
int retransmit_fexit(__u64 *ctx)
{
	return on_retransmit(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], (int)ctx[3]);
}

SEC("kprobe/__tcp_retransmit_skb")
int retransmit_kprobe(void *ctx) { return kprobe_stash(KARG0(ctx), KARG1(ctx), 0); }

SEC("kretprobe/__tcp_retransmit_skb")
int retransmit_kretprobe(void *ctx)
{
	struct kprobe_args a;

	if (!kprobe_unstash(&a) || a.a2 != 0)
		return 0;
	return on_retransmit(ctx, (struct sock___p *)a.a0, (struct sk_buff___p *)a.a1, (int)KRET(ctx));
}

SEC("fexit/tcp_rtx_synack")
int retransmit_synack_fexit(__u64 *ctx)
{
	if ((int)ctx[2])
		return 0;
	return on_retransmit_synack(ctx, (struct sock___p *)ctx[0], (struct request_sock___p *)ctx[1]);
}

SEC("kprobe/tcp_rtx_synack")
int retransmit_synack_kprobe(void *ctx) { return kprobe_stash(KARG0(ctx), KARG1(ctx), 1); }

SEC("kretprobe/tcp_rtx_synack")
int retransmit_synack_kretprobe(void *ctx)
{
	struct kprobe_args a;

	if (!kprobe_unstash(&a) || a.a2 != 1 || (int)KRET(ctx))
		return 0;
	return on_retransmit_synack(ctx, (struct sock___p *)a.a0, (struct request_sock___p *)a.a1);
}
