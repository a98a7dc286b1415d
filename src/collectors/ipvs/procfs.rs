//! `/proc/net/ip_vs_stats` (the namespace's totals, in hexadecimal) and `/proc/net/ip_vs`
//! (services and destinations with weights and connection counts).

use std::net::{Ipv4Addr, Ipv6Addr};

/// The five counters IPVS keeps per namespace, service and destination.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Counters {
    pub(super) fn is_zero(&self) -> bool {
        *self == Counters::default()
    }

    /// (metric suffix, value, help), in one place so no value can land under another's name.
    pub(super) fn fields(&self) -> [(&'static str, u64, &'static str); 5] {
        [
            ("connections_total", self.conns, "Connections scheduled"),
            (
                "incoming_packets_total",
                self.inpkts,
                "Packets received from clients",
            ),
            (
                "outgoing_packets_total",
                self.outpkts,
                "Packets sent back to clients",
            ),
            (
                "incoming_bytes_total",
                self.inbytes,
                "Bytes received from clients",
            ),
            (
                "outgoing_bytes_total",
                self.outbytes,
                "Bytes sent back to clients",
            ),
        ]
    }
}

fn hex(tok: &str) -> Option<u64> {
    u64::from_str_radix(tok, 16).ok()
}

/// Parse `/proc/net/ip_vs_stats`: the first value line under the two header lines; each
/// column is identified by its header words (`Total`+`Conns`, `Incoming`+`Packets`, ...).
pub fn parse_stats(data: &[u8]) -> Result<Counters, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let (Some(h1), Some(h2), Some(vals)) = (lines.next(), lines.next(), lines.next()) else {
        return Err("fewer than three lines".into());
    };
    let h1: Vec<&str> = h1.split_whitespace().collect();
    let h2: Vec<&str> = h2.split_whitespace().collect();
    let vals: Vec<&str> = vals.split_whitespace().collect();
    if h1.len() != h2.len() || h1.len() != vals.len() || h1.is_empty() {
        return Err(format!(
            "header of {} and {} words over {} values",
            h1.len(),
            h2.len(),
            vals.len()
        ));
    }
    let mut c = Counters::default();
    let mut seen = 0u8;
    for ((a, b), v) in h1.iter().zip(&h2).zip(&vals) {
        let v = hex(v).ok_or_else(|| format!("`{v}` is not a hexadecimal number"))?;
        let (slot, bit) = match (*a, *b) {
            ("Total", "Conns") => (&mut c.conns, 1),
            ("Incoming", "Packets") => (&mut c.inpkts, 2),
            ("Outgoing", "Packets") => (&mut c.outpkts, 4),
            ("Incoming", "Bytes") => (&mut c.inbytes, 8),
            ("Outgoing", "Bytes") => (&mut c.outbytes, 16),
            _ => continue,
        };
        *slot = v;
        seen |= bit;
    }
    if seen != 31 {
        return Err("header lacks one of Total Conns, Incoming/Outgoing Packets/Bytes".into());
    }
    Ok(c)
}

/// A virtual service: by protocol, address and port, or by firewall mark.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    /// `TCP`, `UDP`, `SCTP`; `FWM` for a firewall-mark service.
    pub proto: String,
    pub address: String,
    pub port: u16,
    pub fwmark: u32,
}

impl ServiceKey {
    pub(super) fn labels(&self) -> [(&'static str, String); 4] {
        [
            ("local_address", self.address.clone()),
            ("local_port", self.port.to_string()),
            (
                "local_mark",
                if self.fwmark == 0 {
                    String::new()
                } else {
                    self.fwmark.to_string()
                },
            ),
            ("proto", self.proto.clone()),
        ]
    }
}

/// A destination (real server) of a service as `/proc/net/ip_vs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: String,
    pub port: u16,
    /// `Masq`, `Local`, `Route`, `Tunnel`, `Bypass`.
    pub forward: String,
    pub weight: i64,
    pub active: i64,
    pub inactive: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: String,
    pub backends: Vec<Backend>,
}

/// `HHHHHHHH:PPPP` (IPv4, host order hex) or `[v6]:PPPP`.
fn addr_port(s: &str) -> Option<(String, u16)> {
    let (a, p) = s.rsplit_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let addr = if let Some(v6) = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().ok()?.to_string()
    } else {
        if a.len() != 8 {
            return None;
        }
        Ipv4Addr::from(u32::from_str_radix(a, 16).ok()?).to_string()
    };
    Some((addr, port))
}

