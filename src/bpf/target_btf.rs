//! Where the kernel's BTF comes from: `/sys/kernel/btf/vmlinux`, else a
//! configured file (`bpf.btfPath`, `selftest --btf-path`), else a `vendor-btf/`
//! blob embedded for this kernel release (minimal BTF: only the types the
//! embedded objects' CO-RE relocations and the probes' name tables use). A
//! typed [`KError::MissingBtf`] lists every source tried; [`missing_btf_help`]
//! turns it into the start-up message.
//!
//! Type ids: `tp_btf`/`fentry`/`fexit` programs name their target by a BTF
//! type id of the *running kernel's* BTF. The sysfs file and a configured file
//! (the kernel's own BTF, by contract) give those ids; an embedded minimal
//! blob does not (its ids are its own), so with it those programs are refused
//! with an `Unsupported` reason and the attach plans fall back to raw
//! tracepoints and kprobes — what a kernel without BTF allows anyway.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::btf::{Btf, Kind, Type};
use super::error::{KError, KResult};

/// The kernel's own BTF.
pub const SYSFS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Minimal BTF embedded by kernel release (`uname -r`): one blob per amd64 kernel of the
/// kernel matrix. `vendor-btf/README.md` says how a release is added (and the unit test
/// `vendored_btf_relocates_like_the_full_btf` checks every entry against the full BTF).
#[cfg(target_arch = "x86_64")]
pub static VENDOR_BTF: &[(&str, &[u8])] = &[
    (
        "5.10.0-46-amd64",
        include_bytes!("../../vendor-btf/5.10.0-46-amd64.btf"),
    ),
    (
        "6.1.0-57-amd64",
        include_bytes!("../../vendor-btf/6.1.0-57-amd64.btf"),
    ),
    (
        "6.12.118+deb12-amd64",
        include_bytes!("../../vendor-btf/6.12.118+deb12-amd64.btf"),
    ),
];
/// Minimal BTF embedded by kernel release (none for this architecture yet).
#[cfg(not(target_arch = "x86_64"))]
pub static VENDOR_BTF: &[(&str, &[u8])] = &[];

/// Enums the Rust side reads by name from the kernel's BTF (not through CO-RE), added to the
/// vendored blobs whole: biolatency's operation names. (`skb_drop_reason`, packetloss's reason
/// names, is already there: the object's CO-RE relocations keep it.)
pub const VENDOR_EXTRA_ENUMS: &[&str] = &["req_op", "req_opf", "skb_drop_reason"];

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

/// Which kind of source the target BTF came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `/sys/kernel/btf/vmlinux`.
    Sysfs,
    /// A configured file (`bpf.btfPath`, `selftest --btf-path`).
    Path,
    /// The embedded `vendor-btf/` table.
    Vendor,
}

impl Origin {
    /// `sysfs`, `path`, `vendor` (selftest outcomes, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Sysfs => "sysfs",
            Origin::Path => "path",
            Origin::Vendor => "vendor",
        }
    }
}

/// The resolved target BTF and where it came from.
#[derive(Clone, Debug)]
pub struct TargetBtf {
    /// The types.
    pub btf: Arc<Btf>,
    /// The kind of source.
    pub origin: Origin,
    /// The source itself (a path, or `embedded vendor-btf/<release>`).
    pub from: String,
}

impl TargetBtf {
    /// `None` when this BTF's type ids are the running kernel's (usable as `attach_btf_id`),
    /// else why not.
    pub fn foreign_ids(&self) -> Option<String> {
        (self.origin == Origin::Vendor).then(|| {
            format!(
                "attaching by BTF id needs the running kernel's own BTF ({SYSFS_VMLINUX} or bpf.btfPath); the {} is minimal BTF for CO-RE only",
                self.from
            )
        })
    }

    /// `sysfs /sys/kernel/btf/vmlinux` — origin and source, for logs.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.origin.as_str(), self.from)
    }
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

/// The configured BTF file of this process, used where a [`BtfSources`] names none (set by
/// `selftest --btf-path`, whose checks load with the default sources).
static PROCESS_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Sets (or clears) the process-wide configured BTF file.
pub fn set_process_path(p: Option<PathBuf>) {
    if let Ok(mut g) = PROCESS_PATH.lock() {
        *g = p;
    }
}

fn effective(src: &BtfSources) -> BtfSources {
    let mut s = src.clone();
    if s.path.is_none() {
        s.path = PROCESS_PATH.lock().ok().and_then(|g| g.clone());
    }
    s
}

