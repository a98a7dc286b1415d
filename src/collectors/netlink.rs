//! Netlink plumbing shared by the netlink probes (`tcpsummary`, `qdisc`).
//!
//! Two halves, kept apart so the protocol handling can be tested and fuzzed without a kernel:
//!
//! - [`walk`]: a pure walker over a byte buffer holding one or more netlink messages (one
//!   received datagram, or several concatenated, as in the fixture files). It frames the
//!   messages with `netlink-packet-core`'s checked [`NetlinkBuffer`], hands every data message
//!   to a callback and recognises `NLMSG_DONE` and `NLMSG_ERROR`.
//! - [`DumpSocket`]: a `netlink-sys` socket opened in the calling thread's network namespace
//!   (the engine has `setns`'d the thread), with a receive timeout so a wedged namespace cannot
//!   stall a scrape, and [`DumpSocket::dump`], which sends one dump request and feeds every
//!   datagram of the reply to [`walk`] until `NLMSG_DONE`. The socket is closed on drop.
//!
//! Dumps stream: each datagram is parsed as it arrives into a receive buffer that is reused
//! (one per thread), so a namespace with 100k sockets costs no more memory than one with ten.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::Socket;

/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`.
const NLMSG_OVERRUN: u16 = 4;
/// Length of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

/// How long one dump may take before the namespace is given up.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

/// Receive buffer size. The kernel fills dump datagrams up to 32 KiB when the reader offers
/// that much; 64 KiB leaves room, and a larger datagram is detected (`MSG_TRUNC`), not cut.
const RECV_BUF: usize = 64 * 1024;

/// What went wrong with a netlink dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NlError {
    /// The kernel answered with an error (`NLMSG_ERROR`, or an error code in `NLMSG_DONE`).
    /// Positive errno.
    Errno(i32),
    /// The reply is not well-formed netlink.
    Malformed(String),
    /// A socket call failed (`what` names the call).
    Io { what: &'static str, errno: i32 },
    /// No complete reply within [`DUMP_TIMEOUT`].
    Timeout,
    /// No socket of this protocol is kept for the namespace and the collecting thread is not
    /// inside it, so none can be opened there.
    NoSocket,
}

/// `ENOENT`, `EINVAL`... for an errno number, or the number.
pub fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        format!("errno {errno}")
    } else {
        format!("{e:?}")
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NlError::Errno(e) => write!(
                f,
                "kernel answered {} ({})",
                errno_name(*e),
                std::io::Error::from_raw_os_error(*e)
            ),
            NlError::Malformed(m) => write!(f, "malformed reply: {m}"),
            NlError::Io { what, errno } => write!(
                f,
                "{what}: {} ({})",
                errno_name(*errno),
                std::io::Error::from_raw_os_error(*errno)
            ),
            NlError::Timeout => write!(f, "no reply within {}s", DUMP_TIMEOUT.as_secs()),
            NlError::NoSocket => write!(
                f,
                "no netlink socket kept for this namespace and the thread is not inside it"
            ),
        }
    }
}

impl std::error::Error for NlError {}

/// Callback for each data message of a dump: `(nlmsg_type, payload)`; an `Err` says why the
/// payload is malformed.
pub type OnMessage<'a> = dyn FnMut(u16, &[u8]) -> Result<(), String> + 'a;

/// Walk the netlink messages in `bytes`.
///
/// Calls `on_msg(message_type, payload)` for every message that is not a control message.
/// Returns `Ok(true)` when an `NLMSG_DONE` was seen (messages after it are ignored), `Ok(false)`
/// when the buffer ended without one (more datagrams follow). When `seq` is given, messages
/// with another sequence number (a late answer to an earlier request) are skipped. An
/// `NLMSG_ERROR` with a non-zero code, or an `NLMSG_DONE` carrying a negative code (a dump that
/// failed midway), is [`NlError::Errno`]. A message whose length is below the header size or
/// runs past the buffer is [`NlError::Malformed`]; so is an error from `on_msg`.
pub fn walk(bytes: &[u8], seq: Option<u32>, on_msg: &mut OnMessage<'_>) -> Result<bool, NlError> {
    walk_with_flags(bytes, seq, &mut |ty, _flags, p| on_msg(ty, p))
}

/// Callback of [`walk_with_flags`]: `(nlmsg_type, nlmsg_flags, payload)`.
pub type OnMessageFlags<'a> = dyn FnMut(u16, u16, &[u8]) -> Result<(), String> + 'a;

/// [`walk`], also handing each data message's `nlmsg_flags` to the callback (ctnetlink tells a
/// new conntrack from an update by `NLM_F_CREATE` alone).
pub fn walk_with_flags(
    bytes: &[u8],
    seq: Option<u32>,
    on_msg: &mut OnMessageFlags<'_>,
) -> Result<bool, NlError> {
    let mut off = 0usize;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let msg = NetlinkBuffer::new_checked(rest)
            .map_err(|e| NlError::Malformed(format!("message at offset {off}: {e}")))?;
        let len = msg.length() as usize;
        let ty = msg.message_type();
        let payload = &rest[NLMSG_HDRLEN..len];
        if seq.is_none_or(|s| s == msg.sequence_number()) {
            match ty {
                NLMSG_DONE => {
                    // The kernel puts the dump's final status (0 or -errno) in the payload.
                    if let Some(code) = read_i32(payload) {
                        if code < 0 {
                            return Err(NlError::Errno(code.saturating_neg()));
                        }
                    }
                    return Ok(true);
                }
                NLMSG_ERROR => {
                    let code = read_i32(payload).ok_or_else(|| {
                        NlError::Malformed(format!(
                            "NLMSG_ERROR at offset {off} has a {}-byte payload",
                            payload.len()
                        ))
                    })?;
                    if code != 0 {
                        return Err(NlError::Errno(code.saturating_neg()));
                    }
                    // An ACK: not expected for a dump, harmless.
                }
                NLMSG_OVERRUN => {
                    return Err(NlError::Malformed(
                        "NLMSG_OVERRUN: data lost, the reply is incomplete".into(),
                    ))
                }
                1 => {} // NLMSG_NOOP
                _ => on_msg(ty, msg.flags(), payload).map_err(|e| {
                    NlError::Malformed(format!("message type {ty} at offset {off}: {e}"))
                })?,
            }
        }
        // NLMSG_ALIGN; the last message of a datagram may lack the padding.
        off = off.saturating_add((len + 3) & !3);
    }
    Ok(false)
}

/// Whether `bytes` hold an `NLMSG_ERROR` with code 0 (an ack) for request `seq`.
fn acked(bytes: &[u8], seq: u32) -> bool {
    let mut off = 0usize;
    while let Ok(msg) = NetlinkBuffer::new_checked(&bytes[off.min(bytes.len())..]) {
        let len = msg.length() as usize;
        if msg.message_type() == NLMSG_ERROR && msg.sequence_number() == seq {
            return read_i32(&bytes[off + NLMSG_HDRLEN..off + len]) == Some(0);
        }
        off = off.saturating_add((len + 3) & !3);
    }
    false
}

/// A request given as its netlink message type and payload bytes (generic netlink families,
/// whose message type is the family id resolved at run time).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub message_type: u16,
    pub payload: Vec<u8>,
}

impl NetlinkSerializable for RawRequest {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        self.payload.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.payload);
    }
}

/// Append a netlink attribute (`struct nlattr` + value, padded to 4 bytes) to `buf`.
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn read_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

thread_local! {
    /// Receive buffer, reused by every dump on this (worker) thread.
    static RECV: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A netlink socket for dumps, bound in the calling thread's network namespace.
pub struct DumpSocket {
    sock: Socket,
    seq: u32,
}

impl DumpSocket {
    /// Open a socket of `protocol` (`netlink_sys::protocols::NETLINK_ROUTE`...). The socket
    /// belongs to the network namespace of the calling thread.
    pub fn open(protocol: isize) -> Result<Self, NlError> {
        let io = |what| {
            move |e: std::io::Error| NlError::Io {
                what,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            }
        };
        // Not bound: the kernel gives the socket a port id with its first send.
        let sock = Socket::new(protocol).map_err(io("socket(AF_NETLINK)"))?;
        // Each recv waits at most the whole budget; `dump` also checks the total.
        let tv = nix::sys::time::TimeVal::new(DUMP_TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| NlError::Io {
                what: "setsockopt(SO_RCVTIMEO)",
                errno: e as i32,
            })?;
        Ok(DumpSocket { sock, seq: 0 })
    }

    /// Send `request` as a dump (`NLM_F_REQUEST | NLM_F_DUMP`) and pass every data message
    /// of the reply to `on_msg` (see [`walk`]), until `NLMSG_DONE`.
    pub fn dump<M>(&mut self, request: M, on_msg: &mut OnMessage<'_>) -> Result<(), NlError>
    where
        M: NetlinkSerializable + fmt::Debug,
    {
        let seq = self.send(request, NLM_F_REQUEST | NLM_F_DUMP)?;
        self.receive(seq, true, on_msg)
    }

    /// Send `request` as a plain `NLM_F_REQUEST` (one object, e.g. one link by index) and pass
    /// the data message(s) of its one-datagram reply to `on_msg`. An object that does not
    /// exist is `Err(NlError::Errno(ENODEV))` (or whatever the kernel answers).
    ///
    /// Only for requests answered by a single message, like `RTM_GETLINK` by index: a
    /// multi-part reply (`NLM_F_MULTI` ... `NLMSG_DONE`) needs [`DumpSocket::dump`].
    pub fn get<M>(&mut self, request: M, on_msg: &mut OnMessage<'_>) -> Result<(), NlError>
    where
        M: NetlinkSerializable + fmt::Debug,
    {
        let seq = self.send(request, NLM_F_REQUEST)?;
        self.receive(seq, false, on_msg)
    }

    /// Send `request` with `NLM_F_REQUEST | NLM_F_ACK | flags` (a change: `NLM_F_CREATE`...)
    /// and wait for the kernel's acknowledgement; its error code is [`NlError::Errno`].
    pub fn ack<M>(&mut self, request: M, flags: u16) -> Result<(), NlError>
    where
        M: NetlinkSerializable + fmt::Debug,
    {
        let seq = self.send(request, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        let deadline = Instant::now() + DUMP_TIMEOUT;
        let mut buf = Vec::with_capacity(8192);
        loop {
            buf.clear();
            if let Err(e) = self.sock.recv(&mut buf, 0) {
                match recv_failure(&e) {
                    None => continue,
                    Some(err) => return Err(err),
                }
            }
            // `walk` turns a non-zero code into `Errno`; a zero-code NLMSG_ERROR is the ack.
            walk(&buf, Some(seq), &mut |_, _| Ok(()))?;
            if acked(&buf, seq) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(NlError::Timeout);
            }
        }
    }

    fn send<M>(&mut self, request: M, flags: u16) -> Result<u32, NlError>
    where
        M: NetlinkSerializable + fmt::Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        msg.finalize();
        let mut req = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut req);
        self.sock.send(&req, 0).map_err(|e| NlError::Io {
            what: "send",
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
        Ok(seq)
    }

    /// Receive the reply to request `seq`: until `NLMSG_DONE` for a dump, else the first
    /// datagram that answers it (datagrams answering older requests are skipped).
    fn receive(
        &mut self,
        seq: u32,
        until_done: bool,
        on_msg: &mut OnMessage<'_>,
    ) -> Result<(), NlError> {
        let deadline = Instant::now() + DUMP_TIMEOUT;
        RECV.with(|cell| {
            // A nested dump on this thread (not expected) gets its own buffer.
            let mut own = Vec::new();
            let mut borrowed = cell.try_borrow_mut();
            let buf: &mut Vec<u8> = match borrowed.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut own,
            };
            loop {
                buf.clear();
                buf.reserve(RECV_BUF);
                let n = match self.sock.recv(buf, libc::MSG_TRUNC) {
                    Ok(n) => n,
                    Err(e) => match recv_failure(&e) {
                        None => continue,
                        Some(err) => return Err(err),
                    },
                };
                if n > buf.len() {
                    return Err(NlError::Malformed(format!(
                        "datagram of {n} bytes exceeds the {}-byte receive buffer",
                        buf.len()
                    )));
                }
                let mut answered = false;
                let done = walk(buf, Some(seq), &mut |ty, p| {
                    answered = true;
                    on_msg(ty, p)
                })?;
                if done || (!until_done && answered) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(NlError::Timeout);
                }
            }
        })
    }
}

/// Netlink sockets kept open for one network namespace (see
/// [`super::NetnsHandles`]): a netlink socket stays bound to the namespace it was created in,
/// wherever the thread that uses it is. They are opened once, by a thread inside the
/// namespace.
#[derive(Default)]
pub struct KeptSockets {
    socks: std::sync::Mutex<Vec<(isize, DumpSocket)>>,
}

impl KeptSockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(isize, DumpSocket)>> {
        self.socks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open a socket for each of `protocols` not kept yet. The calling thread must be inside
    /// the namespace these sockets are kept for.
    pub fn open_missing(&self, protocols: &[isize]) -> Result<(), NlError> {
        let mut socks = self.lock();
        for &p in protocols {
            if !socks.iter().any(|(q, _)| *q == p) {
                socks.push((p, DumpSocket::open(p)?));
            }
        }
        Ok(())
    }

    /// True if a socket of every one of `protocols` is kept.
    pub fn has_all(&self, protocols: &[isize]) -> bool {
        let socks = self.lock();
        protocols.iter().all(|p| socks.iter().any(|(q, _)| q == p))
    }

    /// How many sockets are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run `f` with the kept socket of `protocol` ([`NlError::NoSocket`] if there is none).
    /// A socket whose exchange failed other than by the kernel's answer (a timeout, a
    /// malformed or truncated reply, a failed call) is closed, not kept: it may still hold
    /// the rest of a reply. The next collection enters the namespace once to open another.
    pub fn with<T>(
        &self,
        protocol: isize,
        f: impl FnOnce(&mut DumpSocket) -> Result<T, NlError>,
    ) -> Result<T, NlError> {
        let mut socks = self.lock();
        let i = socks
            .iter()
            .position(|(q, _)| *q == protocol)
            .ok_or(NlError::NoSocket)?;
        let r = f(&mut socks[i].1);
        if matches!(
            r,
            Err(NlError::Timeout | NlError::Malformed(_) | NlError::Io { .. })
        ) {
            socks.swap_remove(i);
        }
        r
    }
}

/// What a failed `recv` means: `None` to try again (interrupted), else the error; the socket's
/// receive timeout (`EAGAIN`) is [`NlError::Timeout`].
fn recv_failure(e: &std::io::Error) -> Option<NlError> {
    match e.raw_os_error() {
        Some(libc::EINTR) => None,
        Some(libc::EAGAIN) => Some(NlError::Timeout),
        other => Some(NlError::Io {
            what: "recv",
            errno: other.unwrap_or(libc::EIO),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    type Seen = Vec<(u16, Vec<u8>)>;

    fn collect(bytes: &[u8], seq: Option<u32>) -> (Result<bool, NlError>, Seen) {
        let mut seen = Vec::new();
        let r = walk(bytes, seq, &mut |t, p| {
            seen.push((t, p.to_vec()));
            Ok(())
        });
        (r, seen)
    }

    #[test]
    fn walks_messages_until_done() {
        let mut b = msg(20, 1, b"abcd");
        b.extend(msg(20, 1, b"xyz")); // padded to 4
        b.extend(msg(NLMSG_DONE, 1, &0i32.to_ne_bytes()));
        b.extend(msg(20, 1, b"after done"));
        let (r, seen) = collect(&b, Some(1));
        assert_eq!(r, Ok(true));
        assert_eq!(seen, vec![(20, b"abcd".to_vec()), (20, b"xyz".to_vec())]);
    }

    #[test]
    fn no_done_means_more_to_come() {
        let (r, seen) = collect(&msg(20, 1, b"abcd"), None);
        assert_eq!(r, Ok(false));
        assert_eq!(seen.len(), 1);
        assert_eq!(collect(b"", None).0, Ok(false));
    }

    #[test]
    fn other_sequence_numbers_are_skipped() {
        let mut b = msg(20, 7, b"late");
        b.extend(msg(NLMSG_DONE, 7, &(-5i32).to_ne_bytes()));
        b.extend(msg(20, 8, b"mine"));
        b.extend(msg(NLMSG_DONE, 8, &0i32.to_ne_bytes()));
        let (r, seen) = collect(&b, Some(8));
        assert_eq!(r, Ok(true));
        assert_eq!(seen, vec![(20, b"mine".to_vec())]);
    }

    #[test]
    fn errors_carry_the_errno() {
        let mut p = (-libc::ENOENT).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; 16]); // the original request header
        assert_eq!(
            collect(&msg(NLMSG_ERROR, 1, &p), None).0,
            Err(NlError::Errno(libc::ENOENT))
        );
        // A dump that failed midway reports the error in NLMSG_DONE.
        assert_eq!(
            collect(&msg(NLMSG_DONE, 1, &(-libc::EINTR).to_ne_bytes()), None).0,
            Err(NlError::Errno(libc::EINTR))
        );
        // An ACK is not an error.
        assert_eq!(collect(&msg(NLMSG_ERROR, 1, &[0; 20]), None).0, Ok(false));
        // A short error payload is malformed, not a panic.
        assert!(matches!(
            collect(&msg(NLMSG_ERROR, 1, &[1, 2]), None).0,
            Err(NlError::Malformed(_))
        ));
        assert_eq!(
            NlError::Errno(libc::EAFNOSUPPORT).to_string(),
            "kernel answered EAFNOSUPPORT (Address family not supported by protocol (os error 97))"
        );
    }

    #[test]
    fn bad_lengths_are_errors() {
        let good = msg(20, 1, b"abcdefgh");
        // Truncated anywhere.
        for cut in 1..good.len() {
            let (r, _) = collect(&good[..cut], None);
            assert!(
                matches!(r, Err(NlError::Malformed(_))),
                "cut at {cut}: {r:?}"
            );
        }
        // nlmsg_len below the header size (would loop forever if trusted) or past the end.
        for bad_len in [0u32, 4, 15, 25, u32::MAX] {
            let mut b = good.clone();
            b[..4].copy_from_slice(&bad_len.to_ne_bytes());
            let (r, _) = collect(&b, None);
            assert!(
                matches!(r, Err(NlError::Malformed(_))),
                "len {bad_len}: {r:?}"
            );
        }
    }

    #[test]
    fn callback_errors_are_reported_with_the_offset() {
        let mut b = msg(20, 1, b"ok..");
        b.extend(msg(21, 1, b"bad."));
        let r = walk(&b, None, &mut |t, _| {
            if t == 21 {
                Err("nope".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(
            r,
            Err(NlError::Malformed(
                "message type 21 at offset 20: nope".into()
            ))
        );
    }
}

/// Root-only: both netlink probes against a namespace this test creates, checked against what
/// `ss` and `tc` report right after. Skipped (with the reason printed) without root, unless
/// `NETSLEUTH_REQUIRE_PRIVILEGED=1`, which turns the skip into a failure.
#[cfg(test)]
mod privileged {
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::process::Command;

    use nix::sched::{unshare, CloneFlags};

    use crate::collectors::{qdisc, tcpsummary, NetnsCtx, ProbeArgs};
    use crate::model::Families;

    fn skip_or_fail(why: &str) {
        if std::env::var("NETSLEUTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("privileged test required but cannot run: {why}");
        }
        eprintln!("skipping privileged netlink test: {why}");
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of the sample line starting with `prefix` (name and labels).
    fn sample(text: &str, prefix: &str) -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no sample {prefix}\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }

    /// Numbers of `tc -s qdisc show dev t0` for the tbf: (bytes, packets, dropped,
    /// overlimits, requeues, backlog bytes, qlen).
    fn tc_tbf_numbers(tc: &str) -> [u64; 7] {
        let mut it = tc.lines().skip_while(|l| !l.starts_with("qdisc tbf"));
        it.next().expect("tbf in tc output");
        let words: Vec<&str> = it
            .take(2)
            .flat_map(|l| l.split_whitespace())
            .map(|w| w.trim_matches(|c: char| c == '(' || c == ')' || c == ','))
            .collect();
        let after = |w: &str| -> &str { words[words.iter().position(|x| *x == w).unwrap() + 1] };
        let num = |s: &str| -> u64 { s.trim_end_matches(['b', 'p']).parse().unwrap() };
        // Sent B bytes P pkt (dropped D, overlimits O requeues R)  backlog Xb Yp requeues R
        let backlog_at = words.iter().position(|x| *x == "backlog").unwrap();
        [
            num(after("Sent")),
            num(after("bytes")),
            num(after("dropped")),
            num(after("overlimits")),
            num(after("requeues")),
            num(words[backlog_at + 1]),
            num(words[backlog_at + 2]),
        ]
    }

    #[test]
    fn probes_match_ss_and_tc_in_own_netns() {
        if !nix::unistd::geteuid().is_root() {
            return skip_or_fail("not root");
        }
        for tool in ["ip", "tc", "ss"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return skip_or_fail(&format!("`{tool}` not found"));
            }
        }
        // A thread of our own moves into a fresh network namespace; commands it spawns and
        // sockets it opens live there. The namespace disappears with the thread.
        std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            // No IPv6 on the veths: no router solicitations or MLD reports through the tbf.
            let _ = Command::new("sysctl")
                .args(["-qw", "net.ipv6.conf.default.disable_ipv6=1"])
                .status();
            for cmd in [
                "ip link set lo up",
                "ip link add t0 type veth peer name t1",
                "ip addr add 198.18.3.1/24 dev t0",
                "ip link set t0 up",
                "ip link set t1 up",
                "ip neigh add 198.18.3.99 lladdr 02:00:00:00:00:03 dev t0",
                "tc qdisc add dev t0 root tbf rate 1mbit burst 32kbit latency 400ms",
                "tc qdisc add dev t0 ingress",
            ] {
                run(&cmd.split(' ').collect::<Vec<_>>());
            }
            // A listener with backlog 7 and three connections nobody accepts.
            let l = TcpListener::bind("198.18.3.1:8080").unwrap();
            // std listens with its own backlog; listen() again on a listening socket sets a
            // new one (Linux updates sk_max_ack_backlog).
            nix::sys::socket::listen(&l, nix::sys::socket::Backlog::new(7).unwrap()).unwrap();
            let conns: Vec<TcpStream> = (0..3)
                .map(|_| TcpStream::connect("198.18.3.1:8080").unwrap())
                .collect();
            // Traffic through the tbf (to a static neighbour, so no ARP).
            let u = UdpSocket::bind("198.18.3.1:0").unwrap();
            for _ in 0..5 {
                u.send_to(&[0u8; 100], "198.18.3.99:9").unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));

            let inode = std::fs::metadata("/proc/thread-self/ns/net")
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap();
            let pids = [];
            let ctx = NetnsCtx::new(
                inode,
                "/proc/thread-self/net".into(),
                std::path::Path::new("/proc"),
                true,
                &pids,
            );
            let mut fams = Families::new();
            for spec in tcpsummary::specs().into_iter().chain(qdisc::specs()) {
                (spec.available)().unwrap_or_else(|e| panic!("{}: {e}", spec.name));
                let c = (spec.build)(&mut ProbeArgs::new(spec.name)).unwrap();
                assert!(!c.netlink_protocols().is_empty());
                c.collect(&ctx, &mut fams.sink("")).unwrap();
            }
            let ss = run(&["ss", "-Htan"]);
            let tc = run(&["tc", "-s", "qdisc", "show", "dev", "t0"]);
            let mut text = String::new();
            fams.render(&mut text);

            let count = |state: &str| ss.lines().filter(|l| l.starts_with(state)).count() as u64;
            assert_eq!(count("ESTAB"), 6, "{ss}");
            assert_eq!(
                sample(&text, "netsleuth_tcpsummary_sockets{state=\"established\"}"),
                count("ESTAB")
            );
            assert_eq!(
                sample(&text, "netsleuth_tcpsummary_sockets{state=\"listen\"}"),
                count("LISTEN")
            );
            let listener = ss
                .lines()
                .find(|l| l.starts_with("LISTEN") && l.contains("198.18.3.1:8080"))
                .expect("listener in ss");
            let f: Vec<u64> = listener
                .split_whitespace()
                .skip(1)
                .take(2)
                .map(|w| w.parse().unwrap())
                .collect();
            assert_eq!(f, vec![3, 7], "{listener}");
            let lb = "{family=\"ipv4\",address=\"198.18.3.1\",port=\"8080\"}";
            assert_eq!(
                sample(&text, &format!("netsleuth_tcpsummary_listen_backlog{lb}")),
                3
            );
            assert_eq!(
                sample(
                    &text,
                    &format!("netsleuth_tcpsummary_listen_backlog_max{lb}")
                ),
                7
            );

            let [bytes, packets, dropped, overlimits, requeues, backlog, qlen] =
                tc_tbf_numbers(&tc);
            assert_eq!(packets, 5, "{tc}");
            // The kernel picks the handle (8001:, 8002:... from a global counter): take tc's.
            let tc_handle = tc.split_whitespace().nth(2).unwrap();
            assert!(
                tc_handle.starts_with("80") && tc_handle.ends_with(':'),
                "{tc}"
            );
            let q = format!(
                "{{device=\"t0\",qdisc_kind=\"tbf\",handle=\"{tc_handle}\",parent=\"root\"}}"
            );
            for (name, want) in [
                ("bytes_total", bytes),
                ("packets_total", packets),
                ("drops_total", dropped),
                ("overlimits_total", overlimits),
                ("requeues_total", requeues),
                ("backlog_bytes", backlog),
                ("qlen", qlen),
            ] {
                assert_eq!(
                    sample(&text, &format!("netsleuth_qdisc_{name}{q}")),
                    want,
                    "{name}\n{tc}\n{text}"
                );
            }
            let ingress =
                "{device=\"t0\",qdisc_kind=\"ingress\",handle=\"ffff:\",parent=\"ffff:fff1\"}";
            assert_eq!(
                sample(&text, &format!("netsleuth_qdisc_packets_total{ingress}")),
                0
            );
            // Names come from this namespace: only lo, t0, t1 exist here.
            for l in text.lines().filter(|l| l.contains("device=\"")) {
                assert!(
                    ["lo", "t0", "t1"]
                        .iter()
                        .any(|d| l.contains(&format!("device=\"{d}\""))),
                    "{l}"
                );
            }
            drop(conns);
        })
        .join()
        .expect("privileged test thread");
    }
}
