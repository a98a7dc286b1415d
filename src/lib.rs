//! netsleuth: per-network-namespace network observability exporter.
//!
//! Layout: `inventory` finds every network namespace; `collectors` hold one module per metric
//! probe (pure parser + small reader); `engine` runs them in parallel and renders the page;
//! `http` serves it; `config` and `cli` are thin. `bpf` is our own BPF loader (pure layer:
//! ELF, BTF, CO-RE, linking).

pub mod attribution;
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
pub mod sys;
pub mod tc;
pub mod top;
pub mod units;
pub mod web_config;
