//! netsleuth: per-network-namespace network observability exporter.

pub mod collectors;
pub mod model;
