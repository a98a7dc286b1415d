//! Thin wrappers over the few system calls the namespace machinery needs. All of netsleuth's
//! `unsafe` outside the BPF syscall/mmap/ABI modules lives here.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

/// `SO_NETNS_COOKIE` (Linux 5.14+): a 64-bit id of the socket's network namespace that the
/// kernel never reuses during a boot, unlike nsfs inode numbers.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Move the calling thread into the network namespace `fd` refers to.
pub fn enter_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Open a namespace file (`/proc/<pid>/ns/net` or a bind mount in `/run/netns`) and return it
/// with its nsfs inode.
pub fn open_netns(path: &Path) -> io::Result<(OwnedFd, u64)> {
    let f = File::open(path)?;
    let ino = f.metadata()?.ino();
    Ok((OwnedFd::from(f), ino))
}

/// The soft `RLIMIT_NOFILE`: how many file descriptors this process may hold.
pub fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (a shell's 1024 next to a hard limit of
/// 512k is common): the exporter keeps netlink sockets per namespace. Returns the new soft
/// limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// The calling thread's own network namespace, to return to after [`enter_netns`].
pub fn thread_netns() -> io::Result<(OwnedFd, u64)> {
    open_netns(Path::new("/proc/thread-self/ns/net"))
}

/// The cookie of the calling thread's current network namespace, or `None` where the kernel
/// does not support `SO_NETNS_COOKIE` (before 5.14).
pub fn current_netns_cookie() -> Option<u64> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    socket_netns_cookie(sock.as_fd())
}

/// `getsockopt(SO_NETNS_COOKIE)` on a socket.
pub fn socket_netns_cookie(sock: BorrowedFd<'_>) -> Option<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `sock` is a valid open fd for the duration of the call; `cookie` and `len` are
    // live, properly aligned locals, and `len` tells the kernel the buffer is 8 bytes, the exact
    // size of the u64 it writes for SO_NETNS_COOKIE.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 && len as usize == std::mem::size_of::<u64>() {
        Some(cookie)
    } else {
        None
    }
}

/// `pread(2)` into the spare capacity of `buf` (at least one byte of it must be free),
/// appending what was read: the bytes are not zeroed first. Zero-filling a read buffer for every
/// procfs file of every namespace was 4 % of a scrape's instructions.
pub fn pread_append(f: &std::fs::File, buf: &mut Vec<u8>, offset: u64) -> io::Result<usize> {
    let filled = buf.len();
    let spare = buf.spare_capacity_mut();
    assert!(!spare.is_empty(), "pread_append needs spare capacity");
    let room = spare.len();
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `f` is an open file for the duration of the call; `spare` is the vector's
    // allocated, unused tail, valid for writes of `spare.len()` bytes, and the kernel writes at
    // most that many bytes into it.
    let n = unsafe {
        libc::pread(
            f.as_raw_fd(),
            spare.as_mut_ptr().cast::<libc::c_void>(),
            spare.len(),
            offset,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    debug_assert!(n <= room);
    let len = filled + n.min(room);
    // SAFETY: the kernel initialized the first `n` bytes of the spare capacity (pread returns
    // how many it wrote, never more than asked for), so the first `len` bytes are initialized
    // and `len` is within the capacity.
    unsafe { buf.set_len(len) };
    Ok(n)
}

/// `SO_MEMINFO`'s `SK_MEMINFO_DROPS`: packets the kernel dropped for this socket (`sk_drops`;
/// for a netlink listener, each multicast message that did not fit its receive buffer).
/// `None` where the kernel lacks `SO_MEMINFO` (before 4.6).
pub fn socket_drops(sock: BorrowedFd<'_>) -> Option<u32> {
    const SO_MEMINFO: libc::c_int = 55;
    const SK_MEMINFO_DROPS: usize = 8;
    // SK_MEMINFO_VARS is 9 or more (kernels add fields); the kernel copies at most `len`.
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `sock` is a valid open fd for the duration of the call; `info` is a live local
    // array of `len` bytes, and the kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 && len as usize >= (SK_MEMINFO_DROPS + 1) * 4 {
        Some(info[SK_MEMINFO_DROPS])
    } else {
        None
    }
}

/// Limit glibc to two malloc arenas. Each thread that allocates otherwise gets an arena of its
/// own that keeps freed scrape buffers: with a worker per CPU and the HTTP threads, the exporter
/// held several times the memory a scrape needs. No effect with other allocators (musl).
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    {
        const M_ARENA_MAX: libc::c_int = -8;
        // SAFETY: mallopt only adjusts allocator tuning; it is called at start-up before any
        // other thread exists, and takes plain integers.
        unsafe {
            libc::mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Give memory freed after a scrape back to the system (glibc keeps it otherwise).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a plain integer and only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Restore the default SIGPIPE action for commands that only print (`probes`, `--help`): a
/// closed pipe (`netsleuth probes | head`) then ends the process quietly instead of making
/// `println!` panic. Not for `serve`, where a client hanging up must be a write error.
pub fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL is not a Rust handler, so no code runs in signal context; this happens
    // before any thread is started.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

/// Size of a memory page (sockstat's `mem` fields are in pages).
pub fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// Clock ticks per second (`/proc/<pid>/stat` times are in ticks).
pub fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 100,
    }
}

/// Count the entries of a `/proc/<pid>/fd` directory, and those whose link target satisfies
/// `matches` (only its first 16 bytes are read). One `readlinkat` per fd into a stack buffer,
/// no allocation per fd.
pub fn count_fd_links(dir: &Path, matches: impl Fn(&[u8]) -> bool) -> io::Result<(u64, u64)> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path; the returned stream is closed below.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `d` is a valid, open directory stream.
    let fd = unsafe { libc::dirfd(d) };
    let (mut all, mut hits) = (0u64, 0u64);
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: `d` is valid; readdir returns null at the end (or on error).
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: `ent` points at a dirent whose d_name is NUL-terminated, valid until the
        // next readdir on `d`.
        let name = unsafe { (*ent).d_name.as_ptr() };
        // SAFETY: as above; d_name has at least one byte (its terminator).
        let first = unsafe { *name } as u8;
        if first == b'.' {
            continue;
        }
        all += 1;
        // SAFETY: `fd` is the stream's open directory fd, `name` a NUL-terminated name and
        // `buf` a writable buffer of the given length.
        let n = unsafe { libc::readlinkat(fd, name, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 && matches(&buf[..n as usize]) {
            hits += 1;
        }
    }
    // SAFETY: `d` is open and not used afterwards.
    unsafe { libc::closedir(d) };
    Ok((all, hits))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()` and of `Instant`.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_stable_in_one_namespace() {
        let a = current_netns_cookie();
        let b = current_netns_cookie();
        assert_eq!(a, b);
    }

    #[test]
    fn fd_links_of_self() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (all, socks) =
            count_fd_links(Path::new("/proc/self/fd"), |t| t.starts_with(b"socket:[")).unwrap();
        assert!(all >= 4 && socks >= 1, "{all} {socks}");
        drop(s);
        assert!(count_fd_links(Path::new("/nonexistent"), |_| true).is_err());
    }

    #[test]
    fn thread_netns_matches_self() {
        let (_fd, ino) = thread_netns().unwrap();
        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_eq!(link.to_string_lossy(), format!("net:[{ino}]"));
    }
}
