/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The eight programs that see an skb freed on a drop path, written once for every probe that
 * must forget an skb it was timing when the kernel drops it (netiftxlat, kernellatency):
 * the kfree_skb tracepoint (tp_btf, raw_tp) and, where it cannot be used, the drop functions
 * it sits in (fentry, kprobe; see packetloss.bpf.c for which kernel has which):
 *   sk_skb_reason_drop(struct sock *sk, struct sk_buff *skb, reason)   6.12+
 *   kfree_skb_reason(struct sk_buff *skb, reason)                      5.17 - 6.11
 *   kfree_skb(struct sk_buff *skb)                                     before 5.17
 * `SKB_FREE_PROGRAMS(drop, on_drop)` defines drop_btf, drop_raw, drop_sk_reason_fentry,
 * drop_reason_fentry, drop_fentry, drop_sk_reason_kprobe, drop_reason_kprobe and drop_kprobe,
 * each calling `on_drop(struct sk_buff___p *)`; src/probes/plan.rs `skb_free_point!` names
 * the same programs. Needs fallback.h (KARG0, KARG1); the tracepoint's two end in a tail call
 * (chain.h: kfree_skb is shared with packetloss and the other of these probes).
 */
#ifndef NETSLEUTH_SKBFREE_H
#define NETSLEUTH_SKBFREE_H

#include "chain.h"

#define SKB_FREE_PROGRAMS(prefix, handler)                                                    \
	CHAINED("tp_btf/kfree_skb", prefix##_btf, handler((struct sk_buff___p *)ctx[0]))      \
	CHAINED("raw_tp/kfree_skb", prefix##_raw, handler((struct sk_buff___p *)ctx[0]))      \
	SEC("fentry/sk_skb_reason_drop")                                                       \
	int prefix##_sk_reason_fentry(__u64 *ctx) { return handler((struct sk_buff___p *)ctx[1]); } \
	SEC("fentry/kfree_skb_reason")                                                         \
	int prefix##_reason_fentry(__u64 *ctx) { return handler((struct sk_buff___p *)ctx[0]); } \
	SEC("fentry/kfree_skb")                                                                \
	int prefix##_fentry(__u64 *ctx) { return handler((struct sk_buff___p *)ctx[0]); }      \
	SEC("kprobe/sk_skb_reason_drop")                                                       \
	int prefix##_sk_reason_kprobe(void *ctx) { return handler((struct sk_buff___p *)KARG1(ctx)); } \
	SEC("kprobe/kfree_skb_reason")                                                         \
	int prefix##_reason_kprobe(void *ctx) { return handler((struct sk_buff___p *)KARG0(ctx)); } \
	SEC("kprobe/kfree_skb")                                                                \
	int prefix##_kprobe(void *ctx) { return handler((struct sk_buff___p *)KARG0(ctx)); }

#endif
