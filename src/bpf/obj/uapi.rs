//! Kernel ABI numbers (`include/uapi/linux/bpf.h`, `perf_event.h`, and the
//! kernel-internal errno `ENOTSUPP`), the one place both layers take them from:
//! the pure layer for program and map types in objects, the kernel layer
//! (through [`crate::bpf::abi`], which re-exports this module) for syscalls.
//! Numbers only: no structs, no `unsafe`.
#![allow(missing_docs)]

// bpf(2) commands.
pub const BPF_MAP_CREATE: u32 = 0;
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
pub const BPF_MAP_GET_NEXT_KEY: u32 = 4;
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_OBJ_PIN: u32 = 6;
pub const BPF_PROG_GET_NEXT_ID: u32 = 11;
pub const BPF_PROG_GET_FD_BY_ID: u32 = 13;
pub const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
pub const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
pub const BPF_BTF_LOAD: u32 = 18;
pub const BPF_MAP_FREEZE: u32 = 22;
pub const BPF_MAP_LOOKUP_BATCH: u32 = 24;
pub const BPF_LINK_CREATE: u32 = 28;
pub const BPF_ENABLE_STATS: u32 = 32;
/// `enum bpf_stats_type`: run time and run count of every program.
pub const BPF_STATS_RUN_TIME: u32 = 0;

// Map types.
pub const MAP_HASH: u32 = 1;
pub const MAP_ARRAY: u32 = 2;
pub const MAP_PERF_EVENT_ARRAY: u32 = 4;
pub const MAP_PERCPU_HASH: u32 = 5;
pub const MAP_PERCPU_ARRAY: u32 = 6;
pub const MAP_STACK_TRACE: u32 = 7;
pub const MAP_LRU_HASH: u32 = 9;
pub const MAP_LRU_PERCPU_HASH: u32 = 10;
pub const MAP_RINGBUF: u32 = 27;

// Program types and attach types.
pub const PROG_TYPE_KPROBE: u32 = 2;
pub const PROG_TYPE_SCHED_CLS: u32 = 3;
pub const PROG_TYPE_TRACEPOINT: u32 = 5;
pub const PROG_TYPE_PERF_EVENT: u32 = 7;
pub const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
pub const PROG_TYPE_RAW_TRACEPOINT_WRITABLE: u32 = 24;
pub const PROG_TYPE_TRACING: u32 = 26;
pub const ATTACH_TRACE_RAW_TP: u32 = 23;
pub const ATTACH_TRACE_FENTRY: u32 = 24;
pub const ATTACH_TRACE_FEXIT: u32 = 25;
pub const ATTACH_PERF_EVENT: u32 = 41;
/// `BPF_TCX_INGRESS` (6.6+).
pub const ATTACH_TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS` (6.6+).
pub const ATTACH_TCX_EGRESS: u32 = 47;

// Map update flags.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;

// Ring buffer record header bits.
pub const RINGBUF_BUSY_BIT: u32 = 1 << 31;
pub const RINGBUF_DISCARD_BIT: u32 = 1 << 30;
pub const RINGBUF_HDR_SZ: u32 = 8;

// perf_event_open(2).
pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_TYPE_TRACEPOINT: u32 = 2;
pub const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
pub const PERF_SAMPLE_RAW: u64 = 1 << 10;
pub const PERF_FLAG_FD_CLOEXEC: u64 = 1 << 3;
pub const PERF_RECORD_LOST: u32 = 2;
pub const PERF_RECORD_SAMPLE: u32 = 9;
/// `_IO('$', 0)`.
pub const PERF_EVENT_IOC_ENABLE: u64 = 0x2400;
/// `_IO('$', 1)`.
pub const PERF_EVENT_IOC_DISABLE: u64 = 0x2401;
/// `_IOW('$', 8, __u32)`.
pub const PERF_EVENT_IOC_SET_BPF: u64 = 0x4004_2408;

/// `ENOTSUPP` (524): the kernel-internal "not supported" that leaks to user
/// space from the verifier, trampolines and batch map operations; not `ENOTSUP`
/// (95), and libc has no name for it.
pub const ENOTSUPP: i32 = 524;