/// Parse `/proc/net/ip_vs`: services and their destinations.
pub fn parse_services(data: &[u8]) -> Result<Vec<Service>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    match lines.next() {
        Some(l) if l.starts_with("IP Virtual Server") => {}
        _ => return Err("does not start with `IP Virtual Server`".into()),
    }
    let mut out: Vec<Service> = Vec::new();
    for line in lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first().copied() {
            None | Some("Prot") => continue,
            Some("->") if w.get(1) == Some(&"RemoteAddress:Port") => continue,
            Some("->") => {
                let svc = out
                    .last_mut()
                    .ok_or_else(|| format!("destination before any service: `{line}`"))?;
                let bad = || format!("malformed destination line `{}`", line.trim());
                if w.len() < 6 {
                    return Err(bad());
                }
                let (address, port) = addr_port(w[1]).ok_or_else(bad)?;
                let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
                svc.backends.push(Backend {
                    address,
                    port,
                    forward: w[2].to_string(),
                    weight: num(w[3])?,
                    active: num(w[4])?,
                    inactive: num(w[5])?,
                });
            }
            Some(proto) => {
                let bad = || format!("malformed service line `{}`", line.trim());
                if w.len() < 3 {
                    return Err(bad());
                }
                let key = if proto == "FWM" {
                    ServiceKey {
                        proto: proto.into(),
                        address: String::new(),
                        port: 0,
                        fwmark: u32::from_str_radix(w[1], 16).map_err(|_| bad())?,
                    }
                } else {
                    let (address, port) = addr_port(w[1]).ok_or_else(bad)?;
                    ServiceKey {
                        proto: proto.into(),
                        address,
                        port,
                        fwmark: 0,
                    }
                };
                out.push(Service {
                    key,
                    scheduler: w[2].to_string(),
                    backends: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn stats_hex_and_by_header() {
        let d = b"   Total Incoming Outgoing         Incoming         Outgoing\n   Conns  Packets  Packets            Bytes            Bytes\n       1        A        B              500              FFF\n\n Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n       0        0        0                0                0\n";
        assert_eq!(
            parse_stats(d).unwrap(),
            Counters {
                conns: 1,
                inpkts: 10,
                outpkts: 11,
                inbytes: 0x500,
                outbytes: 0xfff
            }
        );
        // Columns follow the header, not their position.
        let d = b" Incoming Total\n Bytes Conns\n 10 2\n";
        let e = parse_stats(d).unwrap_err();
        assert!(e.contains("header lacks"), "{e}");
    }

    #[test]
    fn stats_garbage() {
        for d in [
            &b""[..],
            b"a\nb\n",
            b" Total\n Conns\n xyz\n",
            b" Total\n Conns\n 1 2\n",
            b"\xff\xfe\n\n\n",
        ] {
            assert!(parse_stats(d).is_err(), "{d:?}");
        }
    }

    pub(in crate::collectors::ipvs) const IP_VS: &[u8] = b"IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  C6120501:0050 rr \n  -> C6120002:1F90      Masq    1      3          7         \n  -> C6120003:1F90      Masq    2      0          0         \nUDP  [2001:0002:0000:0000:0000:0000:0000:0001]:0035 wlc \nFWM  00000010 sh \n  -> C6120004:0000      Route   5      1          2         \n";

    #[test]
    fn services_and_backends() {
        let s = parse_services(IP_VS).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].key,
            ServiceKey {
                proto: "TCP".into(),
                address: "198.18.5.1".into(),
                port: 80,
                fwmark: 0
            }
        );
        assert_eq!(s[0].scheduler, "rr");
        assert_eq!(
            s[0].backends[0],
            Backend {
                address: "198.18.0.2".into(),
                port: 8080,
                forward: "Masq".into(),
                weight: 1,
                active: 3,
                inactive: 7
            }
        );
        assert_eq!(s[0].backends[1].weight, 2);
        assert_eq!(s[1].key.address, "2001:2::1");
        assert_eq!(s[1].key.port, 53);
        assert!(s[1].backends.is_empty());
        assert_eq!(s[2].key.fwmark, 16);
        assert_eq!(s[2].backends[0].forward, "Route");
    }

    #[test]
    fn services_garbage() {
        for d in [
            &b""[..],
            b"hello\n",
            b"IP Virtual Server\n  -> C6120002:1F90 Masq 1 0 0\n",
            b"IP Virtual Server\nTCP  C612:0050 rr\n",
            b"IP Virtual Server\nTCP  C6120501:0050 rr\n  -> C6120002:1F90 Masq x 0 0\n",
            b"IP Virtual Server\nTCP  C6120501:0050 rr\n  -> C6120002:1F90 Masq\n",
        ] {
            assert!(parse_services(d).is_err(), "{d:?}");
        }
        for cut in 0..IP_VS.len() {
            let _ = parse_services(&IP_VS[..cut]);
        }
    }
}
