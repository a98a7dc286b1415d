//! netsleuth: per-network-namespace network observability exporter.
//!
//! Layout:
//! - Namespaces and who they belong to: [`inventory`] finds every network namespace,
//!   [`attribution`] maps it to its pod or container from the runtimes' state.
//! - Metrics: [`collectors`] hold one module per procfs/netlink probe (pure parser + small
//!   reader, over [`rtnl`] and [`tc`] where netlink is needed); [`engine`] runs them per
//!   namespace in parallel into the [`model`] and renders the page; [`catalog`] names the
//!   fixed families, [`selfmetrics`] the exporter's own.
//! - eBPF: [`bpf`] is our own BPF loader (a pure layer: ELF, BTF, CO-RE, linking; and a
//!   kernel layer: maps, load, attach, ring and perf buffers); [`probes`] are the eBPF probes
//!   built on it (object, attach plan, map reader, event decoder); [`events`] carries their
//!   events to the sinks.
//! - Serving: [`server`] (HTTP/1.1) and [`http`] (the endpoints), [`web_config`] (TLS and
//!   auth), [`status`] and [`statuspage`] (what runs), [`notify`] (`sd_notify`).
//! - Front ends: [`cli`] and [`config`] (thin), [`top`] (the inspector), [`selftest`].
//! - System: [`sys`] (the namespace machinery's syscalls), [`caps`] (what this process may do).
//!
//! `unsafe` is denied crate-wide; only the syscall, mmap and ABI modules ([`sys`], and inside
//! [`bpf`] its `sys`, `abi`, `ringbuf` and `perfbuf`) allow it, each block with a `SAFETY`
//! comment.
#![deny(unsafe_code)]

pub mod attribution;
#[allow(unsafe_code)]
pub mod bpf;
pub mod caps;
pub mod catalog;
pub mod cli;
pub mod collectors;
pub mod config;
pub mod engine;
pub mod events;
pub mod http;
pub mod inventory;
pub mod model;
pub mod notify;
pub mod probes;
pub mod rtnl;
pub mod selfmetrics;
pub mod selftest;
pub mod server;
pub mod status;
pub mod statuspage;
#[allow(unsafe_code)]
pub mod sys;
pub mod tc;
pub mod top;
pub mod units;
pub mod web_config;
