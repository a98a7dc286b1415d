//! Helpers shared by the procfs probes' unit tests.

use std::path::{Path, PathBuf};

use super::parse::Stat;
use super::{CollectError, Collector, NetnsCtx, ProbeArgs, ProbeSpec};
use crate::model::{Families, MetricKind, Value};

pub fn fixture_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/procfs")
        .join(rel)
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixture_dir(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

pub fn spec(specs: Vec<ProbeSpec>, name: &str) -> ProbeSpec {
    specs.into_iter().find(|s| s.name == name).expect("probe")
}

/// Build a probe from a YAML args string (`""` for defaults).
pub fn build_probe(specs: Vec<ProbeSpec>, name: &str, args: &str) -> Box<dyn Collector> {
    let s = spec(specs, name);
    let y: serde_norway::Value = if args.is_empty() {
        serde_norway::Value::Null
    } else {
        serde_norway::from_str(args).unwrap()
    };
    let mut a = ProbeArgs::from_yaml(name, &y).unwrap();
    (s.build)(&mut a).unwrap()
}

/// Run a collector on `<fixture>/net` with `<fixture>/proc` as proc root and render.
pub fn run(c: &dyn Collector, fixture: &str, pids: &[i32]) -> (String, Result<(), String>) {
    let root = fixture_dir(fixture);
    let proc_root = root.join("proc");
    // Fixtures are captured from the host namespace.
    let ctx = NetnsCtx::new(1, root.join("net"), &proc_root, false, pids).with_host(true);
    let mut f = Families::new();
    let r = c.collect(&ctx, &mut f.sink("")).map_err(|e| e.to_string());
    let mut s = String::new();
    f.render(&mut s);
    (s, r)
}

/// Run a collector on `<dir>/net` (with `dir` as proc root) as the host's namespace or
/// another's; the rendered sample lines.
pub fn samples_of_dir(c: &dyn Collector, dir: &Path, host: bool) -> Vec<String> {
    let ctx = NetnsCtx::new(1, dir.join("net"), dir, false, &[]).with_host(host);
    let mut f = Families::new();
    c.collect(&ctx, &mut f.sink("")).unwrap();
    let mut s = String::new();
    f.render(&mut s);
    samples(&s).iter().map(|l| l.to_string()).collect()
}

/// Run a collector in this process's namespace as a worker that has not entered it would.
pub fn collect_not_entered(c: &dyn Collector) -> Result<(), CollectError> {
    let ctx = NetnsCtx::new(1, "/proc/self/net".into(), Path::new("/proc"), false, &[]);
    let mut fams = Families::new();
    c.collect(&ctx, &mut fams.sink(""))
}

/// Only the sample lines of a rendering.
pub fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// The rules of `promtool check metrics` that depend on the name and type (snake_case,
/// `_total` exactly on counters, no reserved `_count`/`_sum`/`_bucket` suffix, no
/// abbreviated unit, no type in the name), returning the problem or `None`.
pub fn lint(name: &str, kind: MetricKind) -> Option<String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_chars || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(format!("{name}: not snake_case"));
    }
    let counter = kind == MetricKind::Counter;
    if counter != name.ends_with("_total") {
        return Some(format!("{name}: _total mismatch for {kind:?}"));
    }
    for suf in ["_count", "_sum", "_bucket"] {
        if name.ends_with(suf) {
            return Some(format!("{name}: reserved suffix {suf}"));
        }
    }
    for a in super::names::UNIT_ABBREVIATIONS {
        if name.contains(&format!("_{a}_")) || name.ends_with(&format!("_{a}")) {
            return Some(format!("{name}: abbreviated unit {a}"));
        }
    }
    let t = kind.as_str();
    if name.contains(&format!("_{t}_")) || name.ends_with(&format!("_{t}")) {
        return Some(format!("{name}: type in name"));
    }
    None
}

/// Lint every family of a rendering.
pub fn lint_rendering(text: &str) {
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap();
            let kind = if t == "counter" {
                MetricKind::Counter
            } else {
                MetricKind::Gauge
            };
            assert_eq!(lint(name, kind), None);
        }
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let (_, help) = rest.split_once(' ').unwrap();
            assert!(help.ends_with('.') && help.len() > 20, "{l}");
        }
    }
}

/// The value of `group`/`field` in parsed statistics.
pub fn get<'a>(s: &'a [Stat<'a>], g: &str, f: &str) -> Option<Value> {
    s.iter()
        .find(|x| x.group == g && x.field == f)
        .map(|x| x.value)
}
