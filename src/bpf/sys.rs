//! The one syscall choke point of the BPF kernel layer, plus the small unsafe
//! wrappers around shared memory (`mmap`) and `epoll` it needs.
//!
//! Every `bpf(2)`, `perf_event_open(2)` and perf `ioctl` goes through
//! [`syscall`]. Unit tests (`cfg(test)` only: the hook does not exist in other builds) replace
//! it with `override_syscall` to assert exact attribute encodings without root (aya's
//! `sys::fake` idea); what the kernel answers to those encodings is proven against the real
//! kernel in `tests/bpf_kernel.rs`.

#[cfg(test)]
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::abi::{self, EnableStatsAttr, PerfEventAttr, Pod};

/// One call into the kernel.
#[derive(Debug)]
pub enum Call<'a> {
    /// `bpf(cmd, attr, size)`.
    Bpf {
        /// Command.
        cmd: u32,
        /// The attribute bytes (the variant struct for `cmd`).
        attr: &'a mut [u8],
    },
    /// `perf_event_open(attr, pid, cpu, group_fd, flags)`.
    PerfEventOpen {
        /// Attributes.
        attr: &'a PerfEventAttr,
        /// pid (-1 any).
        pid: i32,
        /// cpu (-1 any).
        cpu: i32,
        /// group fd (-1 none).
        group: i32,
        /// `PERF_FLAG_*`.
        flags: u64,
    },
    /// `ioctl(fd, req, arg)` on a perf event fd.
    Ioctl {
        /// fd.
        fd: RawFd,
        /// request.
        req: u64,
        /// argument.
        arg: u64,
    },
}

