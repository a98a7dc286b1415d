/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * netsleuth.h: the few kernel types, helpers and macros our BPF programs use.
 *
 * Hand-written on purpose: no generated vmlinux.h, no libbpf headers. Kernel
 * structs carry only the fields we touch and are marked preserve_access_index,
 * so every access becomes a CO-RE relocation that our loader resolves against
 * the running kernel's BTF.
 */
#ifndef NETSLEUTH_BPF_H
#define NETSLEUTH_BPF_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

/* --- program/map annotation macros --------------------------------------- */
#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
#define __noinline __attribute__((noinline))

/* BTF-defined map attributes: the value lives in the member's *type*. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_HASH 5
#define BPF_MAP_TYPE_PERF_EVENT_ARRAY 4
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_STACK_TRACE 7
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_RINGBUF 27

#define BPF_F_NO_PREALLOC 1

#define BPF_ANY 0
#define BPF_NOEXIST 1

/* --- CO-RE builtins -------------------------------------------------------- */
/* __builtin_preserve_field_info kinds */
#define BPF_FIELD_BYTE_OFFSET 0
#define BPF_FIELD_BYTE_SIZE 1
#define BPF_FIELD_EXISTS 2
#define BPF_FIELD_SIGNED 3
#define BPF_FIELD_LSHIFT_U64 4
#define BPF_FIELD_RSHIFT_U64 5
/* __builtin_btf_type_id kinds */
#define BPF_TYPE_ID_LOCAL 0
#define BPF_TYPE_ID_TARGET 1
/* __builtin_preserve_type_info kinds */
#define BPF_TYPE_EXISTS 0
#define BPF_TYPE_SIZE 1
#define BPF_TYPE_MATCHES 2
/* __builtin_preserve_enum_value kinds */
#define BPF_ENUMVAL_EXISTS 0
#define BPF_ENUMVAL_VALUE 1

#define bpf_core_field_exists(field) __builtin_preserve_field_info(field, BPF_FIELD_EXISTS)
#define bpf_core_field_size(field) __builtin_preserve_field_info(field, BPF_FIELD_BYTE_SIZE)
#define bpf_core_field_offset(field) __builtin_preserve_field_info(field, BPF_FIELD_BYTE_OFFSET)
#define bpf_core_type_exists(type) __builtin_preserve_type_info(*(type *)0, BPF_TYPE_EXISTS)
#define bpf_core_type_size(type) __builtin_preserve_type_info(*(type *)0, BPF_TYPE_SIZE)
#define bpf_core_type_matches(type) __builtin_preserve_type_info(*(type *)0, BPF_TYPE_MATCHES)
#define bpf_core_type_id_local(type) __builtin_btf_type_id(*(type *)0, BPF_TYPE_ID_LOCAL)
#define bpf_core_type_id_kernel(type) __builtin_btf_type_id(*(type *)0, BPF_TYPE_ID_TARGET)
#define bpf_core_enum_value_exists(enum_type, value) \
	__builtin_preserve_enum_value(*(enum_type *)value, BPF_ENUMVAL_EXISTS)
#define bpf_core_enum_value(enum_type, value) \
	__builtin_preserve_enum_value(*(enum_type *)value, BPF_ENUMVAL_VALUE)

/* Read a bitfield through CO-RE: load size, shifts and signedness come from the target. */
#define BPF_CORE_READ_BITFIELD_PROBED(s, field) ({                                   \
	unsigned long long __val = 0;                                                \
	unsigned int __sz = __builtin_preserve_field_info((s)->field, BPF_FIELD_BYTE_SIZE); \
	bpf_probe_read_kernel(&__val, __sz,                                          \
		(const char *)(s) + __builtin_preserve_field_info((s)->field, BPF_FIELD_BYTE_OFFSET)); \
	__val <<= __builtin_preserve_field_info((s)->field, BPF_FIELD_LSHIFT_U64);   \
	if (__builtin_preserve_field_info((s)->field, BPF_FIELD_SIGNED))             \
		__val = ((long long)__val) >> __builtin_preserve_field_info((s)->field, BPF_FIELD_RSHIFT_U64); \
	else                                                                         \
		__val = __val >> __builtin_preserve_field_info((s)->field, BPF_FIELD_RSHIFT_U64); \
	__val;                                                                       \
})

/* Probe-read one CO-RE relocated field into a local of the same type. */
#define BPF_CORE_READ_INTO(dst, src, field) \
	bpf_probe_read_kernel((dst), sizeof(*(dst)), __builtin_preserve_access_index(&(src)->field))

/* --- helpers (ids from include/uapi/linux/bpf.h) -------------------------- */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static void (*bpf_ringbuf_discard)(void *data, __u64 flags) = (void *)133;

/* --- kernel types: only the fields we touch -------------------------------- */
#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	possible_net_t nd_net;
	int ifindex;
};

struct sk_buff {
	struct net_device *dev;
	unsigned int len;
};

struct sock_common {
	__u16 skc_family;
};

struct sock {
	struct sock_common __sk_common;
};

#pragma clang attribute pop

enum skb_drop_reason {
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
	SKB_DROP_REASON_NO_SOCKET = 3,
};

/* Tracepoint context of tcp:tcp_send_reset (common header, then the fields we read). */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

#endif /* NETSLEUTH_BPF_H */
