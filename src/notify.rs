//! `sd_notify` without libsystemd: one datagram to the socket systemd names in
//! `$NOTIFY_SOCKET` (`Type=notify` services). Nothing happens when it is unset.
#![forbid(unsafe_code)]

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`, newline-separated) to the service
/// manager. `Ok(false)`: not started by one (no `$NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    match bytes.first() {
        // Abstract socket: `@name`.
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(b'/') => {
            sock.send_to(state.as_bytes(), &path)?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor an abstract socket",
            ))
        }
    }
    Ok(true)
}

/// [`notify`], logging a failure (the service manager would time the start out).
pub fn notify_logged(state: &str) {
    match notify(state) {
        Ok(true) => log::debug!("sd_notify: {}", state.replace('\n', " ")),
        Ok(false) => {}
        Err(e) => log::warn!("sd_notify {state:?} to $NOTIFY_SOCKET failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("netsleuth-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        // The only test touching NOTIFY_SOCKET in this binary.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=serving").unwrap());
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        std::env::set_var("NOTIFY_SOCKET", "@netsleuth-test-abstract-notify");
        let abs =
            std::os::unix::net::SocketAddr::from_abstract_name(b"netsleuth-test-abstract-notify");
        use std::os::linux::net::SocketAddrExt;
        let server2 = UnixDatagram::bind_addr(&abs.unwrap()).unwrap();
        assert!(notify("READY=1").unwrap());
        let n = server2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
