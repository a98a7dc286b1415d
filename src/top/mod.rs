//! The inspector: `netsleuth top` (a live view of the node's network by entity, from a running
//! exporter's `/metrics` and `/events`, or from the collectors run in-process with `--local`)
//! and `netsleuth events` (follows `/events`).
//!
//! Layout: `expo` parses the exposition text, `sample` turns two pages into per-entity deltas
//! and rates (pure, no I/O), `view` draws them (ratatui, on any backend) or prints them as a
//! table or JSON, `tui` runs the terminal, `client` is the HTTP side, `follow` the events stream.

pub mod client;
pub mod expo;
pub mod follow;
pub mod sample;
pub mod tui;
pub mod view;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, ClientOptions, FetchError};
use sample::{Column, Filter, Snapshot};

pub const DEFAULT_URL: &str = "http://127.0.0.1:9102";

pub const TOP_HELP: &str = "\
netsleuth top: a live view of the node's network by pod, container and namespace.

Usage:
  netsleuth top [flags]

Flags:
  --url=URL                 the exporter (default http://127.0.0.1:9102)
  --interval=DUR            time between samples (default 2s)
  --sort=COLUMN             kind, name, rx_bytes, tx_bytes, rx_packets, tx_packets, drops
                            (default), reason, resets, retrans, estab, listen_overflows,
                            read_p99, qdisc_drops
  --namespace=REGEX         only entities whose Kubernetes namespace matches
  --pod=REGEX               only entities whose pod (or, for other kinds, name) matches
  --once                    take two samples one interval apart, print them and exit
  --output=table|json       with --once: a plain table (default) or JSON
  --local                   run the collectors in this process instead of reading an
                            exporter (root); --config.file chooses them
  --config.file=PATH        with --local: the exporter's configuration (metric probes)
  --tls.ca-file=PATH        the CA that signed the exporter's certificate (https:// URLs)
  --tls.cert-file=PATH      a client certificate, and
  --tls.key-file=PATH       its key, for exporters that require one
  --web.username=USER       basic auth user, and
  --web.password-file=PATH  the file holding its password

Keys: q quit, arrows/j/k select, Enter detail pane, < > sort column, r reverse, / filter,
p pause. Colours when the terminal has them and NO_COLOR is not set.
Exit codes: 0 done, 2 bad flags, 3 exporter unreachable (or TLS), 4 unauthorised,
5 not a Prometheus page or another HTTP status, 1 anything else.
";

pub const EVENTS_HELP: &str = "\
netsleuth events: follow a running exporter's event stream.

Usage:
  netsleuth events [flags]

Flags:
  --url=URL                 the exporter (default http://127.0.0.1:9102)
  --type=T1,T2              only these event types (PACKETLOSS, TCPRESET_NOSOCK, ...)
  --namespace=NAME          only this Kubernetes namespace
  --pod=REGEX               only entities whose pod (or, for other kinds, name) matches
  --output=logfmt|json      the stderr sink's line (default) or the JSON line as sent
  --tls.ca-file, --tls.cert-file, --tls.key-file, --web.username, --web.password-file
                            as for `netsleuth top`

The stream is followed until SIGTERM/SIGINT (exit 0); when it ends (the exporter restarted)
it is opened again with backoff (0.5 s doubling to 10 s). Exit codes: 3 the exporter does
not answer the first connection, 4 unauthorised, 5 another HTTP status, 2 bad flags.
";

/// `top` and `events` flags.
#[derive(Debug, Default)]
pub struct Opts {
    pub url: Option<String>,
    pub interval: Option<Duration>,
    pub sort: Option<Column>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub types: Vec<String>,
    pub once: bool,
    pub output: Option<String>,
    pub local: bool,
    pub config_file: Option<std::path::PathBuf>,
    pub client: ClientOptions,
    pub help: bool,
}

fn value(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|_| format!("--{flag}: not UTF-8"))
}

/// Parses the flags after `top` or `events`.
pub fn parse(events: bool, argv: impl IntoIterator<Item = OsString>) -> Result<Opts, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(argv);
    let mut o = Opts::default();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("url") => o.url = Some(value(&mut p, "url")?),
            Long("namespace") => o.namespace = Some(value(&mut p, "namespace")?),
            Long("pod") => o.pod = Some(value(&mut p, "pod")?),
            Long("output") => {
                let v = value(&mut p, "output")?;
                let ok: &[&str] = if events {
                    &["logfmt", "json"]
                } else {
                    &["table", "json"]
                };
                if !ok.contains(&v.as_str()) {
                    return Err(format!("--output: `{v}` is not one of {}", ok.join(", ")));
                }
                o.output = Some(v);
            }
            Long("tls.ca-file") => o.client.ca_file = Some(value(&mut p, "tls.ca-file")?.into()),
            Long("tls.cert-file") => {
                o.client.cert_file = Some(value(&mut p, "tls.cert-file")?.into())
            }
            Long("tls.key-file") => o.client.key_file = Some(value(&mut p, "tls.key-file")?.into()),
            Long("web.username") => o.client.username = Some(value(&mut p, "web.username")?),
            Long("web.password-file") => {
                o.client.password_file = Some(value(&mut p, "web.password-file")?.into())
            }
            Long("type") if events => {
                let v = value(&mut p, "type")?;
                o.types.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_ascii_uppercase),
                );
            }
            Long("interval") if !events => {
                let v = value(&mut p, "interval")?;
                let d =
                    crate::config::parse_duration("--interval", &v).map_err(|e| e.to_string())?;
                if d < Duration::from_millis(100) {
                    return Err(format!("--interval: `{v}` is shorter than 100ms"));
                }
                o.interval = Some(d);
            }
            Long("sort") if !events => o.sort = Some(Column::parse(&value(&mut p, "sort")?)?),
            Long("once") if !events => o.once = true,
            Long("local") if !events => o.local = true,
            Long("config.file") if !events => {
                o.config_file = Some(value(&mut p, "config.file")?.into())
            }
            Long("help") | Short('h') => o.help = true,
            other => return Err(other.unexpected().to_string()),
        }
    }
    if o.local && o.url.is_some() {
        return Err("--local and --url exclude each other".into());
    }
    if o.config_file.is_some() && !o.local {
        return Err("--config.file needs --local (an exporter reads its own)".into());
    }
    if o.output.is_some() && !o.once && !events {
        return Err("--output needs --once (the live view is the terminal)".into());
    }
    Ok(o)
}

