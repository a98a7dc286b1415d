// SPDX-License-Identifier: GPL-2.0-only
/*
 * netiftxlat: transmit latency at the device layer, per (netns, device):
 *   qdisc  = net:net_dev_queue -> net:net_dev_start_xmit (time in the qdisc)
 *   device = net:net_dev_start_xmit -> net:net_dev_xmit (the driver's xmit)
 *
 * Per-CPU fast path (no hash work for most packets): net_dev_start_xmit ->
 * net_dev_xmit always runs synchronously on one CPU inside xmit_one() with
 * BH disabled (dev_hard_start_xmit's callers all hold rcu_read_lock_bh or
 * run in softirq), and so does net_dev_queue -> net_dev_start_xmit for a
 * device whose root qdisc is `noqueue` (veth, lo, bridges, vlans...:
 * __dev_queue_xmit calls dev_hard_start_xmit directly). Those stamps live on
 * a small per-CPU stack of (skb, dev, ts) frames: a driver's xmit can
 * transmit through another device (vlan, bond, tunnels) before it returns,
 * which pushes a frame above its own; frames are matched by (skb, dev), the
 * innermost first. A device with a real root qdisc (also `mq`, whose
 * children queue) may dequeue a packet later on another CPU (net_tx_action):
 * its queue stamp goes to an LRU hash keyed by skb, deleted at
 * net_dev_start_xmit or when the skb is dropped (skb:kfree_skb, e.g. a qdisc
 * drop), so a reused address never inherits a stale timestamp.
 * Histograms: hash `lat` (bounded: 4096 (netns, device) keys, both stages' histograms
 * in one value); the key of a packet is read once at net_dev_start_xmit and kept in its
 * frame, and both its observations are made at net_dev_xmit with one lookup (the qdisc
 * stage's event goes at net_dev_start_xmit, where the packet's tuple can still be read).
 * Events (type 1 qdisc, 2 device) above `threshold_ns`; `location` = ns,
 * `reason` = ifindex.
 */
#include "latency.h"
#define FALLBACK_KPROBE_STASH
#include "fallback.h"
#include "skbfree.h"
#include "chain.h"

char LICENSE[] SEC("license") = "GPL";

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct Qdisc_ops___lat {
	char id[16];
};

struct Qdisc___lat {
	struct Qdisc_ops___lat *ops;
};

struct net_device___txl {
	struct Qdisc___lat *qdisc;
};
#pragma clang attribute pop

/* Queue stamps of packets on a real qdisc: skb -> ts. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} inflight SEC(".maps");

struct lat_key {
	__u32 netns;
	__u32 _pad;
	char dev[16];
};

/* Both stages of one device: a packet's two observations take one hash lookup, at
 * net_dev_xmit (the qdisc stage's waits in its frame until then). */
struct lat_pair {
	struct hist stage[2]; /* 0 qdisc, 1 device */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct lat_key);
	__type(value, struct lat_pair);
} lat SEC(".maps");

/* The zero value new entries are copied from (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lat_pair);
} lat_zero SEC(".maps");

/* One synchronous transmit in progress on this CPU. */
struct frame {
	__u64 skb;
	__u64 dev;   /* 0 in a queued frame: matched by skb alone */
	__u64 ts;
	__u32 stage; /* 0: queued on a noqueue device, 1: handed to the driver */
	__u32 netns; /* stage 1: the histogram key, read at net_dev_start_xmit */
	char name[16];
	__u64 qdisc_ns; /* stage 1: the qdisc stage's latency + 1, observed at net_dev_xmit; 0: none */
};

/* The kernel's own limit (XMIT_RECURSION_LIMIT) is 8 nested transmits. */
#define DEPTH 8

struct stack {
	__u32 depth;
	__u32 _pad;
	struct frame f[DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack);
} xmit_stack SEC(".maps");

static __always_inline struct stack *cpu_stack(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&xmit_stack, &zero);
}

/* The index `i` as a value the verifier bounds by itself (see hist_slot). */
static __always_inline __u64 bounded(__u64 i)
{
	asm volatile("" : "+r"(i));
	return i & (DEPTH - 1);
}

