//! Placeholder: filled in by the `netdev` probe work.

#[allow(dead_code)]
pub fn specs() -> Vec<super::ProbeSpec> {
    Vec::new()
}
