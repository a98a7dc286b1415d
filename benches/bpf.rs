//! BPF loader benchmark (root): time from start to every probe object loaded and
//! attached, every program of every attach plan alternative included (vmlinux BTF parse
//! included; target ≤ 150 ms), and ring-buffer drain rate for 64-byte records on one core
//! (target ≥ 2 M records/s; the loader test object with its 16 MiB ring buffer is loaded for it
//! after the startup figure is taken).
//!
//! The floor, measured in the same run: Debian's libbpf (`benches/libbpf_floor.c`, compiled
//! here with `cc -lbpf` when libbpf-dev is installed; bench only, the product never links it)
//! loads the same objects and loads and attaches the same programs; target: netsleuth's
//! start-up <= 1.1x libbpf's (the median of 3 libbpf runs, after netsleuth's objects are
//! closed).
use std::time::Instant;

use netsleuth::bpf::{embedded, load, LoadOptions};

/// A probe object for the libbpf floor: name, bytes, the programs netsleuth attached, those it
/// loaded but could not attach here.
type FloorObject<'a> = (&'a str, &'a [u8], Vec<String>, Vec<String>);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP bpf bench: needs root");
        return;
    }
    let t0 = Instant::now();
    let btf = netsleuth::bpf::target_btf::kernel_btf(&Default::default()).expect("kernel BTF");
    let t_btf = t0.elapsed();
    let _ = btf.find_by_name_kind("sk_buff", netsleuth::bpf::btf::Kind::Struct);
    let t_idx = t0.elapsed();
    netsleuth::bpf::btf_load::features();
    let t_feat = t0.elapsed();
    let mut keep = Vec::new();
    let mut links = Vec::new();
    let mut unsupported = 0;
    let pid = std::process::id();
    // The loader test object with its 16 MiB ring buffer (for the drain figure below) is not
    // part of any startup: it is loaded after the startup time is taken.
    let (probe_objects, test_objects): (Vec<_>, Vec<_>) = embedded::OBJECTS
        .iter()
        .partition(|(name, _)| *name != "loadertest");
    let mut startup = None;
    // Per probe object: (name, bytes, programs attached, programs loaded but not attachable).
    let mut floor_plan: Vec<FloorObject> = Vec::new();
    for &(name, bytes) in probe_objects.into_iter().chain(test_objects) {
        if name == "loadertest" {
            startup = Some((t0.elapsed(), keep.len(), links.len(), unsupported));
        }
        let opts = LoadOptions {
            globals: if name == "loadertest" {
                vec![("target_pid".into(), pid.to_ne_bytes().to_vec())]
            } else {
                vec![]
            },
            max_entries: if name == "loadertest" {
                vec![("rb".into(), 16 << 20)]
            } else {
                vec![]
            },
            ..Default::default()
        };
        let l = load(bytes, &opts).expect("load");
        let names: Vec<String> = l
            .program_names()
            .filter(|(_, ok)| *ok)
            .map(|(n, _)| n.to_string())
            .collect();
        let (mut att, mut only) = (Vec::new(), Vec::new());
        for n in names {
            match l.attach(&n) {
                Ok(k) => {
                    links.push(k);
                    att.push(n);
                }
                Err(e) if e.is_unsupported() => {
                    unsupported += 1;
                    only.push(n);
                }
                // e.g. a raw tracepoint this kernel does not have (biolatency's block_rq_*
                // on a guest without them): loaded, not attached, said.
                Err(e) => {
                    println!("  {name}/{n}: not attached here: {e}");
                    unsupported += 1;
                    only.push(n);
                }
            }
        }
        if name != "loadertest" {
            floor_plan.push((name, bytes, att, only));
        }
        keep.push((name, l));
    }
    let (startup, objects, attached, unsupported) =
        startup.unwrap_or((t0.elapsed(), keep.len(), links.len(), unsupported));
    println!(
        "startup: {objects} probe objects loaded, {attached} programs attached ({unsupported} unsupported here) in {:.1} ms (target <= 150 ms); with the loader test object and its 16 MiB ring buffer {:.1} ms",
        startup.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );

    // Ring buffer drain: fill with 64-byte records, then time the consumer.
    println!(
        "  of which: vmlinux BTF parse {:.1} ms, name index {:.1} ms, feature probes {:.1} ms",
        t_btf.as_secs_f64() * 1e3,
        (t_idx - t_btf).as_secs_f64() * 1e3,
        (t_feat - t_idx).as_secs_f64() * 1e3
    );
    let (_, l) = keep.iter().find(|(n, _)| *n == "loadertest").unwrap();
    let obj =
        netsleuth::bpf::object::Object::parse(embedded::object("loadertest").unwrap()).unwrap();
    let def = &obj.maps[obj.map_index(".bss").unwrap()];
    let off = def
        .vars
        .iter()
        .find(|v| v.name == "ring_burst")
        .unwrap()
        .offset as usize;
    let bss = l.map(".bss").unwrap();
    let mut data = bss.lookup(&0u32.to_ne_bytes()).unwrap().unwrap();
    data[off..off + 4].copy_from_slice(&1024u32.to_ne_bytes());
    bss.set_data(&data).unwrap();
    let mut rb = l.ringbuf("rb").unwrap();
    let (mut total, mut secs, mut sum) = (0u64, 0f64, 0u64);
    for _ in 0..10 {
        for _ in 0..200 {
            nix::unistd::getppid();
        }
        let t = Instant::now();
        let n = rb.consume(|r| sum = sum.wrapping_add(r[0] as u64));
        secs += t.elapsed().as_secs_f64();
        total += n as u64;
    }
    println!(
        "ringbuf drain: {total} records of 64 bytes in {:.1} ms = {:.2} M records/s (target >= 2 M/s), lost {}",
        secs * 1e3,
        total as f64 / secs / 1e6,
        rb.lost().unwrap()
    );
    std::hint::black_box(sum);
    drop(rb);
    drop(links);
    drop(keep);
    libbpf_floor(&floor_plan, startup.as_secs_f64() * 1e3);
}

