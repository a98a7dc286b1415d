// SPDX-License-Identifier: GPL-2.0-only
/*
 * netiftxlat: transmit latency at the device layer, per (netns, device):
 *   qdisc  = net:net_dev_queue -> net:net_dev_start_xmit (time in the qdisc)
 *   device = net:net_dev_start_xmit -> net:net_dev_xmit (the driver's xmit)
 * In-flight timestamps are keyed by skb pointer in an LRU hash, deleted at
 * net_dev_xmit or when the skb is dropped (skb:kfree_skb, e.g. a qdisc
 * drop), so a reused address never inherits a stale timestamp.
 * Histograms: hash `lat` (bounded: 4096 (netns, stage, device) keys).
 * Events (type 1 qdisc, 2 device) above `threshold_ns`; `location` = ns,
 * `reason` = ifindex.
 */
#include "latency.h"
#define FALLBACK_KPROBE_STASH
#include "fallback.h"

char LICENSE[] SEC("license") = "GPL";

struct inflight {
	__u64 ts;
	__u32 stage; /* 0: queued, 1: handed to the driver */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} inflight SEC(".maps");

struct lat_key {
	__u32 netns;
	__u32 stage; /* 0 qdisc, 1 device */
	char dev[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct lat_key);
	__type(value, struct hist);
} lat SEC(".maps");

static __always_inline void observe(void *ctx, struct sk_buff___p *skb, int tuple, struct net_device___lat *dev, __u32 stage, __u64 ns)
{
	struct lat_key k = {};
	struct net___p *net = 0;
	struct ns_event *e;
	int ifindex = 0;

	if (dev) {
		BPF_CORE_READ_INTO(&net, dev, nd_net.net);
		BPF_CORE_READ_INTO(&k.dev, dev, name);
		BPF_CORE_READ_INTO(&ifindex, dev, ifindex);
	}
	k.netns = net_inum(net);
	k.stage = stage;
	hist_observe(&lat, &k, ns);
	if (ns < threshold_ns)
		return;
	e = event_reserve(ctx, k.netns, stage + 1);
	if (!e)
		return;
	if (tuple)
		skb_tuple(skb, e, 0);
	e->location = ns;
	e->reason = ifindex;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int on_queue(struct sk_buff___p *skb)
{
	__u64 key = (__u64)skb;
	struct inflight v = { .ts = bpf_ktime_get_ns() };

	bpf_map_update_elem(&inflight, &key, &v, BPF_ANY);
	return 0;
}

static __always_inline int on_start(void *ctx, struct sk_buff___p *skb, struct net_device___lat *dev)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns();
	struct inflight *p = bpf_map_lookup_elem(&inflight, &key);
	struct inflight v = { .ts = now, .stage = 1 };

	if (p && p->stage == 0 && now >= p->ts)
		observe(ctx, skb, 1, dev, 0, now - p->ts);
	bpf_map_update_elem(&inflight, &key, &v, BPF_ANY);
	return 0;
}

static __always_inline int on_xmit(void *ctx, struct sk_buff___p *skb, struct net_device___lat *dev)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns();
	struct inflight *p = bpf_map_lookup_elem(&inflight, &key);

	if (!p)
		return 0;
	if (p->stage == 1 && now >= p->ts)
		observe(ctx, skb, 0, dev, 1, now - p->ts);
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}

/* net_dev_queue(struct sk_buff *skb) */
SEC("tp_btf/net_dev_queue")
int queue_btf(__u64 *ctx) { return on_queue((struct sk_buff___p *)ctx[0]); }
SEC("raw_tp/net_dev_queue")
int queue_raw(__u64 *ctx) { return on_queue((struct sk_buff___p *)ctx[0]); }

/* net_dev_start_xmit(const struct sk_buff *skb, const struct net_device *dev) */
SEC("tp_btf/net_dev_start_xmit")
int start_btf(__u64 *ctx) { return on_start(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[1]); }
SEC("raw_tp/net_dev_start_xmit")
int start_raw(__u64 *ctx) { return on_start(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[1]); }

