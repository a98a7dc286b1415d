//! Throw-away network namespaces for the self-test, configured over raw rtnetlink (no `ip`/`tc`
//! binaries needed, so it works the same under busybox in the kernel-matrix guests).
//!
//! A namespace is created by a helper thread that `unshare`s and hands back an fd; work runs in
//! it on a scoped thread that `setns`es first. The namespace vanishes when the fd is dropped.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::sched::{unshare, CloneFlags};

/// A network namespace owned by the self-test.
pub struct TestNs {
    fd: OwnedFd,
    /// nsfs inode, as the exporter labels it.
    pub inode: u64,
}

impl TestNs {
    /// A fresh, empty network namespace (only `lo`, down).
    pub fn new() -> io::Result<TestNs> {
        std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let (fd, inode) = crate::sys::thread_netns()?;
            Ok(TestNs { fd, inode })
        })
        .join()
        .map_err(|_| io::Error::other("netns helper thread panicked"))?
    }

    /// The namespace's nsfs file descriptor (for `setns`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens, processes it spawns and
    /// `/proc/thread-self/net` all belong to the namespace).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                crate::sys::enter_netns(self.fd.as_fd())?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread in test namespace panicked"))?
        })
    }
}

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWQDISC: u16 = 36;

fn align4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

fn attr(v: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    align4(v);
}

/// Sends one request in the calling thread's namespace and waits for its ack.
fn request(ty: u16, flags: u16, body: &[u8]) -> io::Result<()> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: kernel fills in
    msg.extend_from_slice(body);
    sock.send(&msg, 0)?;
    let mut buf = Vec::with_capacity(8192);
    sock.recv(&mut buf, 0)?;
    // nlmsghdr (16) + nlmsgerr.error (i32)
    if buf.len() >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
        return Ok(());
    }
    Err(io::Error::other("rtnetlink: no ack"))
}

/// `struct ifinfomsg` with `index` and `flags` (changing only the flags given).
fn ifinfomsg(index: i32, flags: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0, 0]); // family, pad
    b.extend_from_slice(&0u16.to_ne_bytes()); // type
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes()); // change mask
    b
}

/// `ip link set lo up` (lo is ifindex 1 in every namespace).
pub fn lo_up() -> io::Result<()> {
    link_up(1)
}

/// `ip link set dev <ifindex> up`.
pub fn link_up(ifindex: u32) -> io::Result<()> {
    request(
        RTM_NEWLINK,
        0,
        &ifinfomsg(ifindex as i32, libc::IFF_UP as u32),
    )
}

/// `ip link add NAME index INDEX type veth peer name PEER index PEER_INDEX [netns PEER_NS]`: a
/// veth pair from the calling thread's namespace to `peer_ns` (`None`: both ends here), with
/// the ifindexes given (so that devices of two namespaces never share one; 0: the kernel
/// picks).
pub fn veth_pair(
    name: &str,
    index: u32,
    peer: &str,
    peer_index: u32,
    peer_ns: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_NET_NS_FD: u16 = 28;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const VETH_INFO_PEER: u16 = 1;
    let cstr = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    };
    let mut peer_msg = ifinfomsg(peer_index as i32, 0);
    attr(&mut peer_msg, IFLA_IFNAME, &cstr(peer));
    if let Some(ns) = peer_ns {
        attr(
            &mut peer_msg,
            IFLA_NET_NS_FD,
            &(ns.as_raw_fd() as u32).to_ne_bytes(),
        );
    }
    let mut data = Vec::new();
    attr(&mut data, VETH_INFO_PEER, &peer_msg);
    let mut info = Vec::new();
    attr(&mut info, IFLA_INFO_KIND, b"veth");
    attr(&mut info, IFLA_INFO_DATA, &data);
    let mut b = ifinfomsg(index as i32, 0);
    attr(&mut b, IFLA_IFNAME, &cstr(name));
    attr(&mut b, IFLA_LINKINFO, &info);
    request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &b)
}

