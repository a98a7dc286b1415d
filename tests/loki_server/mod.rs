//! A Loki-compatible push endpoint for the delivery tests: HTTP/1.1 with keep-alive (or one
//! request per connection), optionally TLS (a CA and server/client certificates made here with
//! rcgen), JSON or snappy-compressed protobuf bodies. Protobuf bodies are decoded with message
//! structs written here independently of the exporter's, and turned into the JSON body's shape
//! (`{"streams":[{"stream":{..},"values":[["ts","line",{meta}]]}]}`) so that every test checks
//! one shape. Answers each request with the next status of a script (then 204), records what it
//! took, counts requests and connections.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request the test Loki took.
#[derive(Debug, Clone)]
pub struct Push {
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The JSON body, or the protobuf body decoded into the same shape.
    pub body: serde_json::Value,
}

impl Push {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
pub struct Options {
    /// Statuses of the first requests (then 204).
    pub script: Vec<u16>,
    /// Serve TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Close after this many requests on a connection, without saying so (as an idle timeout
    /// or a proxy would); `Some(1)` with `announce_close` is HTTP/1.0-style.
    pub max_per_conn: Option<usize>,
    /// Send `Connection: close` on the last response of a connection.
    pub announce_close: bool,
}

pub struct TestLoki {
    pub addr: String,
    pub pushes: Arc<Mutex<Vec<Push>>>,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    pub tls: bool,
}

impl TestLoki {
    pub fn start(script: Vec<u16>) -> TestLoki {
        Self::with(Options {
            script,
            ..Default::default()
        })
    }

    pub fn with(o: Options) -> TestLoki {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), o)
    }

    pub fn on(l: TcpListener, o: Options) -> TestLoki {
        let addr = l.local_addr().unwrap().to_string();
        let pushes = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let tls = o.tls.is_some();
        let (p, r, n) = (pushes.clone(), requests.clone(), connections.clone());
        let o = Arc::new(o);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(c) = conn else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let (p, r, o) = (p.clone(), r.clone(), o.clone());
                // A thread per connection: an idle kept-alive connection must not hold up the
                // next one.
                std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    match &o.tls {
                        Some(cfg) => {
                            let Ok(sc) = rustls::ServerConnection::new(cfg.clone()) else {
                                return;
                            };
                            serve(rustls::StreamOwned::new(sc, c), &o, &p, &r);
                        }
                        None => serve(c, &o, &p, &r),
                    }
                });
            }
        });
        TestLoki {
            addr,
            pushes,
            requests,
            connections,
            tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/loki/api/v1/push", self.addr)
    }

    /// (seq, labels, ts) of every line received, in arrival order (lines carry `seq=N`).
    pub fn lines(&self) -> Vec<(u64, serde_json::Value, u128)> {
        let mut out = Vec::new();
        for (labels, ts, line, _) in self.entries() {
            let seq = line
                .split(' ')
                .find_map(|kv| kv.strip_prefix("seq="))
                .unwrap()
                .parse()
                .unwrap();
            out.push((seq, labels, ts));
        }
        out
    }

    /// (labels, ts, line, structured metadata) of every entry received, in arrival order.
    pub fn entries(&self) -> Vec<(serde_json::Value, u128, String, serde_json::Value)> {
        let mut out = Vec::new();
        for p in self.pushes.lock().unwrap().iter() {
            for s in p.body["streams"].as_array().unwrap() {
                for v in s["values"].as_array().unwrap() {
                    out.push((
                        s["stream"].clone(),
                        v[0].as_str().unwrap().parse().unwrap(),
                        v[1].as_str().unwrap().to_string(),
                        v.get(2).cloned().unwrap_or(serde_json::Value::Null),
                    ));
                }
            }
        }
        out
    }
}

fn serve<S: Read + Write>(s: S, o: &Options, pushes: &Mutex<Vec<Push>>, requests: &AtomicUsize) {
    let mut r = BufReader::new(s);
    let mut on_conn = 0;
    loop {
        let Some(push) = read_request(&mut r) else {
            return;
        };
        on_conn += 1;
        let i = requests.fetch_add(1, Ordering::SeqCst);
        let status = o.script.get(i).copied().unwrap_or(204);
        if (200..300).contains(&status) && status != 260 {
            pushes.lock().unwrap().push(push);
        }
        let reason = match status {
            204 => "No Content",
            429 => "Too Many Requests",
            260 => "Blocked",
            400 => "Bad Request",
            _ => "Error",
        };
        let body = if status >= 400 {
            "entry out of order\n"
        } else {
            ""
        };
        let last = o.max_per_conn.is_some_and(|m| on_conn >= m);
        let close = if last && o.announce_close {
            "Connection: close\r\n"
        } else {
            ""
        };
        let w = r.get_mut();
        let _ = write!(
            w,
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{close}\r\n{body}",
            body.len()
        );
        let _ = w.flush();
        if last {
            return;
        }
    }
}

