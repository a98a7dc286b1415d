//! A client connection, plain or TLS, and its bounded writes.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Stats;

pub(super) enum Transport {
    Plain(TcpStream),
    Tls(TcpStream, Box<rustls::ServerConnection>),
}

/// A client connection.
pub struct Conn {
    pub(super) t: Transport,
    /// Plaintext read ahead of the current request (pipelined requests).
    pub(super) buf: Vec<u8>,
    /// Requests answered on this connection.
    pub(super) served: u64,
    /// The write timeout, and the deadline of the response being written (None: per write).
    pub(super) write_timeout: Duration,
    pub(super) deadline: Option<Instant>,
    pub(super) stats: Arc<Stats>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Transport::Tls(s, c) = &mut self.t {
            if c.is_handshaking() {
                // Nothing was said over TLS yet: just close.
                let _ = s.shutdown(Shutdown::Both);
                self.stats.open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            c.send_close_notify();
            let _ = s.set_nonblocking(true);
            let _ = c.write_tls(s);
        }
        self.stream().shutdown(Shutdown::Both).ok();
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    pub(super) fn stream(&self) -> &TcpStream {
        match &self.t {
            Transport::Plain(s) | Transport::Tls(s, _) => s,
        }
    }

    /// Switch to blocking writes bounded by `timeout` (a worker or stream thread owns it now).
    pub fn set_blocking(&mut self, timeout: Duration) -> io::Result<()> {
        self.write_timeout = timeout;
        let s = self.stream();
        s.set_nonblocking(false)?;
        s.set_write_timeout(Some(timeout))?;
        s.set_read_timeout(Some(timeout))
    }

    /// Write all of `data`, through TLS when the connection has it, by the response's deadline
    /// (a worker's whole response has one write timeout, so a client reading a byte now and
    /// then cannot hold it), else within one write timeout from now (a stream's each write).
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let deadline = self
            .deadline
            .unwrap_or_else(|| Instant::now() + self.write_timeout);
        for chunk in data.chunks(64 * 1024) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout"));
            }
            match &mut self.t {
                Transport::Plain(s) => {
                    s.set_write_timeout(Some(left))?;
                    s.write_all(chunk)?;
                }
                Transport::Tls(s, c) => {
                    s.set_write_timeout(Some(left))?;
                    let mut st = rustls::Stream::new(c.as_mut(), s);
                    st.write_all(chunk)?;
                    st.flush()?;
                }
            }
        }
        Ok(())
    }
}

impl Conn {
    /// The server's figures (a stream writer counts its own timeouts).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
