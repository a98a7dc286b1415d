//! Perf event array consumer (the ring buffer's fallback on older kernels):
//! one `PERF_COUNT_SW_BPF_OUTPUT` event per online CPU, each with its own
//! mmap'd ring, stored in the map at the CPU's index. Records that wrap
//! around the ring end are copied into a scratch buffer; `PERF_RECORD_LOST`
//! counts are summed into [`PerfBuf::lost`].
// `unsafe` only to read published records out of the mapping ([`Mmap::bytes`]).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

use super::abi::{
    self, PerfEventAttr, BPF_ANY, PERF_DATA_HEAD, PERF_DATA_OFFSET, PERF_DATA_SIZE, PERF_DATA_TAIL,
    PERF_RECORD_LOST, PERF_RECORD_SAMPLE,
};
use super::error::{KError, KResult};
use super::fs;
use super::map::Map;
use super::sys::{self, Epoll, Mmap};

#[derive(Debug)]
struct CpuRing {
    cpu: usize,
    fd: OwnedFd,
    mmap: Mmap,
    data_off: usize,
    data_size: usize,
}

/// Per-CPU perf buffers for one perf event array.
#[derive(Debug)]
pub struct PerfBuf {
    rings: Vec<CpuRing>,
    epoll: Epoll,
    lost: u64,
    scratch: Vec<u8>,
    ready: Vec<u64>,
}

impl PerfBuf {
    /// Opens a ring of `pages` data pages (power of 2) on every online CPU
    /// and stores each event fd in `map` at the CPU's index.
    pub fn new(map: &Map, pages: usize) -> KResult<PerfBuf> {
        if map.map_type() != abi::MAP_PERF_EVENT_ARRAY {
            return Err(KError::unsupported(
                format!("perf buffer on map {}", map.name()),
                "not a BPF_MAP_TYPE_PERF_EVENT_ARRAY map",
            ));
        }
        if !pages.is_power_of_two() {
            return Err(KError::Io {
                what: format!("perf buffer of {pages} pages"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "pages must be a power of 2",
                ),
            });
        }
        let page = sys::page_size();
        let epoll = Epoll::new().map_err(|e| KError::io("epoll_create1", e))?;
        let mut rings = Vec::new();
        for cpu in fs::online_cpus()? {
            if cpu >= map.max_entries() as usize {
                continue;
            }
            let attr = PerfEventAttr {
                type_: abi::PERF_TYPE_SOFTWARE,
                size: abi::PERF_ATTR_SIZE,
                config: abi::PERF_COUNT_SW_BPF_OUTPUT,
                sample_type: abi::PERF_SAMPLE_RAW,
                sample_period: 1,
                wakeup_events: 1,
                ..Default::default()
            };
            let fd = sys::perf_event_open(&attr, -1, cpu as i32, -1, 0)
                .map_err(|e| KError::io(format!("perf_event_open BPF_OUTPUT cpu {cpu}"), e))?;
            let mmap = Mmap::map(fd.as_fd(), page * (1 + pages), true, 0)
                .map_err(|e| KError::io(format!("mmap perf buffer cpu {cpu}"), e))?;
            let data_off = match mmap.atomic_u64(PERF_DATA_OFFSET).load(Ordering::Relaxed) {
                0 => page,
                o => o as usize,
            };
            let data_size = match mmap.atomic_u64(PERF_DATA_SIZE).load(Ordering::Relaxed) {
                0 => page * pages,
                s => s as usize,
            };
            sys::perf_ioctl(fd.as_fd(), abi::PERF_EVENT_IOC_ENABLE, 0)
                .map_err(|e| KError::io("PERF_EVENT_IOC_ENABLE", e))?;
            let fdv = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32;
            map.update(&(cpu as u32).to_ne_bytes(), &fdv.to_ne_bytes(), BPF_ANY)?;
            epoll
                .add(fd.as_fd(), rings.len() as u64)
                .map_err(|e| KError::io("epoll_ctl perf buffer", e))?;
            rings.push(CpuRing {
                cpu,
                fd,
                mmap,
                data_off,
                data_size,
            });
        }
        Ok(PerfBuf {
            rings,
            epoll,
            lost: 0,
            scratch: Vec::new(),
            ready: Vec::new(),
        })
    }

