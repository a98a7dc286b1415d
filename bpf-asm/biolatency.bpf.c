// SPDX-License-Identifier: GPL-2.0-only
/*
 * biolatency: block I/O request latency, from block:block_rq_issue (the driver
 * is handed the request) to block:block_rq_complete (the request is done).
 *
 * The issue runs in the context of the task that dispatches the request (the
 * submitting task for direct dispatch; a kworker when the queue is run
 * asynchronously), the completion in irq/softirq context: so the issuing
 * task's pid, comm and network namespace are taken at issue time and kept,
 * with the issue timestamp, in a bounded hash keyed by the request pointer
 * (requests are preallocated per tag, so a request lost between issue and
 * completion is overwritten when its tag is issued again; a full map is
 * counted in `counts_full`, the request then not measured).
 *
 * A completion that leaves bytes to do (a partial completion) is not the end
 * of the request: only the one that finishes it is measured.
 *
 * Histogram: hash `lat` keyed (dev, op), node level (devices serve every
 * namespace). Events (type 1) at or above `threshold_ns`: `location` =
 * latency ns, `netns` = the issuing task's namespace, `reason` = dev
 * (major << 20 | minor, the kernel's dev_t), `l4proto` = the REQ_OP, `saddr` =
 * comm, `daddr` = tgid (u32) then bytes (u32).
 */
#include "latency.h"
#include "fallback.h"

char LICENSE[] SEC("license") = "GPL";

static __u64 (*bpf_get_current_task)(void) = (void *)35;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;

#define REQ_OP_MASK 0xff
#define MINORBITS 20

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct gendisk___b {
	int major;
	int first_minor;
};

struct request_queue___b {
	struct gendisk___b *disk; /* 5.15+ */
};

struct request___b {
	struct request_queue___b *q;
	unsigned int cmd_flags;
	unsigned int __data_len;
	struct gendisk___b *rq_disk; /* before 5.18 */
};

struct nsproxy___b {
	struct net___p *net_ns;
};

struct task_struct___b {
	struct nsproxy___b *nsproxy;
};
#pragma clang attribute pop

struct start {
	__u64 ts;
	__u32 netns;
	__u32 pid;
	__u32 bytes;
	__u32 _pad;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct start);
} inflight SEC(".maps");

struct lat_key {
	__u32 dev;
	__u32 op;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct lat_key);
	__type(value, struct hist);
} lat SEC(".maps");

/* Plain loads through typed pointers (tp_btf, fentry: `btf` set), else CO-RE probe reads. */
#define RD(btf, dst, src, field)                                        \
	do {                                                            \
		if (btf)                                                \
			(dst) = (src)->field;                           \
		else                                                    \
			BPF_CORE_READ_INTO(&(dst), (src), field);       \
	} while (0)

static __always_inline __u32 rq_dev(struct request___b *rq, int btf)
{
	struct gendisk___b *disk = 0;
	struct request_queue___b *q = 0;
	int major = 0, minor = 0;

	if (bpf_core_field_exists(rq->rq_disk)) {
		RD(btf, disk, rq, rq_disk);
	} else {
		RD(btf, q, rq, q);
		if (q)
			RD(btf, disk, q, disk);
	}
	if (!disk)
		return 0;
	RD(btf, major, disk, major);
	RD(btf, minor, disk, first_minor);
	return ((__u32)major << MINORBITS) | ((__u32)minor & ((1U << MINORBITS) - 1));
}

static __always_inline __u32 task_netns(void)
{
	struct task_struct___b *t = (struct task_struct___b *)bpf_get_current_task();
	struct nsproxy___b *nsp = 0;
	struct net___p *net = 0;

	if (!t)
		return 0;
	BPF_CORE_READ_INTO(&nsp, t, nsproxy);
	if (!nsp)
		return 0;
	BPF_CORE_READ_INTO(&net, nsp, net_ns);
	return net_inum(net);
}

static __always_inline int on_issue(struct request___b *rq, int btf)
{
	__u64 key = (__u64)rq;
	struct start s = {};

	if (!rq)
		return 0;
	s.ts = bpf_ktime_get_ns();
	s.netns = task_netns();
	s.pid = bpf_get_current_pid_tgid() >> 32;
	RD(btf, s.bytes, rq, __data_len);
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	/* A request issued again (requeued) starts over. */
	if (bpf_map_update_elem(&inflight, &key, &s, BPF_ANY))
		bump_percpu(&counts_full);
	return 0;
}

