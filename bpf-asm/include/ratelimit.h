/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * ratelimit.h: a token bucket per event type, in the kernel, so that an event
 * storm costs bounded CPU and ring-buffer space. Only events are limited: the
 * probes count their metrics before asking for an event, so the kernel-map
 * counters and histograms stay exact.
 *
 * The bucket is kept as GCRA's "theoretical arrival time" (tat): with T the
 * emission interval (ns per token, 1e9 / rate) and depth = burst * T, an event
 * at `now` conforms when tat + T <= now + depth, and then tat grows by T; a
 * tat in the past means the bucket is full (tat restarts at now + T).
 *
 * Concurrency (several CPUs, no locks: tracing programs may not use
 * bpf_spin_lock, and 5.10 has no cmpxchg or fetching atomics for BPF): tat
 * only grows by atomic adds of T while the bucket is in use, so no admitted
 * event is ever forgotten and the long-run rate is exact; CPUs that check at
 * the same moment may each take the last token, admitting at most ncpus - 1
 * extra events, which are still added to tat and so repaid from the next
 * tokens. Only the restart of a full bucket is a plain store, which may lose
 * a concurrent CPU's add: at most ncpus - 1 extra events, and only after the
 * traffic was below the rate long enough to refill the bucket, never during a
 * storm. User space sets T and depth per probe before load (rate 0: no limit).
 */
#ifndef NETSLEUTH_RATELIMIT_H
#define NETSLEUTH_RATELIMIT_H

#include "netsleuth.h"

/* Event types (`ns_event.type`) with their own bucket: 0..RL_TYPES-1. */
#define RL_TYPES 8

/* ns per token (1e9 / events per second); 0: unlimited. */
const volatile __u64 rl_interval_ns = 0;
/* burst * rl_interval_ns: how far ahead of now tat may run. */
const volatile __u64 rl_depth_ns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RL_TYPES);
	__type(key, __u32);
	__type(value, __u64);
} rl_tat SEC(".maps");

/* Events not emitted because their type's bucket was empty, per type: read by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RL_TYPES);
	__type(key, __u32);
	__type(value, __u64);
} events_suppressed SEC(".maps");

/* 1: emit an event of `type` now; 0: over the limit (counted in events_suppressed). */
static __always_inline int rl_allow(__u8 type)
{
	__u64 interval = rl_interval_ns, now, tat, *t, *n;
	__u32 k = type;

	if (!interval || k >= RL_TYPES)
		return 1;
	t = bpf_map_lookup_elem(&rl_tat, &k);
	if (!t)
		return 1;
	now = bpf_ktime_get_ns();
	tat = *(volatile __u64 *)t;
	if (tat < now) {
		*(volatile __u64 *)t = now + interval;
		return 1;
	}
	if (tat + interval <= now + rl_depth_ns) {
		__sync_fetch_and_add(t, interval);
		return 1;
	}
	n = bpf_map_lookup_elem(&events_suppressed, &k);
	if (n)
		*n += 1;
	return 0;
}

#endif /* NETSLEUTH_RATELIMIT_H */
