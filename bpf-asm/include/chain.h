/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * chain.h: one program per tracepoint where several probes hook it. A program that may share
 * its tracepoint with other probes' programs ends in a tail call through its own one-slot
 * program array `next_<program>`; user space (src/probes/chain.rs) attaches only the first
 * such program of the running probes on that tracepoint (same method: tp_btf with tp_btf,
 * raw_tp with raw_tp) and puts the next one in its slot, and so on. The kernel then runs one
 * program per event there instead of one per probe: a tail call (a patched jump for a
 * constant slot) costs far less than the tracepoint's per-program dispatch (its recursion
 * guard, RCU and migration bookkeeping, the indirect call). An empty slot (a probe alone on
 * its tracepoint) falls through: the tail call does nothing and the program returns.
 *
 * Each probe keeps its own object, maps, `.rodata` and attach plan: the chain only decides
 * which of them the kernel calls first. Programs of a fallback method (fentry, kprobe) end
 * in no tail call and are never chained.
 */
#ifndef NETSLEUTH_CHAIN_H
#define NETSLEUTH_CHAIN_H

#define BPF_MAP_TYPE_PROG_ARRAY 3

static long (*bpf_tail_call)(void *ctx, void *prog_array_map, __u32 index) = (void *)12;

/* The program array of program `prog` (no BTF key/value: program arrays take none). */
#define CHAIN_MAP(prog)                                     \
	struct {                                            \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY);      \
		__uint(max_entries, 1);                     \
		__uint(key_size, 4);                        \
		__uint(value_size, 4);                      \
	} next_##prog SEC(".maps")

/*
 * A chained tracepoint program: `sec`, name `prog`, running `body` (a statement using
 * `ctx`, __u64 *), then the next program of the chain if there is one.
 */
#define CHAINED(sec, prog, body)                            \
	CHAIN_MAP(prog);                                    \
	SEC(sec)                                            \
	int prog(__u64 *ctx)                                \
	{                                                   \
		body;                                       \
		bpf_tail_call(ctx, &next_##prog, 0);        \
		return 0;                                   \
	}

#endif /* NETSLEUTH_CHAIN_H */
