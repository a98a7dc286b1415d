//! Reading the probes' kernel maps: summed counters, per-CPU sums, log2 latency histograms
//! (`struct hist` in `bpf-asm/include/latency.h`) and their Prometheus buckets.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use super::plan::RunningProbe;
use crate::bpf::{self, Loaded};
use crate::model::Families;

/// Sum of key 0 of a per-CPU u64 array.
pub fn per_cpu_sum(l: &Loaded, map: &str) -> bpf::KResult<u64> {
    let m = l.map(map)?;
    Ok(m.lookup_percpu(&0u32.to_ne_bytes())?
        .unwrap_or_default()
        .iter()
        .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8])))
        .sum())
}

/// Sums a hash map of `key → u64` by a label tuple derived from the key (several kernel keys
/// may share one series).
pub fn sum_u64_map<K: Ord>(
    l: &Loaded,
    map: &str,
    mut key: impl FnMut(&[u8]) -> Option<K>,
) -> Result<BTreeMap<K, u64>, String> {
    let m = l.map(map).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (k, v) in m.entries().map_err(|e| format!("read map {map}: {e}"))? {
        let Some(k) = key(&k) else { continue };
        let n = u64::from_ne_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
        *out.entry(k).or_default() += n;
    }
    Ok(out)
}

/// Slots of `struct hist` (`bpf-asm/include/latency.h`): slot i counts [2^i, 2^(i+1)) ns, the
/// last one everything above.
pub const HIST_SLOTS: usize = 36;
const _: () = assert!(super::layout::hist::SLOTS.size == HIST_SLOTS * 8);
/// The first slot given its own bucket: `le` = 2^10 ns (~1 µs); the slots below fold into it.
const HIST_FIRST_BUCKET: usize = 9;

/// A log2 latency histogram summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log2Hist {
    pub slots: [u64; HIST_SLOTS],
    pub sum_ns: u64,
}

impl Default for Log2Hist {
    fn default() -> Self {
        Log2Hist {
            slots: [0; HIST_SLOTS],
            sum_ns: 0,
        }
    }
}

impl Log2Hist {
    /// Adds one CPU's `struct hist` (slots, then sum).
    pub fn add_raw(&mut self, b: &[u8]) {
        use super::layout::hist as f;
        let end = b.len().min(f::SLOTS.offset + f::SLOTS.size);
        let slots = b.get(f::SLOTS.offset..end).unwrap_or(&[]);
        for (s, x) in self.slots.iter_mut().zip(slots.chunks_exact(8)) {
            *s = s.wrapping_add(u64::from_ne_bytes(x.try_into().unwrap_or([0; 8])));
        }
        self.sum_ns = self.sum_ns.wrapping_add(f::SUM_NS.u64(b).unwrap_or(0));
    }

    pub fn add(&mut self, o: &Log2Hist) {
        for (a, b) in self.slots.iter_mut().zip(o.slots.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(o.sum_ns);
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Prometheus buckets (seconds, cumulative): `le` = 2^(i+1) ns for slots
    /// [`HIST_FIRST_BUCKET`]..`HIST_SLOTS-1`; the last slot only in `+Inf`.
    pub fn to_prometheus(&self) -> crate::model::HistogramValue {
        let mut cum: u64 = self.slots[..HIST_FIRST_BUCKET]
            .iter()
            .fold(0, |a, b| a.wrapping_add(*b));
        let mut buckets = Vec::with_capacity(HIST_SLOTS - HIST_FIRST_BUCKET);
        for i in HIST_FIRST_BUCKET..HIST_SLOTS - 1 {
            cum = cum.wrapping_add(self.slots[i]);
            buckets.push(((1u64 << (i + 1)) as f64 / 1e9, cum));
        }
        crate::model::HistogramValue {
            buckets,
            sum: self.sum_ns as f64 / 1e9,
            count: self.count(),
        }
    }
}

/// Emit a `lat` map keyed by `struct lat_key { u32 netns; u32 stage; }` as one histogram family
/// per stage (`families[stage]` = name, help), each series under its namespace's labels.
pub fn collect_stage_histograms(
    p: &RunningProbe,
    prefix: &mut dyn FnMut(u64) -> String,
    out: &mut Families,
    families: [(&str, &str); 2],
) -> Result<(), String> {
    let hists = read_hist_map(&p.loaded, "lat", |k| {
        use super::layout::stage_key as f;
        let (netns, stage) = (f::NETNS.u32(k)?, f::STAGE.u32(k)?);
        Some((u64::from(netns), stage))
    })?;
    for ((inode, stage), h) in hists {
        let (name, help) = families[usize::from(stage != 0)];
        out.sink(&prefix(inode))
            .emit_histogram(name, help, &[], &h.to_prometheus());
    }
    Ok(())
}

/// Reads a hash (or per-CPU hash) of `struct hist`, summing CPUs and keys that map to one label
/// tuple.
pub fn read_hist_map<K: Ord>(
    l: &Loaded,
    map: &str,
    mut key: impl FnMut(&[u8]) -> Option<K>,
) -> Result<BTreeMap<K, Log2Hist>, String> {
    let m = l.map(map).map_err(|e| e.to_string())?;
    let mut out: BTreeMap<K, Log2Hist> = BTreeMap::new();
    for (k, v) in m.entries().map_err(|e| format!("read map {map}: {e}"))? {
        let Some(k) = key(&k) else { continue };
        let h = out.entry(k).or_default();
        for cpu in m.split_percpu(&v) {
            h.add_raw(&cpu);
        }
    }
    Ok(out)
}

/// A NUL-terminated kernel string (device name) from a key.
pub fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_hist_is_cumulative_and_inf_equals_count() {
        let mut h = Log2Hist::default();
        h.slots[0] = 2; // < 2 ns: folded into the first bucket
        h.slots[20] = 3; // [1.05 ms, 2.1 ms)
        h.slots[HIST_SLOTS - 1] = 1; // >= 34 s: +Inf only
        h.sum_ns = 5_000_000;
        let p = h.to_prometheus();
        assert_eq!(p.count, 6);
        assert_eq!(p.buckets.first(), Some(&(1024e-9, 2)));
        assert!(p
            .buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let at = |le: f64| p.buckets.iter().find(|b| b.0 == le).unwrap().1;
        assert_eq!(at((1u64 << 20) as f64 / 1e9), 2);
        assert_eq!(at((1u64 << 21) as f64 / 1e9), 5);
        assert_eq!(p.buckets.last().unwrap().1, 5);
        assert_eq!(p.sum, 0.005);
    }
}