/// Resolves the target BTF from `src` and the embedded table `vendor` (the process-wide
/// path is not consulted: see [`target`]).
pub fn resolve(src: &BtfSources, vendor: &[(&str, &[u8])]) -> KResult<(Btf, Origin, String)> {
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
        return Ok((b, Origin::Sysfs, sysfs.display().to_string()));
    }
    if let Some(p) = &src.path {
        if let Some(b) = from_file(p) {
            return Ok((b, Origin::Path, p.display().to_string()));
        }
    } else {
        tried.push("no configured BTF path (bpf.btfPath)".into());
    }
    let release = src.release.clone().unwrap_or_else(kernel_release);
    match vendor.iter().find(|(r, _)| *r == release) {
        Some((_, data)) => match parse_btf_file(data) {
            Ok(b) => return Ok((b, Origin::Vendor, format!("embedded vendor-btf/{release}"))),
            Err(e) => tried.push(format!("embedded vendor-btf/{release}: {e}")),
        },
        None => tried.push(format!(
            "no embedded vendor-btf for release {release:?} (embedded: {})",
            if vendor.is_empty() {
                "none".to_string()
            } else {
                vendor
                    .iter()
                    .map(|(r, _)| *r)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )),
    }
    Err(KError::MissingBtf { tried })
}

/// Resolved BTF per source set, parsed once per process and shared (a probe restart or a
/// second object does not parse the kernel's 5 MB again).
static CACHE: Mutex<Vec<(BtfSources, TargetBtf)>> = Mutex::new(Vec::new());

/// The target BTF for `src` (its path, else the process-wide one; then sysfs, the file, the
/// embedded table), cached. Failures are not cached: a file that appears later is found.
pub fn target(src: &BtfSources) -> KResult<TargetBtf> {
    let src = effective(src);
    if let Some(t) = CACHE
        .lock()
        .ok()
        .and_then(|c| c.iter().find(|(s, _)| *s == src).map(|(_, t)| t.clone()))
    {
        return Ok(t);
    }
    let (b, origin, from) = resolve(&src, VENDOR_BTF)?;
    let t = TargetBtf {
        btf: Arc::new(b),
        origin,
        from,
    };
    if let Ok(mut c) = CACHE.lock() {
        c.push((src, t.clone()));
    }
    Ok(t)
}

/// The target BTF's types (see [`target`]).
pub fn kernel_btf(src: &BtfSources) -> KResult<Arc<Btf>> {
    target(src).map(|t| t.btf)
}

/// The start-up message for a kernel where no source gives BTF: which eBPF probes cannot
/// run, every source tried, and the fixes. `probes` are the configured eBPF probes that need
/// kernel BTF.
pub fn missing_btf_help(tried: &[String], probes: &[&str]) -> String {
    let release = kernel_release();
    let which = if probes.is_empty() {
        "no configured eBPF probe needs it".to_string()
    } else {
        format!(
            "these eBPF probes cannot run: {} (their programs are relocated against the kernel's types)",
            probes.join(", ")
        )
    };
    format!(
        "no kernel BTF for {release}: {which}. Tried: {}. Fix with one of: a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (it provides {SYSFS_VMLINUX}; Debian's linux-image-* \
         packages since Debian 11 have it); bpf.btfPath set to this kernel's BTF (its vmlinux \
         with a .BTF section, e.g. /usr/lib/debug/boot/vmlinux-{release} from Debian's \
         linux-image-{release}-dbg, or a raw BTF file; `pahole --btf_encode_detached=FILE` \
         makes one from a vmlinux with DWARF); or a vendor-btf/ blob for this release built \
         into netsleuth (vendor-btf/README.md). The procfs and netlink collectors are not \
         affected and keep running.",
        tried.join("; ")
    )
}