/// Runs benches/libbpf_floor.c over the same objects and programs; prints its figure and the
/// ratio, or why it could not run.
fn libbpf_floor(plan: &[FloorObject], ours_ms: f64) {
    if !std::path::Path::new("/usr/include/bpf/libbpf.h").exists() {
        println!("libbpf floor: SKIP, libbpf-dev is not installed (tests/setup installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("netsleuth-bench-bpf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let exe = dir.join("libbpf_floor");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/libbpf_floor.c");
    let cc = std::process::Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&exe)
        .arg(src)
        .arg("-lbpf")
        .status();
    if !matches!(cc, Ok(s) if s.success()) {
        println!("libbpf floor: SKIP, `cc {src} -lbpf` failed ({cc:?})");
        return;
    }
    let mut args = Vec::new();
    for (name, bytes, att, only) in plan {
        let f = dir.join(format!("{name}.bpf.o"));
        std::fs::write(&f, bytes).expect("write object");
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        args.push(f.display().to_string());
        args.push(list(att));
        args.push(list(only));
    }
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = std::process::Command::new(&exe)
            .args(&args)
            .output()
            .expect("run libbpf_floor");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            println!(
                "libbpf floor: FAILED ({}): {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let ms: f64 = text
            .trim()
            .rsplit(", ")
            .next()
            .and_then(|v| v.strip_suffix(" ms"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        println!("  {}", text.trim());
        runs.push(ms);
    }
    runs.sort_by(|a, b| a.total_cmp(b));
    let floor = runs[1];
    println!(
        "libbpf floor (same objects and programs, median of 3): {floor:.1} ms; netsleuth {ours_ms:.1} ms = {:.2}x libbpf (target <= 1.1x)",
        ours_ms / floor
    );
    let _ = std::fs::remove_dir_all(&dir);
}
