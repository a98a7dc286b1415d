// SPDX-License-Identifier: GPL-2.0-only
/*
 * virtcmdlatency: how long virtio-net control commands take
 * (virtnet_send_command / virtnet_send_command_reply, in virtio_net: the host must answer
 * before the guest goes on; slow answers stall e.g. RX mode and VLAN
 * changes). There is no tracepoint: fentry/fexit, else kprobe/kretprobe.
 * Entry time per thread in an LRU hash keyed by pid_tgid. Node-level
 * histogram (one array slot); events above `threshold_ns` (type 1).
 */
#include "latency.h"

char LICENSE[] SEC("license") = "GPL";

static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} lat SEC(".maps");

static __always_inline int on_entry(void)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();

	bpf_map_update_elem(&start, &id, &now, BPF_ANY);
	return 0;
}

static __always_inline int on_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns(), ns, *ts;
	struct ns_event *e;
	struct hist *h;
	__u32 zero = 0;

	ts = bpf_map_lookup_elem(&start, &id);
	if (!ts)
		return 0;
	ns = now >= *ts ? now - *ts : 0;
	bpf_map_delete_elem(&start, &id);
	h = bpf_map_lookup_elem(&lat, &zero);
	if (h)
		hist_add(h, ns);
	if (ns < threshold_ns)
		return 0;
	e = event_reserve(ctx, 0, 1);
	if (!e)
		return 0;
	e->location = ns;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Since 6.11 virtnet_send_command() is an inline wrapper around
 * virtnet_send_command_reply(); older kernels have only the former. */
SEC("fentry/virtnet_send_command_reply")
int entry_reply_fentry(__u64 *ctx) { return on_entry(); }
SEC("fexit/virtnet_send_command_reply")
int exit_reply_fexit(__u64 *ctx) { return on_exit(ctx); }
SEC("fentry/virtnet_send_command")
int entry_fentry(__u64 *ctx) { return on_entry(); }
SEC("fexit/virtnet_send_command")
int exit_fexit(__u64 *ctx) { return on_exit(ctx); }
SEC("kprobe/virtnet_send_command_reply")
int entry_reply_kprobe(void *ctx) { return on_entry(); }
SEC("kretprobe/virtnet_send_command_reply")
int exit_reply_kretprobe(void *ctx) { return on_exit(ctx); }
SEC("kprobe/virtnet_send_command")
int entry_kprobe(void *ctx) { return on_entry(); }
SEC("kretprobe/virtnet_send_command")
int exit_kretprobe(void *ctx) { return on_exit(ctx); }
