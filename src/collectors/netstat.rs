//! Placeholder: filled in by the `netstat` probe work.

#[allow(dead_code)]
pub fn specs() -> Vec<super::ProbeSpec> {
    Vec::new()
}