/* An event of `stage` for latency `ns` if it reaches the threshold. */
static __always_inline void event(void *ctx, struct sk_buff___p *skb, struct net_device___lat *dev, __u32 netns, __u32 stage, __u64 ns)
{
	struct ns_event *e;
	int ifindex = 0;

	if (ns < threshold_ns)
		return;
	e = event_reserve(ctx, netns, stage + 1);
	if (!e)
		return;
	if (skb)
		skb_tuple(skb, e, 0);
	if (dev)
		BPF_CORE_READ_INTO(&ifindex, dev, ifindex);
	e->location = ns;
	e->reason = ifindex;
	bpf_ringbuf_submit(e, 0);
}

/* One observation in `h` (shared between CPUs: atomics). */
static __always_inline void hist_atomic(struct hist *h, __u64 ns)
{
	__u64 slot = hist_slot(ns);

	if (slot >= HIST_SLOTS)
		return;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
}

/* The frame's device stage `ns` and its pending qdisc stage, in one lookup of its device's
 * histograms (created when missing). */
static __always_inline void observe(const struct frame *f, __u64 ns)
{
	struct lat_key k = { .netns = f->netns };
	struct lat_pair *h;
	__u32 zero = 0;

	__builtin_memcpy(k.dev, f->name, sizeof(k.dev));
	h = bpf_map_lookup_elem(&lat, &k);
	if (!h) {
		struct lat_pair *z = bpf_map_lookup_elem(&lat_zero, &zero);

		if (!z)
			return;
		if (bpf_map_update_elem(&lat, &k, z, BPF_NOEXIST) && !bpf_map_lookup_elem(&lat, &k)) {
			bump_percpu(&counts_full);
			return;
		}
		h = bpf_map_lookup_elem(&lat, &k);
		if (!h)
			return;
	}
	if (f->qdisc_ns)
		hist_atomic(&h->stage[0], f->qdisc_ns - 1);
	hist_atomic(&h->stage[1], ns);
}

/*
 * Reads of kernel memory: `btf` (a constant per program) says the pointers are typed
 * (tp_btf, fentry): then plain loads, which the verifier makes fault-safe, instead of a
 * bpf_probe_read_kernel call each (raw_tp, kprobe).
 */
#define RD(btf, dst, src, field)                                    \
	do {                                                        \
		if (btf)                                            \
			(dst) = (src)->field;                       \
		else                                                \
			BPF_CORE_READ_INTO(&(dst), (src), field);   \
	} while (0)

/* The histogram key of `dev` into frame `f`. */
static __always_inline void frame_key(struct frame *f, struct net_device___lat *dev, int btf)
{
	struct net___p *net = 0;
	__u32 inum = 0;

	if (dev) {
		RD(btf, net, dev, nd_net.net);
		if (btf)
			__builtin_memcpy(f->name, dev->name, sizeof(f->name));
		else
			BPF_CORE_READ_INTO(&f->name, dev, name);
	}
	if (net)
		RD(btf, inum, net, ns.inum);
	f->netns = inum;
}

/* Whether `dev`'s root qdisc is noqueue: it transmits synchronously, no queue in between. */
static __always_inline int noqueue(struct net_device___txl *dev, int btf)
{
	struct Qdisc___lat *q = 0;
	struct Qdisc_ops___lat *ops = 0;
	__u64 id = 0;

	if (!dev)
		return 0;
	RD(btf, q, dev, qdisc);
	if (!q)
		return 0;
	RD(btf, ops, q, ops);
	if (!ops)
		return 0;
	if (btf)
		__builtin_memcpy(&id, ops->id, sizeof(id));
	else
		BPF_CORE_READ_INTO(&id, ops, id);
	/* "noqueue\0" as a little-endian u64 */
	return id == 0x0065756575716f6eULL;
}

static __always_inline int on_queue(struct sk_buff___p *skb, int btf)
{
	struct net_device___p *dev = 0;
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns();
	struct stack *s;
	__u64 d;

	RD(btf, dev, skb, dev);
	if (!noqueue((struct net_device___txl *)dev, btf)) {
		bpf_map_update_elem(&inflight, &key, &now, BPF_ANY);
		return 0;
	}
	s = cpu_stack();
	if (!s)
		return 0;
	/* A queued frame on top never reached the driver (dropped before it, or segmented into
	 * new skbs): between net_dev_queue and net_dev_start_xmit nothing else transmits, so this
	 * queueing is not nested in it. A full stack holds only stale frames. */
	d = s->depth;
#pragma unroll
	for (int i = 0; i < DEPTH; i++) {
		if (d == 0 || s->f[bounded(d - 1)].stage != 0)
			break;
		d--;
	}
	if (d >= DEPTH)
		d = 0;
	d = bounded(d);
	s->f[d].skb = key;
	s->f[d].dev = 0;
	s->f[d].ts = now;
	s->f[d].stage = 0;
	s->depth = d + 1;
	return 0;
}

