//! netsleuth: per-network-namespace network observability exporter.

pub mod bpf;
pub mod collectors;
pub mod model;
