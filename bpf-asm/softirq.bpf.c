// SPDX-License-Identifier: GPL-2.0-only
/*
 * softirq: per CPU and softirq type, the time from irq:softirq_raise to
 * irq:softirq_entry (scheduling delay: how long the raised work waited) and
 * from irq:softirq_entry to irq:softirq_exit (execution). Node-level: a
 * softirq runs for every namespace at once.
 *
 * A softirq is raised on the CPU that will run it, so per-CPU arrays (one slot
 * per softirq vector, NR_SOFTIRQS = 10) hold the timestamps and histograms:
 * nothing is keyed, nothing grows. The first raise since the last entry is
 * kept (later raises of a pending softirq are no-ops for the kernel too).
 * Events (type 1 sched, 2 exec) above `threshold_ns`; `location` = ns,
 * `reason` = vec | cpu << 8.
 */
#include "latency.h"
#include "fallback.h"

char LICENSE[] SEC("license") = "GPL";

#define NR_SOFTIRQS 10

/* Bit v set: softirq vector v is measured (default NET_TX (2) and NET_RX (3)). */
const volatile __u32 types_mask = (1 << 2) | (1 << 3);

struct stamps {
	__u64 raised;
	__u64 entered;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_SOFTIRQS);
	__type(key, __u32);
	__type(value, struct stamps);
} stamps SEC(".maps");

/* Index: vec (sched) and NR_SOFTIRQS + vec (exec). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * NR_SOFTIRQS);
	__type(key, __u32);
	__type(value, struct hist);
} lat SEC(".maps");

static __always_inline int wanted(__u32 vec)
{
	return vec < NR_SOFTIRQS && (types_mask & (1U << vec));
}

static __always_inline void observe(void *ctx, __u32 vec, __u32 stage, __u64 ns)
{
	__u32 idx = stage * NR_SOFTIRQS + vec;
	struct hist *h = bpf_map_lookup_elem(&lat, &idx);
	struct ns_event *e;

	if (h)
		hist_add(h, ns);
	if (ns < threshold_ns)
		return;
	e = event_reserve(ctx, 0, stage + 1);
	if (!e)
		return;
	e->location = ns;
	e->reason = vec | (bpf_get_smp_processor_id() << 8);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int on_raise(__u32 vec)
{
	struct stamps *s;

	if (!wanted(vec))
		return 0;
	s = bpf_map_lookup_elem(&stamps, &vec);
	if (s && !s->raised)
		s->raised = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_entry(void *ctx, __u32 vec)
{
	struct stamps *s;
	__u64 now;

	if (!wanted(vec))
		return 0;
	s = bpf_map_lookup_elem(&stamps, &vec);
	if (!s)
		return 0;
	now = bpf_ktime_get_ns();
	s->entered = now;
	/* Work raised from this softirq itself is raised again while it runs: a raise seen
	 * before this entry is what this run serves. */
	if (s->raised && now >= s->raised)
		observe(ctx, vec, 0, now - s->raised);
	s->raised = 0;
	return 0;
}

static __always_inline int on_exit(void *ctx, __u32 vec)
{
	struct stamps *s;
	__u64 now;

	if (!wanted(vec))
		return 0;
	s = bpf_map_lookup_elem(&stamps, &vec);
	if (!s || !s->entered)
		return 0;
	now = bpf_ktime_get_ns();
	if (now >= s->entered)
		observe(ctx, vec, 1, now - s->entered);
	s->entered = 0;
	return 0;
}

/* softirq_raise/entry/exit(unsigned int vec_nr) */
SEC("tp_btf/softirq_raise")
int raise_btf(__u64 *ctx) { return on_raise((__u32)ctx[0]); }
SEC("raw_tp/softirq_raise")
int raise_raw(__u64 *ctx) { return on_raise((__u32)ctx[0]); }
SEC("tp_btf/softirq_entry")
int entry_btf(__u64 *ctx) { return on_entry(ctx, (__u32)ctx[0]); }
SEC("raw_tp/softirq_entry")
int entry_raw(__u64 *ctx) { return on_entry(ctx, (__u32)ctx[0]); }
SEC("tp_btf/softirq_exit")
int exit_btf(__u64 *ctx) { return on_exit(ctx, (__u32)ctx[0]); }
SEC("raw_tp/softirq_exit")
int exit_raw(__u64 *ctx) { return on_exit(ctx, (__u32)ctx[0]); }

/*
 * Fallbacks (no usable tracepoint): the raise is __raise_softirq_irqoff(unsigned int nr), where
 * irq:softirq_raise sits. softirq_entry/exit sit in the softirq loop around each vector's action
 * and have no function of their own: the fallback times the actions of the network vectors only,
 * net_tx_action (NET_TX, 2) and net_rx_action (NET_RX, 3), entry and return (fentry/fexit,
 * kprobe/kretprobe). Other `softirq-types` are not measured there.
 */
#define NET_TX 2
#define NET_RX 3

SEC("fentry/__raise_softirq_irqoff")
int raise_fentry(__u64 *ctx) { return on_raise((__u32)ctx[0]); }
SEC("kprobe/__raise_softirq_irqoff")
int raise_kprobe(void *ctx) { return on_raise((__u32)KARG0(ctx)); }

SEC("fentry/net_tx_action")
int entry_tx_fentry(__u64 *ctx) { return on_entry(ctx, NET_TX); }
SEC("fentry/net_rx_action")
int entry_rx_fentry(__u64 *ctx) { return on_entry(ctx, NET_RX); }
SEC("kprobe/net_tx_action")
int entry_tx_kprobe(void *ctx) { return on_entry(ctx, NET_TX); }
SEC("kprobe/net_rx_action")
int entry_rx_kprobe(void *ctx) { return on_entry(ctx, NET_RX); }

SEC("fexit/net_tx_action")
int exit_tx_fexit(__u64 *ctx) { return on_exit(ctx, NET_TX); }
SEC("fexit/net_rx_action")
int exit_rx_fexit(__u64 *ctx) { return on_exit(ctx, NET_RX); }
SEC("kretprobe/net_tx_action")
int exit_tx_kretprobe(void *ctx) { return on_exit(ctx, NET_TX); }
SEC("kretprobe/net_rx_action")
int exit_rx_kretprobe(void *ctx) { return on_exit(ctx, NET_RX); }