#[cfg(test)]
type Hook = Box<dyn FnMut(&mut Call<'_>) -> io::Result<i64>>;

#[cfg(test)]
thread_local! {
    static OVERRIDE: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Routes this thread's syscalls to `f` until [`reset_syscall`] (unit tests only).
#[cfg(test)]
pub fn override_syscall(f: impl FnMut(&mut Call<'_>) -> io::Result<i64> + 'static) {
    OVERRIDE.with(|o| *o.borrow_mut() = Some(Box::new(f)));
}

/// Restores real syscalls on this thread (unit tests only).
#[cfg(test)]
pub fn reset_syscall() {
    OVERRIDE.with(|o| *o.borrow_mut() = None);
}

/// The choke point. Retries `EINTR`; `EAGAIN` from `BPF_PROG_LOAD` is retried
/// by the caller.
pub fn syscall(mut call: Call<'_>) -> io::Result<i64> {
    #[cfg(test)]
    {
        let hooked = OVERRIDE.with(|o| o.borrow_mut().as_mut().map(|f| f(&mut call)));
        if let Some(r) = hooked {
            return r;
        }
    }
    loop {
        let rc = match &mut call {
            // SAFETY: `attr` is a live, exclusively borrowed buffer of exactly
            // `attr.len()` bytes; the kernel reads/writes at most that many.
            Call::Bpf { cmd, attr } => unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    *cmd as libc::c_long,
                    attr.as_mut_ptr(),
                    attr.len() as libc::c_long,
                )
            },
            // SAFETY: `attr` points to a full `perf_event_attr` whose `size`
            // field the caller sets to at most `size_of::<PerfEventAttr>()`.
            Call::PerfEventOpen {
                attr,
                pid,
                cpu,
                group,
                flags,
            } => unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    *attr as *const PerfEventAttr,
                    *pid as libc::c_long,
                    *cpu as libc::c_long,
                    *group as libc::c_long,
                    *flags as libc::c_ulong,
                )
            },
            // SAFETY: the perf ioctls we issue take an integer argument (an fd
            // or 0), never a pointer, so no memory is accessed through `arg`.
            Call::Ioctl { fd, req, arg } => unsafe {
                libc::ioctl(*fd, *req as libc::Ioctl, *arg as libc::c_ulong) as libc::c_long
            },
        };
        if rc >= 0 {
            return Ok(rc as i64);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn bytes_of<T: Pod>(t: &mut T) -> &mut [u8] {
    // SAFETY: `T: Pod` is a #[repr(C)] struct without implicit padding in
    // which every byte pattern is valid, so viewing it as bytes is sound; the
    // slice borrows `t` exclusively for its lifetime.
    unsafe { std::slice::from_raw_parts_mut((t as *mut T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// `bpf(cmd, attr)`, returning the non-negative result.
pub fn bpf<T: Pod>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    syscall(Call::Bpf {
        cmd,
        attr: bytes_of(attr),
    })
}

/// `bpf(cmd, attr)` for commands that return a new fd.
pub fn bpf_fd<T: Pod>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    owned(fd)
}

/// `BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)`: the kernel accounts every program's run time and
/// run count (`bpf_prog_info.run_time_ns`/`run_cnt`) while the returned fd stays open
/// (Linux 5.8+, CAP_SYS_ADMIN).
pub fn enable_run_time_stats() -> io::Result<OwnedFd> {
    let mut a = EnableStatsAttr {
        type_: abi::BPF_STATS_RUN_TIME,
    };
    bpf_fd(abi::BPF_ENABLE_STATS, &mut a)
}

/// `perf_event_open` with `PERF_FLAG_FD_CLOEXEC` added.
pub fn perf_event_open(
    attr: &PerfEventAttr,
    pid: i32,
    cpu: i32,
    group: i32,
    flags: u64,
) -> io::Result<OwnedFd> {
    let fd = syscall(Call::PerfEventOpen {
        attr,
        pid,
        cpu,
        group,
        flags: flags | super::abi::PERF_FLAG_FD_CLOEXEC,
    })?;
    owned(fd)
}

/// A perf event ioctl with an integer argument.
pub fn perf_ioctl(fd: BorrowedFd<'_>, req: u64, arg: u64) -> io::Result<i64> {
    syscall(Call::Ioctl {
        fd: fd.as_raw_fd(),
        req,
        arg,
    })
}

/// Takes ownership of a kernel-returned fd, moving it to ≥ 3 (the BPF UAPI
/// treats fd 0 as "none" in places) and keeping it close-on-exec.
fn owned(fd: i64) -> io::Result<OwnedFd> {
    let raw = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `raw` as a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if raw >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd or -1.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh fd from fcntl, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// The address of a value, as the kernel's `__aligned_u64` pointer fields want it.
pub fn addr<T: ?Sized>(p: &T) -> u64 {
    p as *const T as *const u8 as usize as u64
}

/// The address of a mutable buffer (for fields the kernel writes through).
pub fn addr_mut<T: ?Sized>(p: &mut T) -> u64 {
    p as *mut T as *mut u8 as usize as u64
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// A shared mapping of a kernel object (ring buffer or perf ring); unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; concurrent access goes through
// atomics or through byte ranges the ring protocol hands to one reader.
unsafe impl Send for Mmap {}

impl Mmap {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`.
    pub fn map(fd: BorrowedFd<'_>, len: usize, writable: bool, offset: usize) -> io::Result<Mmap> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping at a kernel-chosen address; no existing
        // memory is affected. The result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: p.cast(), len })
    }

    /// Mapping length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (mappings are never empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The 8-byte word at `off` as an atomic (positions shared with the kernel).
    pub fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off <= self.len && self.len - off >= 8,
            "atomic_u64 out of range"
        );
        // SAFETY: in bounds and 8-aligned (mappings are page-aligned); the
        // kernel only accesses this word atomically (smp_load_acquire /
        // smp_store_release), so an AtomicU64 view is the right model.
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    /// The 4-byte word at `off` as an atomic (ring buffer record headers).
    pub fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0 && off <= self.len && self.len - off >= 4,
            "atomic_u32 out of range"
        );
        // SAFETY: in bounds and 4-aligned; the kernel publishes record headers
        // with smp_store_release, which pairs with our acquire load.
        unsafe { &*(self.ptr.add(off) as *const AtomicU32) }
    }

    /// `len` bytes at `off` (panics when the range is outside the mapping).
    ///
    /// # Safety
    ///
    /// The kernel must not write `off..off + len` while the returned slice
    /// lives. The ring protocols guarantee that for a range between its
    /// publication (head/header acquire-loaded by the caller) and our release
    /// of it (tail/consumer position store): the caller must have done the
    /// former and must not do the latter before dropping the slice.
    pub unsafe fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(
            off <= self.len && len <= self.len - off,
            "mmap range out of bounds"
        );
        // SAFETY: in bounds of a live mapping; see the ring protocol note above.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A minimal epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; result checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability, reporting `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1 forever); pushes ready tokens into `out`.
    pub fn wait(&self, out: &mut Vec<u64>, max: usize, timeout_ms: i32) -> io::Result<usize> {
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; max.max(1)];
        // SAFETY: `evs` has room for `evs.len()` events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                evs.as_mut_ptr(),
                evs.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(e);
        }
        out.extend(evs[..n as usize].iter().map(|e| e.u64));
        Ok(n as usize)
    }
}

/// `getrlimit(RLIMIT_MEMLOCK)` as (soft, hard).
pub fn memlock_limit() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Ok((r.rlim_cur as u64, r.rlim_max as u64))
}

/// `setrlimit(RLIMIT_MEMLOCK, {soft, hard})`.
pub fn set_memlock_limit(soft: u64, hard: u64) -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `r` is a valid in-pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::abi::{MapElemAttr, BPF_MAP_LOOKUP_ELEM};
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    #[test]
    fn override_sees_exact_attr_bytes() {
        override_syscall(|c| match c {
            Call::Bpf { cmd, attr } => {
                assert_eq!(*cmd, BPF_MAP_LOOKUP_ELEM);
                assert_eq!(attr.len(), 32);
                assert_eq!(&attr[0..4], &7u32.to_ne_bytes());
                Ok(0)
            }
            _ => panic!("unexpected call"),
        });
        let mut a = MapElemAttr {
            map_fd: 7,
            ..Default::default()
        };
        assert_eq!(bpf(BPF_MAP_LOOKUP_ELEM, &mut a).unwrap(), 0);
        reset_syscall();
    }

    /// The bounds checks of the safe accessors returning references into a
    /// mapping computed `off + 8 <= len`, which wraps for `off` near
    /// `usize::MAX` in release builds and let the check pass: a reference far
    /// outside the mapping. They must panic with their own message instead.
    #[test]
    fn regression_mmap_bounds_overflow() {
        let zero = std::fs::File::open("/dev/zero").unwrap();
        let m = Mmap::map(zero.as_fd(), 4096, false, 0).unwrap();
        let msg = |r: std::thread::Result<()>| -> String {
            let e = r.expect_err("out-of-range access must panic");
            e.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        };
        let m = std::panic::AssertUnwindSafe(&m);
        for off in [usize::MAX - 7, usize::MAX - 3, 4096, 4092 + 8] {
            let r = std::panic::catch_unwind(|| {
                m.atomic_u64(off & !7);
            });
            assert_eq!(msg(r), "atomic_u64 out of range", "off {off}");
            let r = std::panic::catch_unwind(|| {
                m.atomic_u32(off & !3);
            });
            assert_eq!(msg(r), "atomic_u32 out of range", "off {off}");
            let r = std::panic::catch_unwind(|| {
                // SAFETY: read-only /dev/zero mapping nobody writes; the
                // call must panic before forming a slice anyway.
                let _ = unsafe { m.bytes(off, 8) };
            });
            assert_eq!(msg(r), "mmap range out of bounds", "off {off}");
        }
        // In range still works.
        assert_eq!(m.atomic_u64(4088).load(Ordering::Relaxed), 0);
        assert_eq!(m.atomic_u32(4092).load(Ordering::Relaxed), 0);
        // SAFETY: as above.
        assert_eq!(unsafe { m.bytes(4088, 8) }, &[0u8; 8]);
    }
}