/// `ip link set NAME up` / `down`.
pub fn link_set_up(name: &str, up: bool) -> io::Result<()> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0, 0]); // family, pad
    b.extend_from_slice(&0u16.to_ne_bytes()); // type
    b.extend_from_slice(&0i32.to_ne_bytes()); // index: by name
    let flags = if up { libc::IFF_UP as u32 } else { 0 };
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes()); // change mask
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    attr(&mut b, 3 /* IFLA_IFNAME */, &n);
    request(RTM_NEWLINK, 0, &b)
}

/// `ip addr add ADDR/PREFIX dev lo`.
pub fn lo_addr(addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    addr_add(1, addr, prefix)
}

/// `ip addr add ADDR/PREFIX dev <ifindex>`.
pub fn addr_add(ifindex: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut b = vec![
        libc::AF_INET as u8,
        prefix,
        0,
        0, /* scope host? universe */
    ];
    b.extend_from_slice(&ifindex.to_ne_bytes());
    attr(&mut b, 2 /* IFA_LOCAL */, &addr.octets());
    attr(&mut b, 1 /* IFA_ADDRESS */, &addr.octets());
    request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &b)
}

/// `ip route add blackhole NET/PREFIX`.
pub fn blackhole_route(net: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut b = vec![
        libc::AF_INET as u8,
        prefix,
        0,
        0,
        254, // RT_TABLE_MAIN
        3,   // RTPROT_BOOT
        0,   // RT_SCOPE_UNIVERSE
        6,   // RTN_BLACKHOLE
    ];
    b.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut b, 1 /* RTA_DST */, &net.octets());
    request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &b)
}

/// `tc qdisc add dev lo root tbf rate RATE(bytes/s) burst BURST(bytes) limit LIMIT(bytes)`.
pub fn lo_tbf(rate: u32, burst: u32, limit: u32) -> io::Result<()> {
    let mut b = vec![0u8, 0, 0, 0];
    b.extend_from_slice(&1i32.to_ne_bytes()); // ifindex of lo
    b.extend_from_slice(&0u32.to_ne_bytes()); // handle: kernel picks
    b.extend_from_slice(&0xFFFF_FFFFu32.to_ne_bytes()); // TC_H_ROOT
    b.extend_from_slice(&0u32.to_ne_bytes()); // info
    attr(&mut b, 1 /* TCA_KIND */, b"tbf\0");
    // struct tc_tbf_qopt { tc_ratespec rate, peakrate; u32 limit, buffer, mtu }
    let mut q = Vec::with_capacity(36);
    // tc_ratespec { u8 cell_log; u8 linklayer (1 = ethernet: no rate table needed);
    //               u16 overhead; i16 cell_align; u16 mpu; u32 rate }
    q.extend_from_slice(&[0, 1]);
    q.extend_from_slice(&[0; 6]);
    q.extend_from_slice(&rate.to_ne_bytes());
    q.extend_from_slice(&[0; 12]); // no peak rate
    q.extend_from_slice(&limit.to_ne_bytes());
    // buffer: the burst's transmission time in psched ticks (ns >> 6)
    let ticks = (u64::from(burst) * 1_000_000_000 / u64::from(rate.max(1))) >> 6;
    q.extend_from_slice(&(ticks.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    q.extend_from_slice(&0u32.to_ne_bytes()); // mtu
    let mut opts = Vec::new();
    attr(&mut opts, 1 /* TCA_TBF_PARMS */, &q);
    attr(&mut b, 2 /* TCA_OPTIONS */, &opts);
    request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, &b)
}

/// Turns IPv6 off in the calling thread's namespace so no router/neighbour solicitations
/// add packets to the counts (ignored where the kernel has no IPv6).
pub fn disable_ipv6() {
    for k in ["all", "default", "lo"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{k}/disable_ipv6"), "1");
    }
}