/// The vendored blob for a release: `min` (the output of `bpftool gen min_core_btf <full>
/// <out> bpf-asm/*.bpf.o`) with each enum of [`VENDOR_EXTRA_ENUMS`] the full BTF has and
/// `min` lacks appended whole. Deterministic: the same inputs give the same bytes.
pub fn vendor_blob(min: &[u8], full: &Btf) -> super::Result<Vec<u8>> {
    let mut out = Btf::parse(min)?;
    for name in VENDOR_EXTRA_ENUMS {
        if out.find_by_name_kind(name, Kind::Enum).is_some() {
            continue;
        }
        let Some(id) = full.find_by_name_kind(name, Kind::Enum) else {
            continue;
        };
        if let Type::Enum {
            size,
            signed,
            values,
            ..
        } = full.type_by_id(id)?.clone()
        {
            let name_off = out.add_string(name);
            let values = values
                .into_iter()
                .map(|v| {
                    Ok(super::btf::EnumValue {
                        name_off: out.add_string(full.name(v.name_off)?),
                        value: v.value,
                    })
                })
                .collect::<super::Result<Vec<_>>>()?;
            out.add_type(Type::Enum {
                name_off,
                size,
                signed,
                values,
            });
        }
    }
    Ok(out.to_bytes())
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
    use crate::bpf::object::Object;

    /// The kernel matrix's cache (`tests/kernel-matrix/fetch-kernels`): the full vmlinux of
    /// each vendored release, `<cache>/<release>/vmlinux`.
    fn kernel_cache() -> PathBuf {
        std::env::var_os("NETSLEUTH_KERNEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/netsleuth-kernels")
            })
    }

    fn strict() -> bool {
        std::env::var("NETSLEUTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1")
    }

    /// Skips (printed reason) or, in the suite's strict mode, fails.
    fn skip(test: &str, why: &str) {
        if strict() {
            panic!("{test}: cannot skip under NETSLEUTH_REQUIRE_PRIVILEGED=1: {why}");
        }
        eprintln!("SKIP {test}: {why}");
    }

    /// The full BTF of `release` from the kernel cache, or `None` (skipped, reason printed).
    fn full_btf(test: &str, release: &str) -> Option<Btf> {
        let path = kernel_cache().join(release).join("vmlinux");
        match std::fs::read(&path) {
            Ok(d) => Some(parse_btf_file(&d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))),
            Err(e) => {
                skip(
                    test,
                    &format!(
                        "cannot read {} ({e}): run tests/kernel-matrix/fetch-kernels {} (or the kernel matrix) first",
                        path.display(),
                        kernel_cache().display()
                    ),
                );
                None
            }
        }
    }

    /// Every embedded object relocated against `target`: per object, the CO-RE outcomes
    /// and every code section's patched instructions.
    #[allow(clippy::type_complexity)]
    fn relocated(
        target: &Btf,
    ) -> Vec<(
        &'static str,
        Vec<crate::bpf::core::CoreOutcome>,
        Vec<Vec<crate::bpf::insn::Insn>>,
    )> {
        crate::bpf::embedded::OBJECTS
            .iter()
            .map(|(name, bytes)| {
                let mut obj = Object::parse(bytes).unwrap();
                let out = crate::bpf::core::relocate(&mut obj, target)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let insns = obj.sections.iter().map(|s| s.insns.clone()).collect();
                (*name, out, insns)
            })
            .collect()
    }

    #[test]
    fn vendored_btf_relocates_like_the_full_btf() {
        const T: &str = "vendored_btf_relocates_like_the_full_btf";
        assert!(
            cfg!(not(target_arch = "x86_64")) || VENDOR_BTF.len() == 3,
            "one blob per amd64 kernel of the matrix"
        );
        for (release, blob) in VENDOR_BTF {
            let min = parse_btf_file(blob).unwrap_or_else(|e| panic!("{release}: {e}"));
            let Some(full) = full_btf(T, release) else {
                continue;
            };
            let (a, b) = (relocated(&full), relocated(&min));
            let mut relos = 0;
            for ((name, fo, fi), (_, mo, mi)) in a.iter().zip(&b) {
                assert_eq!(fo.len(), mo.len(), "{release} {name}");
                for (f, m) in fo.iter().zip(mo) {
                    assert_eq!(f, m, "{release} {name}: full {f} vs vendored {m}");
                }
                assert!(fi == mi, "{release} {name}: patched instructions differ");
                relos += fo.len();
            }
            assert!(relos > 0, "{release}: no relocations");
            // The names the probes read from the kernel's BTF (not through CO-RE).
            assert_eq!(
                crate::probes::packetloss::reason_names(&full),
                crate::probes::packetloss::reason_names(&min),
                "{release}"
            );
            assert_eq!(
                crate::probes::biolatency::op_names(&full),
                crate::probes::biolatency::op_names(&min),
                "{release}"
            );
            eprintln!(
                "{release}: {relos} CO-RE relocations in {} objects identical; blob {} bytes, {} types (full: {} types)",
                a.len(),
                blob.len(),
                min.len() - 1,
                full.len() - 1
            );
        }
    }

    /// The bpftool whose `gen min_core_btf` made the committed blobs (Debian 12's).
    const BPFTOOL_VERSION: &str = "bpftool v7.1.0";

    /// Regenerating each blob gives the committed bytes; with NETSLEUTH_VENDOR_BTF_WRITE=1 it
    /// writes them instead (vendor-btf/README.md: adding a release).
    #[test]
    fn vendored_btf_regenerates_identically() {
        const T: &str = "vendored_btf_regenerates_identically";
        let write = std::env::var("NETSLEUTH_VENDOR_BTF_WRITE").as_deref() == Ok("1");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bpftool = ["bpftool", "/usr/sbin/bpftool"].into_iter().find_map(|b| {
            let o = std::process::Command::new(b).arg("version").output().ok()?;
            Some((b, String::from_utf8_lossy(&o.stdout).to_string()))
        });
        let Some((bpftool, version)) = bpftool else {
            return skip(
                T,
                "no bpftool (Debian package bpftool, tests/setup installs it)",
            );
        };
        if !version.starts_with(BPFTOOL_VERSION) && !write {
            eprintln!(
                "SKIP {T}: the blobs were made by {BPFTOOL_VERSION}, this is {:?}",
                version.lines().next().unwrap_or("")
            );
            return;
        }
        let mut objects: Vec<PathBuf> = std::fs::read_dir(root.join("bpf-asm"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".bpf.o"))
            .collect();
        objects.sort();
        for (release, blob) in VENDOR_BTF {
            let vmlinux = kernel_cache().join(release).join("vmlinux");
            let Some(full) = full_btf(T, release) else {
                continue;
            };
            let tmp =
                std::env::temp_dir().join(format!("ns-min-btf-{}-{release}", std::process::id()));
            let st = std::process::Command::new(bpftool)
                .args(["gen", "min_core_btf"])
                .arg(&vmlinux)
                .arg(&tmp)
                .args(&objects)
                .status()
                .unwrap();
            assert!(st.success(), "{bpftool} gen min_core_btf: {st}");
            let min = std::fs::read(&tmp).unwrap();
            std::fs::remove_file(&tmp).unwrap();
            let made = vendor_blob(&min, &full).unwrap();
            let file = root.join("vendor-btf").join(format!("{release}.btf"));
            if write {
                std::fs::write(&file, &made).unwrap();
                eprintln!("wrote {} ({} bytes)", file.display(), made.len());
            } else {
                assert!(
                    made == *blob,
                    "{release}: regenerated {} bytes differ from the embedded {} bytes (NETSLEUTH_VENDOR_BTF_WRITE=1 rewrites them)",
                    made.len(),
                    blob.len()
                );
            }
        }
    }

    #[test]
    fn vendored_blob_has_no_kernel_ids() {
        for (release, blob) in VENDOR_BTF {
            let t = TargetBtf {
                btf: Arc::new(parse_btf_file(blob).unwrap()),
                origin: Origin::Vendor,
                from: format!("embedded vendor-btf/{release}"),
            };
            let why = t.foreign_ids().unwrap();
            assert!(why.contains(release), "{why}");
            // No attach target a program could be given a (wrong) id for.
            for i in 1..t.btf.len() {
                let k = t.btf.type_by_id(i).unwrap().kind();
                assert!(!matches!(k, Kind::Func), "{release}: FUNC [{i}]");
            }
        }
    }

    #[test]
    fn missing_btf_help_names_probes_sources_and_fixes() {
        let m = missing_btf_help(
            &[
                "/x/vmlinux: No such file".into(),
                "no configured BTF path (bpf.btfPath)".into(),
            ],
            &["packetloss", "tcpreset"],
        );
        for want in [
            "packetloss, tcpreset",
            "/x/vmlinux: No such file",
            "CONFIG_DEBUG_INFO_BTF=y",
            "bpf.btfPath",
            "-dbg",
            "vendor-btf/README.md",
            "collectors are not affected",
        ] {
            assert!(m.contains(want), "{want}: {m}");
        }
    }

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
        let (b, origin, from) = resolve(&src, &vendor).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(origin, Origin::Vendor);
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
        let (_, origin, from) = resolve(&src, &[]).unwrap();
        assert_eq!(origin, Origin::Path);
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