fn regex(flag: &str, v: &Option<String>) -> Result<Option<regex::Regex>, String> {
    v.as_deref()
        .map(|s| regex::Regex::new(s).map_err(|e| format!("{flag}: {e}")))
        .transpose()
}

/// Where pages come from: an exporter, or the collectors in this process.
pub enum Source {
    Http(Client),
    Local(Arc<crate::engine::Engine>),
}

impl Source {
    pub fn sample(&self) -> Result<Snapshot, FetchError> {
        let text = match self {
            Source::Http(c) => c.metrics()?,
            Source::Local(e) => {
                let mut s = String::new();
                e.scrape(None).render(&mut s);
                s
            }
        };
        let samples = expo::parse(&text).map_err(|e| {
            FetchError::BadPage(match self {
                Source::Http(c) => format!("{}: {e}", c.url("/metrics")),
                Source::Local(_) => e,
            })
        })?;
        Ok(Snapshot::from_samples(&samples))
    }

    pub fn client(&self) -> Option<&Client> {
        match self {
            Source::Http(c) => Some(c),
            Source::Local(_) => None,
        }
    }
}

fn local_engine(o: &Opts) -> Result<Arc<crate::engine::Engine>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "--local runs the collectors here and needs root (to enter every network namespace)"
                .into(),
        );
    }
    let cfg = match &o.config_file {
        Some(p) => crate::config::Config::load(p).map_err(|e| e.to_string())?,
        None => crate::config::Config::default_config(),
    };
    if !cfg.bpf_probes.is_empty() {
        log::warn!("--local: the eBPF probes of the configuration are not started by `top --local`; use a running exporter for them");
    }
    let attributor = match &cfg.state_roots {
        Some(r) => crate::attribution::Attributor::new(r),
        None => crate::attribution::Attributor::none(),
    };
    let inventory = Arc::new(crate::inventory::Inventory::with_options(
        "/proc",
        crate::inventory::Options {
            netns_dirs: cfg.netns_dirs.clone(),
            attributor,
            extra_labels: cfg.extra_labels.clone(),
        },
    ));
    let cfg = crate::config::Config {
        bpf_probes: Vec::new(),
        ..cfg
    };
    Ok(crate::engine::Engine::new(cfg, inventory))
}

/// The node's name for the header: the URL's host, or this host's name with `--local`.
fn node_name(o: &Opts) -> String {
    match &o.url {
        Some(u) if !o.local => {
            let rest = u.split("://").nth(1).unwrap_or(u);
            rest.split('/').next().unwrap_or(rest).to_string()
        }
        _ if o.local => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
        _ => "127.0.0.1:9102".into(),
    }
}

fn fail(what: &str, e: &str, code: i32) -> i32 {
    eprintln!("netsleuth {what}: {e}");
    code
}

/// The command's options, or its exit code when there is nothing more to do: 2 after a flag
/// error, 0 after printing `--help`.
fn opts_or_exit(events: bool, argv: impl IntoIterator<Item = OsString>) -> Result<Opts, i32> {
    let (what, help) = if events {
        ("events", EVENTS_HELP)
    } else {
        ("top", TOP_HELP)
    };
    let o = parse(events, argv).map_err(|e| {
        fail(
            what,
            &format!("{e}\nRun `netsleuth {what} --help` for usage."),
            2,
        )
    })?;
    if o.help {
        print!("{help}");
        return Err(0);
    }
    Ok(o)
}

