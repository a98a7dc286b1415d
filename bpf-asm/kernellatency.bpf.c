// SPDX-License-Identifier: GPL-2.0-only
/*
 * kernellatency: time a received packet spends in the kernel, per netns of
 * the receiving device, from net:netif_receive_skb (the stack takes the skb
 * from the driver/GRO, or from a veth peer) to
 *   rx:      tcp:tcp_probe (the segment reaches an established TCP socket;
 *            the same skb object), or
 *   forward: net:net_dev_queue (the skb leaves again through a device of the
 *            same namespace: routed/bridged traffic, e.g. the host between
 *            two pods).
 * In-flight timestamps live in a direct-mapped table (a plain array indexed
 * by a hash of the skb address; each slot holds the skb it belongs to) and
 * are cleared when the skb is freed (skb:consume_skb, skb:kfree_skb): a
 * reused address never inherits an old timestamp. Every received packet is
 * stamped and every freed one checked, so this costs array loads and stores
 * instead of LRU-hash updates and deletes. Two packets in flight at once in
 * the same slot: the later one wins (the earlier one is not observed), as an
 * LRU hash evicts when full; 16384 slots against the few packets the stack
 * holds between receive and delivery make that rare. Slots are written
 * without atomics: two CPUs stamping the same slot in the same instant may
 * leave one packet's stamp with the other's skb (both then nanoseconds apart). Sending from a socket has no per-skb
 * tracepoint before the device on this kernel line (that needs fentry or
 * kprobes on ip_queue_xmit), so locally generated tx is netiftxlat's job.
 * Events (type 1 rx, 2 forward) above `threshold_ns` with the tuple.
 */
#include "latency.h"
#include "fallback.h"
#include "skbfree.h"
#include "chain.h"

char LICENSE[] SEC("license") = "GPL";

struct rx_start {
	__u64 skb; /* 0: free */
	__u64 ts;
	__u32 netns;
	__u32 _pad;
};

#define RX_SLOTS_LOG2 14

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << RX_SLOTS_LOG2);
	__type(key, __u32);
	__type(value, struct rx_start);
} inflight SEC(".maps");

struct lat_key {
	__u32 netns;
	__u32 stage; /* 0 rx, 1 forward */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct lat_key);
	__type(value, struct hist);
} lat SEC(".maps");

/* The slot of `skb`. */
static __always_inline struct rx_start *slot(struct sk_buff___p *skb)
{
	__u32 i = addr_slot(skb, RX_SLOTS_LOG2);

	return bpf_map_lookup_elem(&inflight, &i);
}

/* skb_netns with plain loads, for typed pointers (tp_btf, fentry): the verifier makes them
 * fault-safe, without a bpf_probe_read_kernel call each. */
static __always_inline __u32 skb_netns_btf(struct sk_buff___p *skb)
{
	struct net_device___p *dev = skb->dev;
	struct net___p *net;
	struct sock___p *sk;

	if (dev) {
		net = dev->nd_net.net;
		if (net)
			return net->ns.inum;
	}
	sk = skb->sk;
	if (!sk)
		return 0;
	net = sk->__sk_common.skc_net.net;
	return net ? net->ns.inum : 0;
}

static __always_inline int on_receive(struct sk_buff___p *skb, int btf)
{
	struct rx_start *v = slot(skb);

	if (!v)
		return 0;
	v->ts = bpf_ktime_get_ns();
	v->netns = btf ? skb_netns_btf(skb) : skb_netns(skb);
	v->skb = (__u64)skb;
	return 0;
}

