/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* latency.h: what the latency probes share on top of netprobes.h. Latency
 * events carry the latency in ns in `ns_event.location`. */
#ifndef NETSLEUTH_LATENCY_H
#define NETSLEUTH_LATENCY_H

#include "netprobes.h"

static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;


#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct net_device___lat {
	possible_net_t___p nd_net;
	char name[16];
	int ifindex;
};
#pragma clang attribute pop

/*
 * Latency histograms (the latency probes): log2 buckets of nanoseconds. Slot
 * i counts observations in [2^i, 2^(i+1)) ns (slot 0 also holds 0 and 1 ns);
 * the last slot holds everything from 2^(HIST_SLOTS-1) ns (~34 s) up. Values
 * live in hashes keyed per probe (per-CPU arrays where the key is the CPU);
 * user space sums CPUs where there are several and makes the buckets
 * cumulative.
 */
#define HIST_SLOTS 36

struct hist {
	__u64 slots[HIST_SLOTS];
	__u64 sum_ns;
};

/* The zero value new histogram entries are copied from (the stack is too small for it). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} hist_zero SEC(".maps");

static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r < HIST_SLOTS ? r : HIST_SLOTS - 1;
}

/* One observation of `ns` in `h` (a per-CPU value: no atomics needed). */
/* The slot of `ns` as a 64-bit value the compiler knows nothing about, so the bounds check
 * below stays a 64-bit compare: verifiers before 6.x do not carry a 32-bit compare's bound
 * into the 64-bit register used for the index ("unbounded min value" on 5.10/6.1). */
static __always_inline __u64 hist_slot(__u64 ns)
{
	__u64 slot = log2_slot(ns);

	asm volatile("" : "+r"(slot));
	return slot;
}

static __always_inline void hist_add(struct hist *h, __u64 ns)
{
	__u64 slot = hist_slot(ns);

	if (slot >= HIST_SLOTS)
		return;
	h->slots[slot] += 1;
	h->sum_ns += ns;
}

/* One observation of `ns` in the histogram at `key` of the shared hash `map`
 * (not per-CPU: a per-CPU hash preallocates every entry for every possible
 * CPU, ~77 MB for 4096 histograms on 64 CPUs; atomics cost less). */
static __always_inline void hist_observe(void *map, const void *key, __u64 ns)
{
	struct hist *h = bpf_map_lookup_elem(map, key);
	__u32 zero = 0;
	__u64 slot;

	if (!h) {
		struct hist *z = bpf_map_lookup_elem(&hist_zero, &zero);

		if (!z)
			return;
		if (bpf_map_update_elem(map, key, z, BPF_NOEXIST) && !bpf_map_lookup_elem(map, key)) {
			bump_percpu(&counts_full);
			return;
		}
		h = bpf_map_lookup_elem(map, key);
		if (!h)
			return;
	}
	slot = hist_slot(ns);
	if (slot >= HIST_SLOTS)
		return;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
}



/*
 * A `bits`-bit slot index for a kernel object's address (direct-mapped
 * tables keyed by skb or sock). tp_btf/fentry arguments are typed pointers
 * the verifier allows no arithmetic on, but a 32-bit copy of one is a plain
 * number for a privileged program; the low half of a slab address is what
 * differs between objects. Fibonacci hashing spreads the shared low bits.
 */
static __always_inline __u32 addr_slot(const void *p, int bits)
{
	__u32 lo;

	asm volatile("%0 = %1" : "=w"(lo) : "w"((__u32)(unsigned long)p));
	return (lo * 0x9E3779B9U) >> (32 - bits);
}

/* Set by user space before load: events only above this latency. */
const volatile __u64 threshold_ns = 100000000ULL;

#endif /* NETSLEUTH_LATENCY_H */