/* net_dev_xmit(struct sk_buff *skb, int rc, struct net_device *dev, unsigned int skb_len):
 * the skb may be freed already: only its address and the device are used. */
SEC("tp_btf/net_dev_xmit")
int xmit_btf(__u64 *ctx) { return on_xmit(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[2]); }
SEC("raw_tp/net_dev_xmit")
int xmit_raw(__u64 *ctx) { return on_xmit(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[2]); }

static __always_inline int on_drop(struct sk_buff___p *skb)
{
	__u64 key = (__u64)skb;

	bpf_map_delete_elem(&inflight, &key);
	return 0;
}

/* kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...) */
SEC("tp_btf/kfree_skb")
int drop_btf(__u64 *ctx) { return on_drop((struct sk_buff___p *)ctx[0]); }
SEC("raw_tp/kfree_skb")
int drop_raw(__u64 *ctx) { return on_drop((struct sk_buff___p *)ctx[0]); }

/*
 * Fallbacks (no usable tracepoint): the functions the tracepoints sit in.
 *   net_dev_queue:      __dev_queue_xmit(struct sk_buff *skb, struct net_device *sb_dev), entry
 *   net_dev_start_xmit: xmit_one() is inlined into dev_hard_start_xmit(struct sk_buff *first,
 *                       struct net_device *dev, ...): its entry, for the first skb of the list
 *                       (later ones of a GSO/bulk list are not timed: their stamps expire)
 *   net_dev_xmit:       dev_hard_start_xmit's return: the first skb's address and the device
 *                       (the skb may be freed by then: only its address is used, as in the
 *                       tracepoint's handler)
 *   kfree_skb:          the drop functions (see packetloss.bpf.c), entry
 */
SEC("fentry/__dev_queue_xmit")
int queue_fentry(__u64 *ctx) { return on_queue((struct sk_buff___p *)ctx[0]); }
SEC("kprobe/__dev_queue_xmit")
int queue_kprobe(void *ctx) { return on_queue((struct sk_buff___p *)KARG0(ctx)); }

SEC("fentry/dev_hard_start_xmit")
int start_fentry(__u64 *ctx) { return on_start(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[1]); }
SEC("kprobe/dev_hard_start_xmit")
int start_kprobe(void *ctx) { return on_start(ctx, (struct sk_buff___p *)KARG0(ctx), (struct net_device___lat *)KARG1(ctx)); }

/* fexit sees (first, dev, ...); a kretprobe only the result, so its kprobe keeps the first skb
 * and the device per thread (fallback.h). */
SEC("fexit/dev_hard_start_xmit")
int xmit_fexit(__u64 *ctx) { return on_xmit(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[1]); }
SEC("kprobe/dev_hard_start_xmit")
int xmit_kprobe(void *ctx) { return kprobe_stash(KARG0(ctx), KARG1(ctx), 0); }
SEC("kretprobe/dev_hard_start_xmit")
int xmit_kretprobe(void *ctx)
{
	struct kprobe_args a;

	if (!kprobe_unstash(&a))
		return 0;
	return on_xmit(ctx, (struct sk_buff___p *)a.a0, (struct net_device___lat *)a.a1);
}

SEC("fentry/sk_skb_reason_drop")
int drop_sk_reason_fentry(__u64 *ctx) { return on_drop((struct sk_buff___p *)ctx[1]); }
SEC("fentry/kfree_skb_reason")
int drop_reason_fentry(__u64 *ctx) { return on_drop((struct sk_buff___p *)ctx[0]); }
SEC("fentry/kfree_skb")
int drop_fentry(__u64 *ctx) { return on_drop((struct sk_buff___p *)ctx[0]); }
SEC("kprobe/sk_skb_reason_drop")
int drop_sk_reason_kprobe(void *ctx) { return on_drop((struct sk_buff___p *)KARG1(ctx)); }
SEC("kprobe/kfree_skb_reason")
int drop_reason_kprobe(void *ctx) { return on_drop((struct sk_buff___p *)KARG0(ctx)); }
SEC("kprobe/kfree_skb")
int drop_kprobe(void *ctx) { return on_drop((struct sk_buff___p *)KARG0(ctx)); }