    /// Samples the kernel dropped because a ring was full (from `PERF_RECORD_LOST`).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// CPUs with a ring.
    pub fn cpus(&self) -> Vec<usize> {
        self.rings.iter().map(|r| r.cpu).collect()
    }

    /// Calls `f(cpu, sample)` for every sample in every ring.
    pub fn consume(&mut self, mut f: impl FnMut(usize, &[u8])) -> usize {
        let mut n = 0;
        for i in 0..self.rings.len() {
            n += self.consume_ring(i, &mut f);
        }
        n
    }

    fn consume_ring(&mut self, i: usize, f: &mut impl FnMut(usize, &[u8])) -> usize {
        let r = &self.rings[i];
        let head = r.mmap.atomic_u64(PERF_DATA_HEAD).load(Ordering::Acquire);
        let mut tail = r.mmap.atomic_u64(PERF_DATA_TAIL).load(Ordering::Relaxed);
        let size = r.data_size as u64;
        let mut n = 0;
        while tail < head {
            let off = (tail % size) as usize;
            // Records are 8-byte aligned and sized, so the header never wraps.
            // SAFETY (this and the reads below): `tail < head`, head
            // acquire-loaded above, so the kernel published these bytes; it
            // reuses them only after the tail store at the end of the loop
            // body, when `h` and `rec` are gone.
            let h = unsafe { r.mmap.bytes(r.data_off + off, 8) };
            let ty = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
            let len = u16::from_ne_bytes([h[6], h[7]]) as usize;
            if len < 8 {
                break; // corrupt; stop rather than spin
            }
            let rec: &[u8] = if off + len <= r.data_size {
                // SAFETY: see above.
                unsafe { r.mmap.bytes(r.data_off + off, len) }
            } else {
                let first = r.data_size - off;
                self.scratch.clear();
                // SAFETY: see above.
                self.scratch
                    .extend_from_slice(unsafe { r.mmap.bytes(r.data_off + off, first) });
                // SAFETY: see above.
                self.scratch
                    .extend_from_slice(unsafe { r.mmap.bytes(r.data_off, len - first) });
                &self.scratch
            };
            match ty {
                PERF_RECORD_SAMPLE if rec.len() >= 12 => {
                    let sz = u32::from_ne_bytes([rec[8], rec[9], rec[10], rec[11]]) as usize;
                    let data = &rec[12..(12 + sz).min(rec.len())];
                    f(r.cpu, data);
                    n += 1;
                }
                PERF_RECORD_LOST if rec.len() >= 24 => {
                    // {header, u64 id, u64 lost, ...}: the count is at +16.
                    self.lost += u64::from_ne_bytes(rec[16..24].try_into().unwrap_or([0; 8]));
                }
                _ => {}
            }
            tail += len as u64;
        }
        fence(Ordering::SeqCst);
        r.mmap
            .atomic_u64(PERF_DATA_TAIL)
            .store(tail, Ordering::Release);
        n
    }

    /// Waits up to `timeout_ms` for data, then consumes every ring.
    pub fn poll(&mut self, timeout_ms: i32, mut f: impl FnMut(usize, &[u8])) -> KResult<usize> {
        let n = self.consume(&mut f);
        if n > 0 {
            return Ok(n);
        }
        self.ready.clear();
        self.epoll
            .wait(&mut self.ready, self.rings.len().max(1), timeout_ms)
            .map_err(|e| KError::io("epoll_wait perf buffer", e))?;
        Ok(self.consume(&mut f))
    }

    /// The perf event fd of each ring (for diagnostics).
    pub fn fds(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.rings.iter().map(|r| r.fd.as_fd())
    }
}
