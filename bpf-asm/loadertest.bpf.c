// SPDX-License-Identifier: GPL-2.0-only
/*
 * loadertest: programs and maps the loader's integration tests and benchmark
 * drive deterministically from user space. `getppid()` from the test process
 * (filtered by the `.rodata` pid) bumps one counter in every map shape and
 * writes `ring_burst` ring buffer records and `perf_burst` perf samples.
 * Not a probe.
 */
#include "netsleuth.h"

char LICENSE[] SEC("license") = "GPL";

#define BPF_MAP_TYPE_PERCPU_HASH 5
#define BPF_F_CURRENT_CPU 0xffffffffULL
#define MAX_BURST 1024

static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *)25;
static long (*bpf_get_stackid)(void *ctx, void *map, __u64 flags) = (void *)27;

struct rec {
	__u64 seq;
	__u64 pad[7];
};

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } array_count SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } hash_count SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } percpu_count SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } percpu_hash_count SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } lru_count SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } rb_lost SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); } perf SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_STACK_TRACE); __uint(max_entries, 16); __uint(key_size, 4); __uint(value_size, 127 * 8); } stacks SEC(".maps");

const volatile __u32 target_pid = 0;

__u32 ring_burst = 0;
__u32 ring_discard_odd = 0;
__u32 perf_burst = 0;
__u64 seq = 0;
__s64 last_stack = -1;

static __always_inline void bump(void *map, __u32 key)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(map, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(map, &key, &one, BPF_NOEXIST);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int getppid_enter(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 zero = 0;
	struct rec r = {};

	if (pid != target_pid)
		return 0;
	bump(&array_count, 0);
	bump(&hash_count, pid);
	bump(&percpu_count, 0);
	bump(&percpu_hash_count, pid);
	bump(&lru_count, pid);
	last_stack = bpf_get_stackid(ctx, &stacks, 0);

	for (__u32 i = 0; i < MAX_BURST && i < ring_burst; i++) {
		struct rec *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);

		if (!e) {
			__u64 *l = bpf_map_lookup_elem(&rb_lost, &zero);

			if (l)
				*l += 1;
			continue;
		}
		e->seq = __sync_fetch_and_add(&seq, 1);
		if (ring_discard_odd && (i & 1))
			bpf_ringbuf_discard(e, 0);
		else
			bpf_ringbuf_submit(e, 0);
	}
	for (__u32 i = 0; i < MAX_BURST && i < perf_burst; i++) {
		r.seq = i;
		bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU, &r, sizeof(r));
	}
	return 0;
}

/* Both need kernel features this dev kernel lacks (kprobes, trampolines). */
SEC("kprobe/tcp_v4_connect")
int kprobe_connect(void *ctx)
{
	return 0;
}

SEC("fentry/tcp_v4_connect")
int fentry_connect(__u64 *ctx)
{
	return 0;
}