/// `netsleuth top ...`; returns the exit code.
pub fn top_main(argv: impl IntoIterator<Item = OsString>) -> i32 {
    let o = match opts_or_exit(false, argv) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let filter = match (regex("--namespace", &o.namespace), regex("--pod", &o.pod)) {
        (Ok(namespace), Ok(pod)) => Filter {
            namespace,
            pod,
            any: None,
        },
        (Err(e), _) | (_, Err(e)) => return fail("top", &e, 2),
    };
    let source = if o.local {
        match local_engine(&o) {
            Ok(e) => Source::Local(e),
            Err(e) => return fail("top", &e, 1),
        }
    } else {
        match Client::new(o.url.as_deref().unwrap_or(DEFAULT_URL), &o.client) {
            Ok(c) => Source::Http(c),
            Err(e) => return fail("top", &e, 2),
        }
    };
    let interval = o.interval.unwrap_or(Duration::from_secs(2));
    let node = node_name(&o);
    let sort = o.sort.unwrap_or(Column::Drops);
    if o.once {
        return once(
            &source,
            &node,
            interval,
            filter,
            sort,
            o.output.as_deref() == Some("json"),
        );
    }
    tui::run(source, node, interval, filter, sort)
}

/// `top --once`: two samples an interval apart, printed; the exit code.
fn once(
    source: &Source,
    node: &str,
    interval: Duration,
    filter: Filter,
    sort: Column,
    json: bool,
) -> i32 {
    let first = match source.sample() {
        Ok(s) => s,
        Err(e) => return fail("top", &e.to_string(), e.exit_code()),
    };
    let t0 = Instant::now();
    // Said on stderr so that a script (or a test) knows the interval has begun.
    eprintln!(
        "netsleuth top: first sample taken; the second in {:.1}s",
        interval.as_secs_f64()
    );
    std::thread::sleep(interval);
    let second = match source.sample() {
        Ok(s) => s,
        Err(e) => return fail("top", &e.to_string(), e.exit_code()),
    };
    let secs = t0.elapsed().as_secs_f64();
    let rows = sample::compare(&first, &second, secs);
    let st = view::ViewState {
        node: node.to_string(),
        rows,
        sort,
        filter,
        ..Default::default()
    };
    let shown = st.shown();
    let text = if json {
        let mut s = serde_json::to_string_pretty(&view::to_json(node, &st.rows, &shown))
            .unwrap_or_default();
        s.push('\n');
        s
    } else {
        let [h1, h2] = view::header_lines(node, &st.rows, false);
        format!("{h1}\n{h2}\n\n{}", view::plain_table(&shown, &Column::ALL))
    };
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => fail("top", &format!("writing the output: {e}"), 1),
    }
}

/// `netsleuth events ...`; returns the exit code.
pub fn events_main(argv: impl IntoIterator<Item = OsString>) -> i32 {
    let o = match opts_or_exit(true, argv) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let pod = match regex("--pod", &o.pod) {
        Ok(p) => p,
        Err(e) => return fail("events", &e, 2),
    };
    let client = match Client::new(o.url.as_deref().unwrap_or(DEFAULT_URL), &o.client) {
        Ok(c) => c,
        Err(e) => return fail("events", &e, 2),
    };
    let filter = follow::EventFilter {
        types: o.types.clone(),
        namespace: o.namespace.clone(),
        pod,
    };
    follow::run(&client, &filter, o.output.as_deref() == Some("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(events: bool, v: &[&str]) -> Result<Opts, String> {
        parse(events, v.iter().map(OsString::from))
    }

    #[test]
    fn flags() {
        let o = p(
            false,
            &[
                "--url=https://n:9102",
                "--interval=1s",
                "--sort=resets",
                "--once",
                "--output=json",
                "--tls.ca-file=/ca.pem",
                "--web.username=u",
                "--web.password-file=/pw",
            ],
        )
        .unwrap();
        assert_eq!(o.interval, Some(Duration::from_secs(1)));
        assert_eq!(o.sort, Some(Column::Resets));
        assert!(o.once);
        assert_eq!(o.client.ca_file, Some("/ca.pem".into()));
        let e = p(
            true,
            &["--type=packetloss,TCPRESET_NOSOCK", "--output=json"],
        )
        .unwrap();
        assert_eq!(e.types, ["PACKETLOSS", "TCPRESET_NOSOCK"]);
    }

    #[test]
    fn bad_flags_named() {
        assert!(p(false, &["--sort=nope"]).unwrap_err().contains("--sort"));
        assert!(p(false, &["--interval=10ms"])
            .unwrap_err()
            .contains("--interval"));
        assert!(p(false, &["--output=json"]).unwrap_err().contains("--once"));
        assert!(p(false, &["--once", "--output=xml"])
            .unwrap_err()
            .contains("--output"));
        assert!(p(true, &["--output=table"]).unwrap_err().contains("logfmt"));
        assert!(p(true, &["--once"]).unwrap_err().contains("--once"));
        assert!(p(false, &["--local", "--url=x"])
            .unwrap_err()
            .contains("--local"));
        assert!(p(false, &["--type=X"]).unwrap_err().contains("--type"));
    }
}
