//! BPF loader benchmark (root): time from start to every probe object loaded and
//! attached, every program of every attach plan alternative included (vmlinux BTF parse
//! included; target ≤ 150 ms), and ring-buffer drain rate for 64-byte records on one core
//! (target ≥ 2 M records/s; the loader test object with its 16 MiB ring buffer is loaded for it
//! after the startup figure is taken).
use std::time::Instant;

use netsleuth::bpf::{embedded, load, LoadOptions};

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
        for n in names {
            match l.attach(&n) {
                Ok(k) => links.push(k),
                Err(e) if e.is_unsupported() => unsupported += 1,
                Err(e) => panic!("attach {n}: {e}"),
            }
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
}