static __always_inline int on_complete(void *ctx, struct request___b *rq, __u32 nr_bytes, int btf)
{
	__u64 key = (__u64)rq, now = bpf_ktime_get_ns(), ns;
	struct lat_key k = {};
	struct start *s;
	struct ns_event *e;
	__u32 left = 0, flags = 0;

	if (!rq)
		return 0;
	s = bpf_map_lookup_elem(&inflight, &key);
	if (!s)
		return 0;
	RD(btf, left, rq, __data_len);
	if (nr_bytes < left)
		return 0; /* partial completion: the request goes on */
	RD(btf, flags, rq, cmd_flags);
	ns = now >= s->ts ? now - s->ts : 0;
	k.dev = rq_dev(rq, btf);
	k.op = flags & REQ_OP_MASK;
	hist_observe(&lat, &k, ns);
	if (ns >= threshold_ns) {
		e = event_reserve(ctx, s->netns, 1);
		if (e) {
			e->location = ns;
			e->reason = k.dev;
			e->l4proto = k.op;
			__builtin_memcpy(e->saddr, s->comm, sizeof(s->comm));
			__builtin_memcpy(e->daddr, &s->pid, 4);
			__builtin_memcpy(e->daddr + 4, &s->bytes, 4);
			bpf_ringbuf_submit(e, 0);
		}
	}
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}

/*
 * block_rq_issue(struct request *rq); older kernels had block_rq_issue(struct request_queue
 * *q, struct request *rq) (upstream until 5.10; Debian's 5.10 already has the one-argument
 * form, the kernel matrix found). The two-argument programs come first in the plan: kernels
 * with one argument refuse them (tp_btf: at load, no second argument; raw_tp: at attach), so
 * there the one-argument ones are used.
 */
SEC("tp_btf/block_rq_issue")
int issue_q_btf(__u64 *ctx) { return on_issue((struct request___b *)ctx[1], 1); }
SEC("tp_btf/block_rq_issue")
int issue_btf(__u64 *ctx) { return on_issue((struct request___b *)ctx[0], 1); }
SEC("raw_tp/block_rq_issue")
int issue_q_raw(__u64 *ctx) { return on_issue((struct request___b *)ctx[1], 0); }
SEC("raw_tp/block_rq_issue")
int issue_raw(__u64 *ctx) { return on_issue((struct request___b *)ctx[0], 0); }

/* block_rq_complete(struct request *rq, int/blk_status_t error, unsigned int nr_bytes) */
SEC("tp_btf/block_rq_complete")
int complete_btf(__u64 *ctx)
{
	return on_complete(ctx, (struct request___b *)ctx[0], (__u32)ctx[2], 1);
}
SEC("raw_tp/block_rq_complete")
int complete_raw(__u64 *ctx)
{
	return on_complete(ctx, (struct request___b *)ctx[0], (__u32)ctx[2], 0);
}

/*
 * Fallbacks (no usable tracepoint): the functions the tracepoints sit in.
 * block_rq_issue is in blk_mq_start_request(struct request *rq); block_rq_complete in
 * blk_update_request(struct request *rq, blk_status_t error, unsigned int nr_bytes). Batched
 * completions (blk_mq_end_request_batch, 5.16+: polled NVMe, io_uring) fire the tracepoint
 * from an inlined helper and are not seen there; their requests stay in `inflight` until
 * their tag is issued again.
 */
SEC("fentry/blk_mq_start_request")
int issue_fentry(__u64 *ctx) { return on_issue((struct request___b *)ctx[0], 1); }
SEC("kprobe/blk_mq_start_request")
int issue_kprobe(void *ctx) { return on_issue((struct request___b *)KARG0(ctx), 0); }

SEC("fentry/blk_update_request")
int complete_fentry(__u64 *ctx)
{
	return on_complete(ctx, (struct request___b *)ctx[0], (__u32)ctx[2], 1);
}
SEC("kprobe/blk_update_request")
int complete_kprobe(void *ctx)
{
	return on_complete(ctx, (struct request___b *)KARG0(ctx), (__u32)KARG2(ctx), 0);
}
