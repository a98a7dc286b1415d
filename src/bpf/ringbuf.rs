//! BPF ring buffer consumer (`BPF_MAP_TYPE_RINGBUF`): the consumer page mapped
//! read-write, the producer page and the data area (mapped twice, so a record
//! that wraps is contiguous) read-only; epoll on the map fd.
//!
//! Ordering (libbpf `ringbuf_process_ring`, aya 7277a57e): acquire-load the
//! producer position and each record header (the kernel publishes both with
//! release stores), skip records with the BUSY bit (not committed yet), drop
//! DISCARDed ones, release-store the consumer position after each record and
//! fence before looking at the producer position again.
// `unsafe` only to read published records out of the mapping ([`Mmap::bytes`]).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

use super::abi::{RINGBUF_BUSY_BIT, RINGBUF_DISCARD_BIT, RINGBUF_HDR_SZ};
use super::error::{KError, KResult};
use super::map::Map;
use super::sys::{self, Epoll, Mmap};

/// A ring buffer consumer.
#[derive(Debug)]
pub struct RingBuf {
    _fd: OwnedFd,
    consumer: Mmap,
    producer: Mmap,
    page: usize,
    mask: u64,
    epoll: Epoll,
    lost: Option<Map>,
    ready: Vec<u64>,
}

impl RingBuf {
    /// Maps ring buffer `map`.
    pub fn new(map: &Map) -> KResult<RingBuf> {
        if map.map_type() != super::abi::MAP_RINGBUF {
            return Err(KError::unsupported(
                format!("ring buffer on map {}", map.name()),
                "not a BPF_MAP_TYPE_RINGBUF map",
            ));
        }
        let fd = map
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| KError::io("dup ring buffer fd", e))?;
        let page = sys::page_size();
        let size = map.max_entries() as usize;
        let consumer = Mmap::map(fd.as_fd(), page, true, 0)
            .map_err(|e| KError::io(format!("mmap ring buffer {} consumer page", map.name()), e))?;
        let producer = Mmap::map(fd.as_fd(), page + 2 * size, false, page)
            .map_err(|e| KError::io(format!("mmap ring buffer {} data", map.name()), e))?;
        let epoll = Epoll::new().map_err(|e| KError::io("epoll_create1", e))?;
        epoll
            .add(fd.as_fd(), 0)
            .map_err(|e| KError::io("epoll_ctl ring buffer", e))?;
        Ok(RingBuf {
            _fd: fd,
            consumer,
            producer,
            page,
            mask: size as u64 - 1,
            epoll,
            lost: None,
            ready: Vec::new(),
        })
    }

    /// Uses key 0 of `map` (a plain or per-CPU u64 array bumped by the BPF
    /// side when `bpf_ringbuf_reserve` fails) as the lost-record count.
    pub fn set_lost_counter(&mut self, map: &Map) -> KResult<()> {
        self.lost = Some(map.reopen()?);
        Ok(())
    }

    /// Records the BPF side could not reserve (0 without a lost counter).
    pub fn lost(&self) -> KResult<u64> {
        match &self.lost {
            Some(m) => m.get_u64(&0u32.to_ne_bytes()),
            None => Ok(0),
        }
    }

    /// Calls `f` on every committed record; returns how many were delivered.
    pub fn consume(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let cons_pos = self.consumer.atomic_u64(0);
        let prod_pos = self.producer.atomic_u64(0);
        let mut cons = cons_pos.load(Ordering::Acquire);
        let mut n = 0;
        loop {
            let prod = prod_pos.load(Ordering::Acquire);
            let mut progressed = false;
            while cons < prod {
                let off = self.page + (cons & self.mask) as usize;
                let hdr = self.producer.atomic_u32(off).load(Ordering::Acquire);
                if hdr & RINGBUF_BUSY_BIT != 0 {
                    break;
                }
                let len = hdr & !(RINGBUF_BUSY_BIT | RINGBUF_DISCARD_BIT);
                if hdr & RINGBUF_DISCARD_BIT == 0 {
                    // SAFETY: the record was published (header acquire-loaded
                    // above without the busy bit) and is released only by the
                    // consumer-position store below, after `f` returned and
                    // the slice is gone.
                    let rec = unsafe {
                        self.producer
                            .bytes(off + RINGBUF_HDR_SZ as usize, len as usize)
                    };
                    f(rec);
                    n += 1;
                }
                cons += u64::from((len + RINGBUF_HDR_SZ + 7) & !7);
                cons_pos.store(cons, Ordering::Release);
                progressed = true;
            }
            // Order our consumer store before re-reading the producer position.
            fence(Ordering::SeqCst);
            if !progressed {
                return n;
            }
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) for data, then consumes.
    pub fn poll(&mut self, timeout_ms: i32, f: impl FnMut(&[u8])) -> KResult<usize> {
        let mut f = f;
        let n = self.consume(&mut f);
        if n > 0 {
            return Ok(n);
        }
        self.ready.clear();
        self.epoll
            .wait(&mut self.ready, 1, timeout_ms)
            .map_err(|e| KError::io("epoll_wait ring buffer", e))?;
        Ok(self.consume(&mut f))
    }

    /// Bytes committed but not consumed yet.
    pub fn pending(&self) -> u64 {
        let c = self.consumer.atomic_u64(0).load(Ordering::Acquire);
        let p = self.producer.atomic_u64(0).load(Ordering::Acquire);
        p.saturating_sub(c)
    }
}