fn read_request<S: Read>(r: &mut BufReader<S>) -> Option<Push> {
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let path = first.split_whitespace().nth(1)?.to_string();
    assert!(first.starts_with("POST "), "{first}");
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .expect("pushes have a Content-Length")
        .1
        .parse()
        .ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let ctype = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    let body = match ctype {
        Some("application/x-protobuf") => pb::to_json(&body),
        _ => serde_json::from_slice(&body).expect("push body is JSON"),
    };
    Some(Push {
        path,
        headers,
        body,
    })
}

/// Loki's `logproto.PushRequest`, written from push.proto for the test (field numbers and types
/// as Loki declares them), decoded with prost.
mod pb {
    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    struct Request {
        #[prost(message, repeated, tag = "1")]
        streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Stream {
        #[prost(string, tag = "1")]
        labels: String,
        #[prost(message, repeated, tag = "2")]
        entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        hash: u64,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Entry {
        #[prost(message, optional, tag = "1")]
        timestamp: Option<Ts>,
        #[prost(string, tag = "2")]
        line: String,
        #[prost(message, repeated, tag = "3")]
        structured_metadata: Vec<Pair>,
        #[prost(message, repeated, tag = "4")]
        parsed: Vec<Pair>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Pair {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Ts {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }

    /// Snappy block format (what Loki's `snappy.Decode` takes), then the message, as JSON.
    pub fn to_json(body: &[u8]) -> serde_json::Value {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(body)
            .expect("protobuf push is snappy block-compressed");
        let req = Request::decode(raw.as_slice()).expect("a logproto.PushRequest");
        let streams: Vec<serde_json::Value> = req
            .streams
            .iter()
            .map(|s| {
                assert_eq!(s.hash, 0, "clients do not set the hash");
                let values: Vec<serde_json::Value> = s
                    .entries
                    .iter()
                    .map(|e| {
                        assert!(e.parsed.is_empty(), "clients do not send `parsed`");
                        let ts = e.timestamp.as_ref().expect("entry timestamp");
                        assert!((0..1_000_000_000).contains(&ts.nanos));
                        let ns = ts.seconds as u128 * 1_000_000_000 + ts.nanos as u128;
                        let mut v: Vec<serde_json::Value> =
                            vec![ns.to_string().into(), e.line.clone().into()];
                        if !e.structured_metadata.is_empty() {
                            v.push(
                                e.structured_metadata
                                    .iter()
                                    .map(|p| (p.name.clone(), p.value.clone().into()))
                                    .collect::<serde_json::Map<_, _>>()
                                    .into(),
                            );
                        }
                        v.into()
                    })
                    .collect();
                serde_json::json!({"stream": parse_labels(&s.labels), "values": values})
            })
            .collect();
        serde_json::json!({ "streams": streams })
    }

    /// `{a="b", c="d\"e"}` (Prometheus label syntax) as a JSON object.
    fn parse_labels(s: &str) -> serde_json::Value {
        let inner = s
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or_else(|| panic!("labels `{s}` are not in braces"));
        let mut out = serde_json::Map::new();
        let mut chars = inner.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name `{name}` in `{s}`"
            );
            assert_eq!(chars.next(), Some('"'), "quoted value in `{s}`");
            let mut v = String::new();
            loop {
                match chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated in `{s}`"))
                {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some(c @ ('\\' | '"')) => v.push(c),
                        c => panic!("bad escape {c:?} in `{s}`"),
                    },
                    c => v.push(c),
                }
            }
            assert!(out.insert(name, v.into()).is_none(), "duplicate in `{s}`");
        }
        out.into()
    }
}

/// A test PKI: a CA, a server certificate for 127.0.0.1 and localhost, a client certificate,
/// all signed by the CA; PEM files in a temp dir (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "netsleuth test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ];
            p.extended_key_usages = vec![eku];
            let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (cert, key)
        };
        let (server, server_key) = leaf("loki", ExtendedKeyUsagePurpose::ServerAuth);
        let (client, client_key) = leaf("netsleuth", ExtendedKeyUsagePurpose::ClientAuth);
        let ca_file = dir.join("ca.pem");
        let client_cert_file = dir.join("client.pem");
        let client_key_file = dir.join("client-key.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        std::fs::write(&client_cert_file, client.pem()).unwrap();
        std::fs::write(&client_key_file, client_key.serialize_pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca_file,
            client_cert_file,
            client_key_file,
            ca_der: ca_cert.der().clone(),
            server_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }

    /// The server side; with `client_auth`, a client certificate signed by the CA is required.
    pub fn server_config(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let v =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            b.with_client_cert_verifier(v)
        } else {
            b.with_no_client_auth()
        };
        Arc::new(
            b.with_single_cert(
                vec![self.server_der.clone(), self.ca_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone())),
            )
            .unwrap(),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