static __always_inline int finish(void *ctx, struct sk_buff___p *skb, __u32 stage)
{
	struct rx_start *v = slot(skb);
	struct lat_key k = { .stage = stage };
	struct ns_event *e;
	__u64 ns, now, ts;

	if (!v || v->skb != (__u64)skb)
		return 0;
	ts = v->ts;
	k.netns = v->netns;
	v->skb = 0;
	now = bpf_ktime_get_ns();
	ns = now >= ts ? now - ts : 0;
	/* Forwarding counts only within one namespace (a veth crossing starts a new receive). */
	if (stage == 1 && skb_netns(skb) != k.netns)
		return 0;
	hist_observe(&lat, &k, ns);
	if (ns < threshold_ns)
		return 0;
	e = event_reserve(ctx, k.netns, stage + 1);
	if (!e)
		return 0;
	skb_tuple(skb, e, 0);
	e->location = ns;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline int on_free(struct sk_buff___p *skb)
{
	struct rx_start *v = slot(skb);

	if (v && v->skb == (__u64)skb)
		v->skb = 0;
	return 0;
}

/* netif_receive_skb(struct sk_buff *skb) */
SEC("tp_btf/netif_receive_skb")
int receive_btf(__u64 *ctx) { return on_receive((struct sk_buff___p *)ctx[0], 1); }
SEC("raw_tp/netif_receive_skb")
int receive_raw(__u64 *ctx) { return on_receive((struct sk_buff___p *)ctx[0], 0); }

/* tcp_probe(struct sock *sk, const struct sk_buff *skb) */
SEC("tp_btf/tcp_probe")
int tcp_btf(__u64 *ctx) { return finish(ctx, (struct sk_buff___p *)ctx[1], 0); }
SEC("raw_tp/tcp_probe")
int tcp_raw(__u64 *ctx) { return finish(ctx, (struct sk_buff___p *)ctx[1], 0); }

/* net_dev_queue(struct sk_buff *skb); shared with netiftxlat (include/chain.h) */
CHAINED("tp_btf/net_dev_queue", queue_btf, finish(ctx, (struct sk_buff___p *)ctx[0], 1))
CHAINED("raw_tp/net_dev_queue", queue_raw, finish(ctx, (struct sk_buff___p *)ctx[0], 1))

/* consume_skb(struct sk_buff *skb, void *location) */
SEC("tp_btf/consume_skb")
int consume_btf(__u64 *ctx) { return on_free((struct sk_buff___p *)ctx[0]); }
SEC("raw_tp/consume_skb")
int consume_raw(__u64 *ctx) { return on_free((struct sk_buff___p *)ctx[0]); }

/*
 * Fallbacks (no usable tracepoint): the functions the tracepoints sit in, at their entry.
 *   netif_receive_skb: __netif_receive_skb_core is inlined from 6.1 on, and GRO hands lists on the
 *                      GRO path, so the fallback starts at the IP layer: ip_rcv_core(skb, net)
 *                      and ip6_rcv_core(skb, dev, net), called per skb on the single and the
 *                      list path (bridged traffic that never reaches IP is not seen there)
 *   tcp_probe:         tcp_rcv_established(struct sock *sk, struct sk_buff *skb)
 *   net_dev_queue:     __dev_queue_xmit(struct sk_buff *skb, ...)
 *   consume_skb:       consume_skb(struct sk_buff *skb)
 *   kfree_skb:         the drop functions (see packetloss.bpf.c)
 */
SEC("fentry/ip_rcv_core")
int receive_fentry(__u64 *ctx) { return on_receive((struct sk_buff___p *)ctx[0], 1); }
SEC("fentry/ip6_rcv_core")
int receive6_fentry(__u64 *ctx) { return on_receive((struct sk_buff___p *)ctx[0], 1); }
SEC("kprobe/ip_rcv_core")
int receive_kprobe(void *ctx) { return on_receive((struct sk_buff___p *)KARG0(ctx), 0); }
SEC("kprobe/ip6_rcv_core")
int receive6_kprobe(void *ctx) { return on_receive((struct sk_buff___p *)KARG0(ctx), 0); }

SEC("fentry/tcp_rcv_established")
int tcp_fentry(__u64 *ctx) { return finish(ctx, (struct sk_buff___p *)ctx[1], 0); }
SEC("kprobe/tcp_rcv_established")
int tcp_kprobe(void *ctx) { return finish(ctx, (struct sk_buff___p *)KARG1(ctx), 0); }

SEC("fentry/__dev_queue_xmit")
int queue_fentry(__u64 *ctx) { return finish(ctx, (struct sk_buff___p *)ctx[0], 1); }
SEC("kprobe/__dev_queue_xmit")
int queue_kprobe(void *ctx) { return finish(ctx, (struct sk_buff___p *)KARG0(ctx), 1); }

SEC("fentry/consume_skb")
int consume_fentry(__u64 *ctx) { return on_free((struct sk_buff___p *)ctx[0]); }
SEC("kprobe/consume_skb")
int consume_kprobe(void *ctx) { return on_free((struct sk_buff___p *)KARG0(ctx)); }

/* kfree_skb(skb, location, reason, ...) and the drop functions it sits in: the eight
 * programs of include/skbfree.h */
SKB_FREE_PROGRAMS(kfree, on_free)

/*
 * tx (optional, where fentry or kprobes work): time a TCP segment spends in the stack from the
 * socket to the device layer, per netns of the socket: ip_queue_xmit(sk, skb, fl) /
 * inet6_csk_xmit(sk, skb, fl) (TCP's queue_xmit for IPv4/IPv6: the socket hands the segment to
 * IP; no tracepoint there; not ip6_xmit, whose 7 arguments the BPF trampoline takes only from
 * 6.5 on) ->
 * net:net_dev_queue (else __dev_queue_xmit) of the same skb. Stamps live in their own LRU
 * hash with the socket, and count only when the skb reaching the device still belongs to that
 * socket (a freed skb's address reused by other traffic never matches). Histogram in its own
 * map `lat_tx` keyed by netns; metrics only (no events).
 */
struct tx_start {
	__u64 ts;
	__u64 sk;
	__u32 netns;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tx_start);
} tx_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct hist);
} lat_tx SEC(".maps");

