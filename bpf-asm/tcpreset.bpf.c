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
#include "fallback.h"

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

/* Before 6.10 the tracepoint has no reason argument: tcp_send_reset(sk, skb). The program above
 * reads a third argument, which those kernels refuse (tp_btf: at load, raw_tp: at attach).
 * Those kernels also fire it only for resets sent with a socket (no NOSOCK), so the plan puts
 * these programs after the function fallbacks below, as the last resort. */
SEC("tp_btf/tcp_send_reset")
int send_reset_noreason_btf(__u64 *ctx)
{
	return on_send_reset(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], 0);
}

SEC("raw_tp/tcp_send_reset")
int send_reset_noreason_raw(__u64 *ctx)
{
	return on_send_reset(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1], 0);
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

/*
 * Fallbacks (no usable tracepoint): the functions the tracepoints sit in, at
 * their entry. Sent resets: tcp_v4_send_reset / tcp_v6_send_reset (sk, skb):
 * a segment answered (sk NULL: no socket), tcp_send_active_reset (sk, gfp):
 * the local side aborted (no segment). The functions return without sending
 * when the segment is itself a RST, so those are skipped here. The reason
 * argument (6.10+, where the tracepoint always exists) is not read: 0.
 * Received resets: tcp_reset(sk, ...), where tcp_receive_reset sits.
 */
struct sk_buff___rst {
	unsigned char *head;
	__u16 transport_header;
};

/* The segment being answered is a RST (no reset is sent for it). */
static __always_inline int answers_rst(struct sk_buff___p *skb)
{
	struct sk_buff___rst *s = (struct sk_buff___rst *)skb;
	unsigned char *head = 0;
	__u16 th = 0;
	__u8 flags = 0;

	if (!skb)
		return 0;
	BPF_CORE_READ_INTO(&head, s, head);
	BPF_CORE_READ_INTO(&th, s, transport_header);
	if (!head || th == (__u16)~0U)
		return 0;
	if (bpf_probe_read_kernel(&flags, 1, head + th + 13))
		return 0;
	return flags & 0x04;
}

static __always_inline int on_send_reset_fn(void *ctx, struct sock___p *sk, struct sk_buff___p *skb)
{
	if (answers_rst(skb))
		return 0;
	return on_send_reset(ctx, sk, skb, 0);
}

SEC("fentry/tcp_v4_send_reset")
int send_reset_v4_fentry(__u64 *ctx) { return on_send_reset_fn(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1]); }
SEC("fentry/tcp_v6_send_reset")
int send_reset_v6_fentry(__u64 *ctx) { return on_send_reset_fn(ctx, (struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1]); }
SEC("fentry/tcp_send_active_reset")
int send_active_reset_fentry(__u64 *ctx) { return on_send_reset(ctx, (struct sock___p *)ctx[0], 0, 0); }
SEC("kprobe/tcp_v4_send_reset")
int send_reset_v4_kprobe(void *ctx) { return on_send_reset_fn(ctx, (struct sock___p *)KARG0(ctx), (struct sk_buff___p *)KARG1(ctx)); }
SEC("kprobe/tcp_v6_send_reset")
int send_reset_v6_kprobe(void *ctx) { return on_send_reset_fn(ctx, (struct sock___p *)KARG0(ctx), (struct sk_buff___p *)KARG1(ctx)); }
SEC("kprobe/tcp_send_active_reset")
int send_active_reset_kprobe(void *ctx) { return on_send_reset(ctx, (struct sock___p *)KARG0(ctx), 0, 0); }

SEC("fentry/tcp_reset")
int receive_reset_fentry(__u64 *ctx) { return on_receive_reset(ctx, (struct sock___p *)ctx[0]); }
SEC("kprobe/tcp_reset")
int receive_reset_kprobe(void *ctx) { return on_receive_reset(ctx, (struct sock___p *)KARG0(ctx)); }