static __always_inline int on_start(void *ctx, struct sk_buff___p *skb, struct net_device___lat *dev, int btf)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns(), d, queued = 0;
	struct stack *s = cpu_stack();
	struct frame *f;
	__u64 *p;

	if (!s)
		return 0;
	d = s->depth;
	if (d > DEPTH)
		d = 0;
	/* This skb queued on a noqueue device just now: its frame is on top. */
	if (d > 0) {
		f = &s->f[bounded(d - 1)];
		if (f->stage == 0) {
			d--;
			if (f->skb == key)
				queued = f->ts;
		}
	}
	if (d >= DEPTH)
		d = 0;
	f = &s->f[bounded(d)];
	f->skb = key;
	f->dev = (__u64)dev;
	f->ts = now;
	f->stage = 1;
	f->qdisc_ns = 0;
	frame_key(f, dev, btf);
	s->depth = d + 1;
	if (!queued) {
		p = bpf_map_lookup_elem(&inflight, &key);
		if (p) {
			queued = *p;
			bpf_map_delete_elem(&inflight, &key);
		}
	}
	if (queued && now >= queued) {
		/* Counted with the device stage at net_dev_xmit; its event now, with the tuple. */
		f->qdisc_ns = now - queued + 1;
		event(ctx, skb, dev, f->netns, 0, now - queued);
	}
	return 0;
}

static __always_inline int on_xmit(void *ctx, struct sk_buff___p *skb, struct net_device___lat *dev)
{
	__u64 key = (__u64)skb, now = bpf_ktime_get_ns(), d, found = DEPTH;
	struct stack *s = cpu_stack();
	struct frame *f;

	if (!s)
		return 0;
	d = s->depth;
	if (d > DEPTH)
		d = DEPTH;
	/* Innermost first; frames above the match are stale (never finished) and go with it. */
#pragma unroll
	for (int i = 0; i < DEPTH; i++) {
		if (d == 0 || found < DEPTH)
			break;
		d--;
		f = &s->f[bounded(d)];
		if (f->stage == 1 && f->skb == key && f->dev == (__u64)dev)
			found = d;
	}
	if (found >= DEPTH)
		return 0;
	f = &s->f[bounded(found)];
	s->depth = found;
	if (now >= f->ts) {
		observe(f, now - f->ts);
		event(ctx, 0, dev, f->netns, 1, now - f->ts);
	}
	return 0;
}

/* net_dev_queue(struct sk_buff *skb); shared with kernellatency (include/chain.h) */
CHAINED("tp_btf/net_dev_queue", queue_btf, on_queue((struct sk_buff___p *)ctx[0], 1))
CHAINED("raw_tp/net_dev_queue", queue_raw, on_queue((struct sk_buff___p *)ctx[0], 0))

/* net_dev_start_xmit(const struct sk_buff *skb, const struct net_device *dev); shared with
 * socketlatency */
CHAINED("tp_btf/net_dev_start_xmit", start_btf,
	on_start(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[1], 1))
CHAINED("raw_tp/net_dev_start_xmit", start_raw,
	on_start(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[1], 0))

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
int queue_fentry(__u64 *ctx) { return on_queue((struct sk_buff___p *)ctx[0], 1); }
SEC("kprobe/__dev_queue_xmit")
int queue_kprobe(void *ctx) { return on_queue((struct sk_buff___p *)KARG0(ctx), 0); }

SEC("fentry/dev_hard_start_xmit")
int start_fentry(__u64 *ctx) { return on_start(ctx, (struct sk_buff___p *)ctx[0], (struct net_device___lat *)ctx[1], 1); }
SEC("kprobe/dev_hard_start_xmit")
int start_kprobe(void *ctx) { return on_start(ctx, (struct sk_buff___p *)KARG0(ctx), (struct net_device___lat *)KARG1(ctx), 0); }

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

/* kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...) and the
 * drop functions it sits in: the eight programs of include/skbfree.h */
SKB_FREE_PROGRAMS(drop, on_drop)
