/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * fallback.h: what the fentry/fexit and kprobe/kretprobe alternatives of the
 * probes' attach plans share. They are used only where a kernel lacks the
 * tracepoint (or tp_btf/raw_tp do not attach), and hook the kernel function
 * the tracepoint sits in, sharing the tracepoint programs' handlers.
 *
 * fentry/fexit: `ctx` is the function's arguments as __u64 (fexit: then the
 * return value), like tp_btf: architecture-neutral. kprobe: `ctx` is the
 * kernel's `struct pt_regs`, whose layout is per architecture, read through
 * CO-RE (the kernel's own offsets). Every object including this header is
 * built once per target architecture (the Makefile defines __TARGET_ARCH_x86
 * for bpf-asm/NAME.bpf.o, __TARGET_ARCH_arm64 for bpf-asm/arm64/NAME.bpf.o):
 *   x86-64: arguments in di, si, dx, cx (System V), the return value in ax,
 *           the return address at the stack pointer on entry;
 *   arm64:  arguments in x0-x3, the return value in x0, the return address
 *           in the link register x30 on entry (AAPCS64).
 */
#ifndef NETSLEUTH_FALLBACK_H
#define NETSLEUTH_FALLBACK_H

#include "netprobes.h"

static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
#if defined(__TARGET_ARCH_x86)
struct pt_regs___p {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
	unsigned long cx;
	unsigned long r8;
	unsigned long ax;
	unsigned long sp;
};
#elif defined(__TARGET_ARCH_arm64)
/* The kernel's regs[31] sits in an anonymous struct in an anonymous union:
 * CO-RE finds it by name through both. */
struct pt_regs___p {
	unsigned long regs[31];
	unsigned long sp;
	unsigned long pc;
};
#else
#error "fallback.h: define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64 (bpf-asm/Makefile does)"
#endif

struct socket___p {
	struct sock___p *sk;
};
#pragma clang attribute pop

#if defined(__TARGET_ARCH_x86)
#define KARG0(ctx) (((struct pt_regs___p *)(ctx))->di)
#define KARG1(ctx) (((struct pt_regs___p *)(ctx))->si)
#define KARG2(ctx) (((struct pt_regs___p *)(ctx))->dx)
#define KARG3(ctx) (((struct pt_regs___p *)(ctx))->cx)
#define KRET(ctx) (((struct pt_regs___p *)(ctx))->ax)

/* A kprobe at a function's entry: the return address (the caller) is at the stack pointer. */
static __always_inline __u64 kprobe_caller(void *ctx)
{
	__u64 ret = 0;

	bpf_probe_read_kernel(&ret, sizeof(ret), (void *)((struct pt_regs___p *)ctx)->sp);
	return ret;
}
#else /* __TARGET_ARCH_arm64 */
#define KARG0(ctx) (((struct pt_regs___p *)(ctx))->regs[0])
#define KARG1(ctx) (((struct pt_regs___p *)(ctx))->regs[1])
#define KARG2(ctx) (((struct pt_regs___p *)(ctx))->regs[2])
#define KARG3(ctx) (((struct pt_regs___p *)(ctx))->regs[3])
#define KRET(ctx) (((struct pt_regs___p *)(ctx))->regs[0])

/* A kprobe at a function's entry: the return address (the caller) is in the link register. */
static __always_inline __u64 kprobe_caller(void *ctx)
{
	return ((struct pt_regs___p *)ctx)->regs[30];
}
#endif

#ifdef FALLBACK_KPROBE_STASH
static long (*fallback_map_delete)(void *map, const void *key) = (void *)3;

/*
 * Arguments a kprobe saw, kept for its kretprobe (which sees only the return
 * value), per thread. A nested call in the same thread between the two (a
 * softirq interrupting it on one CPU, a stacked device transmitting through
 * its lower device) overwrites the entry, and the outer call is missed: rare,
 * and only where neither the tracepoint nor fexit is available.
 */
struct kprobe_args {
	__u64 a0;
	__u64 a1;
	__u64 a2;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct kprobe_args);
} kprobe_args SEC(".maps");

static __always_inline int kprobe_stash(__u64 a0, __u64 a1, __u64 a2)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct kprobe_args v = { .a0 = a0, .a1 = a1, .a2 = a2 };

	bpf_map_update_elem(&kprobe_args, &id, &v, BPF_ANY);
	return 0;
}

/* The stashed arguments of this thread's call (copied out and deleted), or 0. */
static __always_inline int kprobe_unstash(struct kprobe_args *out)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct kprobe_args *v = bpf_map_lookup_elem(&kprobe_args, &id);

	if (!v)
		return 0;
	*out = *v;
	fallback_map_delete(&kprobe_args, &id);
	return 1;
}
#endif /* FALLBACK_KPROBE_STASH */

#endif /* NETSLEUTH_FALLBACK_H */
