// SPDX-License-Identifier: GPL-2.0-only
/*
 * packetloss: skb:kfree_skb, counted per (netns, drop reason, protocol) in a
 * bounded hash map, and optionally one PACKETLOSS event per drop.
 *
 * Reasons named in `exclude_mask` (user space resolves the names against the
 * kernel's `enum skb_drop_reason`) are normal frees: neither counted nor
 * reported. On kernels without drop reasons (`have_reasons == 0`) the key
 * carries the freeing location instead, which user space symbolizes.
 */
#include "fallback.h"
#include "chain.h"

char LICENSE[] SEC("license") = "GPL";

struct drop_key {
	__u32 netns;
	__u32 reason;
	__u64 location; /* 0 when the kernel has drop reasons */
	__u8 l4proto;
	__u8 family;
	__u8 _pad[6];
};

/* 4096 (netns, reason, protocol) triples: ~100 namespaces x every reason seen. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, __u64);
} drops SEC(".maps");

/* Bit r set: reason r is excluded (reasons 0..255; subsystem reasons are never excluded). */
const volatile __u64 exclude_mask[4] = {};
const volatile __u8 have_reasons = 1;

/* The exclusion word for `reason`, read at constant offsets (a variable index into .rodata
 * loses its bounds through the compiler's range reasoning). */
static __always_inline __u64 exclude_word(__u32 reason)
{
	switch (reason >> 6) {
	case 0: return exclude_mask[0];
	case 1: return exclude_mask[1];
	case 2: return exclude_mask[2];
	case 3: return exclude_mask[3];
	default: return 0;
	}
}

static __always_inline int on_drop(void *ctx, struct sk_buff___p *skb, __u64 location, __u32 reason)
{
	struct drop_key k = {};
	struct ns_event *e;
	__u32 netns;

	if (!have_reasons)
		reason = 0;
	else if (exclude_word(reason) & (1ULL << (reason & 63)))
		return 0;
	netns = skb_netns(skb);
	e = event_reserve(ctx, netns, 0);
	if (e) {
		skb_tuple(skb, e, 0);
		e->reason = reason;
		e->location = location;
		k.l4proto = e->l4proto;
		k.family = e->family;
		bpf_ringbuf_submit(e, 0);
	} else {
		struct ns_event t = {};

		skb_tuple(skb, &t, 0);
		k.l4proto = t.l4proto;
		k.family = t.family;
	}
	k.netns = netns;
	k.reason = reason;
	if (!have_reasons)
		k.location = location;
	count_add(&drops, &k, 1);
	return 0;
}

/* kfree_skb(skb, location, reason, ...); shared with netiftxlat and kernellatency
 * (include/chain.h) */
CHAINED("tp_btf/kfree_skb", kfree_skb_btf,
	on_drop(ctx, (struct sk_buff___p *)ctx[0], ctx[1], have_reasons ? (__u32)ctx[2] : 0))
CHAINED("raw_tp/kfree_skb", kfree_skb_raw,
	on_drop(ctx, (struct sk_buff___p *)ctx[0], ctx[1], have_reasons ? (__u32)ctx[2] : 0))

/*
 * Fallbacks (no usable skb:kfree_skb tracepoint): the function the tracepoint
 * sits in, at its entry. It fires for every call, also when the skb still has
 * other references (the tracepoint fires only on the last one): such calls
 * are counted too.
 *   6.11+:      sk_skb_reason_drop(struct sock *sk, struct sk_buff *skb, enum skb_drop_reason reason)
 *   5.17-6.10:  kfree_skb_reason(struct sk_buff *skb, enum skb_drop_reason reason)
 *   before:     kfree_skb(struct sk_buff *skb), no reason: the key is the caller
 * fentry cannot see the caller (the drop location), which is all that
 * classifies a drop before 5.17, so there only the kprobe (return address at
 * the stack pointer) is offered; with reasons, fentry events carry location 0.
 */
SEC("fentry/sk_skb_reason_drop")
int drop_sk_reason_fentry(__u64 *ctx) { return on_drop(ctx, (struct sk_buff___p *)ctx[1], 0, (__u32)ctx[2]); }
SEC("fentry/kfree_skb_reason")
int drop_reason_fentry(__u64 *ctx) { return on_drop(ctx, (struct sk_buff___p *)ctx[0], 0, (__u32)ctx[1]); }
SEC("kprobe/sk_skb_reason_drop")
int drop_sk_reason_kprobe(void *ctx) { return on_drop(ctx, (struct sk_buff___p *)KARG1(ctx), kprobe_caller(ctx), (__u32)KARG2(ctx)); }
SEC("kprobe/kfree_skb_reason")
int drop_reason_kprobe(void *ctx) { return on_drop(ctx, (struct sk_buff___p *)KARG0(ctx), kprobe_caller(ctx), (__u32)KARG1(ctx)); }
SEC("kprobe/kfree_skb")
int drop_kprobe(void *ctx) { return on_drop(ctx, (struct sk_buff___p *)KARG0(ctx), kprobe_caller(ctx), 0); }
