//! Where the kernel's BTF comes from: `/sys/kernel/btf/vmlinux`, else a
//! configured file, else a `vendor-btf/` blob embedded for this kernel release
//! (raw BTF or an ELF with `.BTF`). A typed [`KError::MissingBtf`] lists every
//! source tried.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::btf::Btf;
use super::error::{KError, KResult};

/// The kernel's own BTF.
pub const SYSFS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// BTF files embedded by kernel release (`uname -r`). Add entries as
/// `("6.1.0-18-amd64", include_bytes!("../../vendor-btf/6.1.0-18-amd64.btf"))`;
/// `vendor-btf/README.md` says how to produce them (`bpftool gen min_core_btf`).
pub static VENDOR_BTF: &[(&str, &[u8])] = &[];

/// Where to look, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BtfSources {
    /// A file (raw BTF or ELF with `.BTF`) given by configuration.
    pub path: Option<PathBuf>,
    /// Override of the sysfs path (tests).
    pub sysfs: Option<PathBuf>,
    /// Override of the kernel release used for the embedded table (tests).
    pub release: Option<String>,
}

/// Raw BTF, or the `.BTF` section of an ELF file.
pub fn parse_btf_file(data: &[u8]) -> super::Result<Btf> {
    if data.starts_with(b"\x7fELF") {
        super::object::btf_from_bytes(data)
    } else {
        Btf::parse(data)
    }
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Resolves the target BTF from `src` and the embedded table `vendor`.
pub fn resolve(src: &BtfSources, vendor: &[(&str, &[u8])]) -> KResult<(Btf, String)> {
    let mut tried = Vec::new();
    let sysfs = src
        .sysfs
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSFS_VMLINUX));
    let mut from_file = |p: &Path| -> Option<Btf> {
        match std::fs::read(p) {
            Ok(d) => match parse_btf_file(&d) {
                Ok(b) => Some(b),
                Err(e) => {
                    tried.push(format!("{}: {e}", p.display()));
                    None
                }
            },
            Err(e) => {
                tried.push(format!("{}: {e}", p.display()));
                None
            }
        }
    };
    if let Some(b) = from_file(&sysfs) {
        return Ok((b, sysfs.display().to_string()));
    }
    if let Some(p) = &src.path {
        if let Some(b) = from_file(p) {
            return Ok((b, p.display().to_string()));
        }
    } else {
        tried.push("no configured BTF path".into());
    }
    let release = src.release.clone().unwrap_or_else(kernel_release);
    match vendor.iter().find(|(r, _)| *r == release) {
        Some((_, data)) => match parse_btf_file(data) {
            Ok(b) => return Ok((b, format!("embedded vendor-btf/{release}"))),
            Err(e) => tried.push(format!("embedded vendor-btf/{release}: {e}")),
        },
        None => tried.push(format!("no embedded BTF for release {release:?}")),
    }
    Err(KError::MissingBtf { tried })
}

static CACHE: Mutex<Option<(Arc<Btf>, String)>> = Mutex::new(None);

/// The target BTF for the default sources (sysfs, then embedded), parsed once
/// per process and shared.
pub fn kernel_btf(src: &BtfSources) -> KResult<Arc<Btf>> {
    let default = src.path.is_none() && src.sysfs.is_none() && src.release.is_none();
    if default {
        if let Some((b, _)) = CACHE.lock().ok().and_then(|c| c.clone()) {
            return Ok(b);
        }
    }
    let (b, from) = resolve(src, VENDOR_BTF)?;
    let b = Arc::new(b);
    if default {
        if let Ok(mut c) = CACHE.lock() {
            *c = Some((b.clone(), from));
        }
    }
    Ok(b)
}

/// The running kernel's BTF for the unit tests that compare with it, or `None` with the reason
/// printed (`SKIP <test>: ...`) where it is unreadable; under NETSLEUTH_REQUIRE_PRIVILEGED=1 (the
/// suite's strict mode, as in `tests/common::skip`) a missing kernel BTF fails the test instead.
#[cfg(test)]
pub(crate) fn vmlinux_for_test(test: &str) -> Option<Vec<u8>> {
    let path = "/sys/kernel/btf/vmlinux";
    match std::fs::read(path) {
        Ok(d) => Some(d),
        Err(e) => {
            let why = format!("cannot read {path}: {e}");
            if std::env::var("NETSLEUTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("{test}: cannot skip under NETSLEUTH_REQUIRE_PRIVILEGED=1: {why}");
            }
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vec<u8> {
        let mut b = Btf::new();
        let n = b.add_string("int");
        b.add_type(super::super::btf::Type::Int {
            name_off: n,
            size: 4,
            encoding: 1,
            offset: 0,
            bits: 32,
        });
        b.to_bytes()
    }

    #[test]
    fn embedded_by_release_is_used_when_sysfs_is_missing() {
        let blob = tiny();
        let vendor: Vec<(&str, &[u8])> = vec![("9.9.9-test", &blob[..])];
        let src = BtfSources {
            sysfs: Some("/nonexistent/vmlinux".into()),
            release: Some("9.9.9-test".into()),
            ..Default::default()
        };
        let (b, from) = resolve(&src, &vendor).unwrap();
        assert_eq!(b.len(), 2);
        assert!(from.contains("9.9.9-test"));
    }

    #[test]
    fn configured_path_before_embedded() {
        let dir = std::env::temp_dir().join(format!("ns-btf-{}", std::process::id()));
        std::fs::write(&dir, tiny()).unwrap();
        let src = BtfSources {
            sysfs: Some("/nonexistent/vmlinux".into()),
            path: Some(dir.clone()),
            release: Some("none".into()),
        };
        let (_, from) = resolve(&src, &[]).unwrap();
        assert_eq!(from, dir.display().to_string());
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn nothing_found_is_a_typed_error_listing_sources() {
        let src = BtfSources {
            sysfs: Some("/nonexistent/vmlinux".into()),
            release: Some("0.0.0".into()),
            ..Default::default()
        };
        match resolve(&src, &[]) {
            Err(KError::MissingBtf { tried }) => {
                assert_eq!(tried.len(), 3, "{tried:?}");
                assert!(tried[2].contains("0.0.0"));
            }
            other => panic!("{other:?}"),
        }
    }
}