static __always_inline int on_tx_start(struct sock___p *sk, struct sk_buff___p *skb)
{
	__u64 key = (__u64)skb;
	struct tx_start v = { .ts = bpf_ktime_get_ns(), .sk = (__u64)sk, .netns = sk_netns(sk) };

	if (!sk || !skb)
		return 0;
	bpf_map_update_elem(&tx_inflight, &key, &v, BPF_ANY);
	return 0;
}

static __always_inline int on_tx_end(struct sk_buff___p *skb)
{
	__u64 key = (__u64)skb, now, ns;
	struct tx_start *v = bpf_map_lookup_elem(&tx_inflight, &key);
	struct sock___p *sk = 0;
	__u32 netns;

	if (!v)
		return 0;
	BPF_CORE_READ_INTO(&sk, skb, sk);
	if ((__u64)sk != v->sk) {
		bpf_map_delete_elem(&tx_inflight, &key);
		return 0;
	}
	now = bpf_ktime_get_ns();
	ns = now >= v->ts ? now - v->ts : 0;
	netns = v->netns;
	bpf_map_delete_elem(&tx_inflight, &key);
	hist_observe(&lat_tx, &netns, ns);
	return 0;
}

SEC("fentry/ip_queue_xmit")
int tx_start_fentry(__u64 *ctx) { return on_tx_start((struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1]); }
SEC("fentry/inet6_csk_xmit")
int tx_start6_fentry(__u64 *ctx) { return on_tx_start((struct sock___p *)ctx[0], (struct sk_buff___p *)ctx[1]); }
SEC("kprobe/ip_queue_xmit")
int tx_start_kprobe(void *ctx) { return on_tx_start((struct sock___p *)KARG0(ctx), (struct sk_buff___p *)KARG1(ctx)); }
SEC("kprobe/inet6_csk_xmit")
int tx_start6_kprobe(void *ctx) { return on_tx_start((struct sock___p *)KARG0(ctx), (struct sk_buff___p *)KARG1(ctx)); }

CHAINED("tp_btf/net_dev_queue", tx_end_btf, on_tx_end((struct sk_buff___p *)ctx[0]))
CHAINED("raw_tp/net_dev_queue", tx_end_raw, on_tx_end((struct sk_buff___p *)ctx[0]))
SEC("fentry/__dev_queue_xmit")
int tx_end_fentry(__u64 *ctx) { return on_tx_end((struct sk_buff___p *)ctx[0]); }
SEC("kprobe/__dev_queue_xmit")
int tx_end_kprobe(void *ctx) { return on_tx_end((struct sk_buff___p *)KARG0(ctx)); }
