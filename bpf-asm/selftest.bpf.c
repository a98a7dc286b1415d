// SPDX-License-Identifier: GPL-2.0-only
/*
 * selftest: one of each program and map shape our loader must handle.
 * Loaded by `netsleuth selftest` and by the loader's tests; not a probe.
 */
#include "netsleuth.h"

char LICENSE[] SEC("license") = "GPL";

struct event {
	__u64 ts;
	__u32 netns;
	__u32 reason;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} drops_by_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Set by the loader before load (by variable name, from the .rodata DATASEC). */
const volatile __u32 target_netns = 0;
const volatile __u32 sample_every = 1;

/* Bumped by every program run; read from user space through the .bss map. */
__u64 runs = 0;

static __noinline __u32 skb_netns(struct sk_buff *skb)
{
	struct net_device *dev = 0;
	struct net *net = 0;
	__u32 inum = 0;

	BPF_CORE_READ_INTO(&dev, skb, dev);
	if (!dev)
		return 0;
	BPF_CORE_READ_INTO(&net, dev, nd_net.net);
	if (!net)
		return 0;
	BPF_CORE_READ_INTO(&inum, net, ns.inum);
	return inum;
}

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);

	if (v)
		__sync_fetch_and_add(v, 1);
	__sync_fetch_and_add(&runs, 1);
}

SEC("tracepoint/tcp/tcp_send_reset")
int tcp_send_reset(void *ctx)
{
	count(0);
	return 0;
}

SEC("tp_btf/kfree_skb")
int kfree_skb_btf(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	__u32 netns = skb_netns(skb);
	struct event *e;
	__u64 one = 1, *n;

	count(1);
	if (target_netns && netns != target_netns)
		return 0;
	n = bpf_map_lookup_elem(&drops_by_netns, &netns);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&drops_by_netns, &netns, &one, BPF_NOEXIST);

	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->ts = bpf_ktime_get_ns();
	e->netns = netns;
	e->reason = reason;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tp/kfree_skb")
int kfree_skb_raw(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 netns = skb_netns(skb);

	count(2);
	if (sample_every > 1 && netns % sample_every)
		return 0;
	return 0;
}

/* Two programs in one section: split by symbol. */
SEC("raw_tp/net_dev_queue")
int net_dev_queue_a(void *ctx)
{
	count(3);
	return 0;
}

SEC("raw_tp/net_dev_queue")
int net_dev_queue_b(void *ctx)
{
	count(3);
	return 0;
}

/*
 * Function probes on getppid(2), which the self-test calls N times: kprobes
 * attach by kallsyms name (the syscall wrapper), fentry/fexit by BTF FUNC
 * name. x86-64: __x64_sys_getppid is only an alias in kallsyms, not in BTF,
 * so fentry takes __do_sys_getppid. arm64: a syscall without arguments is
 * __arm64_sys_getppid itself (its SYSCALL_DEFINE0 makes no __do_sys_), in
 * kallsyms and BTF alike. Built per architecture (bpf-asm/arm64/).
 */
#if defined(__TARGET_ARCH_arm64)
#define GETPPID_KSYM "__arm64_sys_getppid"
#define GETPPID_BTF "__arm64_sys_getppid"
#else
#define GETPPID_KSYM "__x64_sys_getppid"
#define GETPPID_BTF "__do_sys_getppid"
#endif

SEC("kprobe/" GETPPID_KSYM)
int kprobe_getppid(void *ctx)
{
	count(4);
	return 0;
}

SEC("kretprobe/" GETPPID_KSYM)
int kretprobe_getppid(void *ctx)
{
	count(5);
	return 0;
}

SEC("fentry/" GETPPID_BTF)
int fentry_getppid(__u64 *ctx)
{
	count(6);
	return 0;
}

SEC("fexit/" GETPPID_BTF)
int fexit_getppid(__u64 *ctx)
{
	count(7);
	return 0;
}
