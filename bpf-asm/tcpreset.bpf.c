// SPDX-License-Identifier: GPL-2.0-only
/*
 * tcpreset: TCP resets sent and received, counted per (netns, type), and
 * optionally one TCPRESET_* event each.
 *
 * Types, from the tracepoints' arguments:
 * - NOSOCK  (1): tcp_send_reset with no socket: a segment matched no socket
 *   (closed port); attributed to the namespace of the segment's device, the
 *   one that sends the RST. The tuple is the RST's: the closed side first.
 * - PROCESS (2): tcp_send_reset with a socket and a segment: the stack
 *   answered a segment on an existing socket with a RST (bad ACK on a
 *   listener, data after close, TIME_WAIT...).
 * - ACTIVE  (3): tcp_send_reset with a socket and no segment
 *   (tcp_send_active_reset): the local side aborted the connection (close
 *   with unread data, SO_LINGER 0, memory pressure, keepalive timeout).
 * - RECEIVE (4): tcp_receive_reset: a RST arrived on a socket.
 */
#include "netprobes.h"

char LICENSE[] SEC("license") = "GPL";

#define RST_NOSOCK 1
#define RST_PROCESS 2
#define RST_ACTIVE 3
#define RST_RECEIVE 4

struct rst_key {
	__u32 netns;
	__u32 type;
};

/* 4096 (netns, type) pairs: 1024 namespaces x 4 types. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rst_key);
	__type(value, __u64);
} resets SEC(".maps");

static __always_inline int on_send_reset(void *ctx, struct sock___p *sk, struct sk_buff___p *skb, __u32 reason)
{
	struct rst_key k = {};
	struct ns_event *e;
	__u8 type = !sk ? RST_NOSOCK : (skb ? RST_PROCESS : RST_ACTIVE);

	k.netns = sk ? sk_netns(sk) : skb_netns(skb);
	if (!k.netns && skb)
		k.netns = skb_netns(skb);
	k.type = type;
	count_add(&resets, &k, 1);
	e = event_reserve(ctx, k.netns, type);
	if (!e)
		return 0;
	if (sk) {
		sk_tuple(&sk->__sk_common, e);
	} else {
		skb_tuple(skb, e, 1);
	}
	e->reason = reason;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline int on_receive_reset(void *ctx, struct sock___p *sk)
{
	struct rst_key k = {};
	struct ns_event *e;

	k.netns = sk_netns(sk);
	k.type = RST_RECEIVE;
	count_add(&resets, &k, 1);
	e = event_reserve(ctx, k.netns, RST_RECEIVE);
	if (!e)
		return 0;
	sk_tuple(&sk->__sk_common, e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason reason) */
SEC("tp_btf/tcp_send_reset")
int send_reset_btf(__u64 *ctx)
{
	return on_send_reset(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], (__u32)ctx[2]);
}

SEC("raw_tp/tcp_send_reset")
int send_reset_raw(__u64 *ctx)
{
	return on_send_reset(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], (__u32)ctx[2]);
}

/* tcp_receive_reset(struct sock *sk) */
SEC("tp_btf/tcp_receive_reset")
int receive_reset_btf(__u64 *ctx)
{
	return on_receive_reset(ctx, (struct sock___p *)ctx[0]);
}

SEC("raw_tp/tcp_receive_reset")
int receive_reset_raw(__u64 *ctx)
{
	return on_receive_reset(ctx, (struct sock___p *)ctx[0]);
}
