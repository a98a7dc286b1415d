//! Command line: `netsleuth [serve] [flags]`, `netsleuth probes`, `--version`, `--help`.
//! Flags follow Prometheus exporters (`--config.file`, `--web.listen-address`, `--log.level`).
//! Bad flags or config: exit code 2 with a message naming the problem; nothing starts.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::engine::{ActiveProbes, Engine};
use crate::http;
use crate::inventory::Inventory;
use crate::selfmetrics::VERSION;

pub const DEFAULT_LISTEN: &str = ":9102";

const HELP: &str = "\
netsleuth: network observability per network namespace, for Prometheus.

Usage:
  netsleuth [serve] [flags]   run the exporter (default)
  netsleuth probes [flags]    list every probe, whether it can run here, and why not
                              (also `netsleuth list probe`, KubeSkoop's spelling)
  netsleuth selftest [--json] [--btf-path=FILE]
                              create test namespaces, induce known conditions, and check that
                              every probe sees exactly them (root; exit 0 only if all behave);
                              --btf-path: kernel BTF where /sys/kernel/btf/vmlinux is absent,
                              as bpf.btfPath
  netsleuth top [flags]       a live view of the node's network by pod, from a running
                              exporter or (--local, root) from the collectors in-process
  netsleuth events [flags]    follow a running exporter's event stream
  netsleuth --version
  netsleuth --help

Flags:
  --config.file=PATH          YAML configuration (KubeSkoop exporter configs load unchanged);
                              without it the default probe set runs
  --web.listen-address=ADDR   where to serve /metrics (default :9102); repeat for several
                              addresses (e.g. 127.0.0.1:9102 and [::1]:9102)
  --web.config.file=PATH      TLS, client certificates, security headers and basic auth, in
                              the Prometheus exporter-toolkit format (re-read when it changes)
  --web.max-requests=N        /metrics and / requests queued or running at most; beyond, 503
                              (default 40; 0: no limit)
  --web.max-connections=N     open HTTP connections at most (default 512); a new one evicts
                              the connection that has waited longest for its request
  --web.header-timeout=DUR    time a client has to send a request head and finish the TLS
                              handshake (default 10s)
  --web.idle-timeout=DUR      time a kept-alive connection may wait for its next request
                              (default 90s)
  --web.write-timeout=DUR     time one write of a response may block; a client that stops
                              reading is cut off (default 30s)
  --log.level=LEVEL           error, warn, info (default) or debug

Signals: SIGHUP reloads the configuration file; SIGTERM/SIGINT exit.
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Probes,
    Selftest,
    Version,
    Help,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub command: Command,
    pub config_file: Option<PathBuf>,
    /// `--web.listen-address`, in order (empty: the config's, else the default).
    pub listen_address: Vec<String>,
    pub web_config_file: Option<PathBuf>,
    pub max_requests: Option<usize>,
    /// `--web.max-connections`, `--web.*-timeout`: the server's bounds.
    pub limits: crate::server::Limits,
    pub log_level: log::LevelFilter,
    /// `selftest --json`.
    pub json: bool,
    /// `selftest --btf-path`: kernel BTF file, as `bpf.btfPath`.
    pub btf_path: Option<PathBuf>,
}

/// Parse the command line (without the program name).
pub fn parse_args(argv: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(argv);
    let mut args = Args {
        command: Command::Serve,
        config_file: None,
        listen_address: Vec::new(),
        web_config_file: None,
        max_requests: None,
        limits: crate::server::Limits::default(),
        log_level: log::LevelFilter::Info,
        json: false,
        btf_path: None,
    };
    let mut saw_command = false;
    let mut list_target = false;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("config.file") => {
                let v: PathBuf = p.value().map_err(|e| e.to_string())?.into();
                args.config_file = Some(v);
            }
            Long("web.listen-address") => {
                let v = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?;
                http::parse_listen_address(&v).map_err(|e| format!("--web.listen-address: {e}"))?;
                args.listen_address.push(v);
            }
            Long("web.config.file") => {
                let v: PathBuf = p.value().map_err(|e| e.to_string())?.into();
                args.web_config_file = Some(v);
            }
            Long("web.max-requests") => {
                let v = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?;
                let n = v.trim().parse::<usize>().map_err(|_| {
                    format!("--web.max-requests: `{v}` is not a non-negative number")
                })?;
                args.max_requests = Some(n);
            }
            Long(
                flag @ ("web.max-connections"
                | "web.header-timeout"
                | "web.idle-timeout"
                | "web.write-timeout"),
            ) => {
                let flag = flag.to_string();
                let v = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?;
                let key = format!("--{flag}");
                if flag == "web.max-connections" {
                    let n = v
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| {
                            format!("{key}: `{v}` is not a number of connections (1 or more)")
                        })?;
                    args.limits.max_connections = n;
                } else {
                    let d = crate::config::parse_duration(&key, &v).map_err(|e| e.to_string())?;
                    if d.is_zero() {
                        return Err(format!("{key}: must be more than 0"));
                    }
                    match flag.as_str() {
                        "web.header-timeout" => args.limits.header_timeout = d,
                        "web.idle-timeout" => args.limits.idle_timeout = d,
                        _ => args.limits.write_timeout = d,
                    }
                }
            }
            Long("log.level") => {
                let v = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?;
                args.log_level = match v.to_ascii_lowercase().as_str() {
                    "error" => log::LevelFilter::Error,
                    "warn" => log::LevelFilter::Warn,
                    "info" => log::LevelFilter::Info,
                    "debug" => log::LevelFilter::Debug,
                    _ => {
                        return Err(format!(
                            "--log.level: `{v}` is not one of error, warn, info, debug"
                        ))
                    }
                };
            }
            Long("json") => args.json = true,
            Long("btf-path") => {
                let v: PathBuf = p.value().map_err(|e| e.to_string())?.into();
                if std::fs::File::open(&v).is_err() {
                    return Err(format!(
                        "--btf-path: `{}` is not a readable file",
                        v.display()
                    ));
                }
                args.btf_path = Some(v);
            }
            Long("version") => args.command = Command::Version,
            Long("help") | Short('h') => args.command = Command::Help,
            // KubeSkoop's `inspector list probe`.
            Value(v) if list_target => {
                list_target = false;
                match v.to_str() {
                    Some("probe" | "probes") => args.command = Command::Probes,
                    _ => {
                        return Err(format!(
                            "unknown `list` target `{}` (expected probe)",
                            v.to_string_lossy()
                        ))
                    }
                }
            }
            Value(v) if !saw_command => {
                saw_command = true;
                match v.to_str() {
                    Some("list") => list_target = true,
                    Some("serve") => args.command = Command::Serve,
                    Some("probes") => args.command = Command::Probes,
                    Some("selftest") => args.command = Command::Selftest,
                    Some("help") => args.command = Command::Help,
                    Some("version") => args.command = Command::Version,
                    _ => {
                        return Err(format!(
                            "unknown command `{}` (expected serve, probes or selftest)",
                            v.to_string_lossy()
                        ))
                    }
                }
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if list_target {
        return Err("`list` needs a target: `netsleuth list probe`".into());
    }
    Ok(args)
}

fn load_config(args: &Args) -> Result<Config, String> {
    match &args.config_file {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default_config()),
    }
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    // The inspector's commands have their own flags (`netsleuth top --help`).
    let mut argv = std::env::args_os().skip(1);
    if let Some(cmd @ ("top" | "events")) = argv.next().as_ref().and_then(|a| a.to_str()) {
        let top = cmd == "top";
        crate::sys::default_sigpipe();
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Warn)
            .parse_env("NETSLEUTH_LOG")
            .init();
        return if top {
            crate::top::top_main(argv)
        } else {
            crate::top::events_main(argv)
        };
    }
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("netsleuth: {e}\nRun `netsleuth --help` for usage.");
            return 2;
        }
    };
    env_logger::Builder::new()
        .filter_level(args.log_level)
        .parse_env("NETSLEUTH_LOG")
        .init();
    if args.command != Command::Serve {
        crate::sys::default_sigpipe();
    }
    match args.command {
        Command::Help => {
            print!("{HELP}");
            0
        }
        Command::Version => {
            println!("netsleuth {VERSION}");
            0
        }
        Command::Probes => match load_config(&args) {
            Ok(cfg) => {
                crate::caps::warn_missing(!cfg.bpf_probes.is_empty());
                print_probes(&cfg);
                0
            }
            Err(e) => {
                eprintln!("netsleuth: {e}");
                2
            }
        },
        Command::Selftest => {
            // The self-test's probes load with the default sources: the file joins them.
            crate::bpf::target_btf::set_process_path(args.btf_path.clone());
            let report = crate::selftest::run();
            if args.json {
                print!("{}", report.render_json());
            } else {
                print!("{}", report.render_text());
            }
            if report.ok() {
                0
            } else {
                1
            }
        }
        Command::Serve => serve(args),
    }
}

fn print_probes(cfg: &Config) {
    use crate::status;
    // Where the probes' kernel BTF comes from, or the no-BTF message (stderr: the table on
    // stdout stays machine-readable).
    match crate::probes::kernel_btf_summary(&cfg.btf, &crate::probes::ProbeKind::ALL) {
        Ok(line) => eprintln!("netsleuth: {line}"),
        Err(m) => eprintln!("netsleuth: {m}"),
    }
    println!(
        "{:<14} {:<8} {:<10} DETAILS",
        "PROBE", "ENABLED", "AVAILABLE"
    );
    let enabled: Vec<String> = cfg.probes.iter().map(|p| p.name.clone()).collect();
    let mut rows = status::collector_rows(&enabled);
    // eBPF probes: each is loaded, attached and detached at once to tell the method it would
    // use here, or why none works.
    for kind in crate::probes::ProbeKind::ALL {
        let c = cfg.bpf_probes.iter().find(|p| p.kind == kind);
        let probe = c
            .cloned()
            .unwrap_or_else(|| crate::probes::BpfProbeConfig::new(kind));
        let started = crate::probes::start_probe(&probe, &cfg.btf).map_err(|e| e.to_string());
        if let Ok(p) = &started {
            p.detach();
        }
        let mut row = status::bpf_row(kind, c, Some(started.as_ref().map_err(|e| e.as_str())));
        row.available = Some(started.is_ok());
        rows.push(row);
    }
    rows.push(crate::probes::conntrack_events::status_row(
        cfg.conntrack_events.is_some(),
    ));
    rows.extend(status::deferred_rows(&cfg.deferred_probes));
    for r in rows {
        let avail = match r.available {
            Some(true) => "yes",
            _ => "no",
        };
        println!(
            "{:<14} {:<8} {:<10} {}",
            r.name, r.enabled, avail, r.details
        );
        if let Some(f) = r.default_fields {
            println!("{:<14} {:<8} {:<10}   default fields: {f}", "", "", "");
        }
    }
}

/// Starts the configured eBPF probes and hands their metrics to the engine, replacing the
/// `previous` set: probes whose configuration is unchanged keep running (no gap, no counter
/// reset), the others are detached and started anew. Returns the new set.
fn start_bpf(
    cfg: &Config,
    engine: &Engine,
    inventory: &Arc<Inventory>,
    pipeline: &Option<Arc<crate::events::Pipeline>>,
    previous: Option<Arc<crate::probes::ProbeSet>>,
    probe_state: &Arc<crate::probes::ProbeState>,
) -> Option<Arc<crate::probes::ProbeSet>> {
    probe_state.set_program_stats(cfg.bpf_program_stats);
    probe_state.set_chain_programs(cfg.bpf_chain_programs);
    if cfg.bpf_probes.is_empty() {
        engine.set_map_collectors(Vec::new());
        probe_state.release_run_stats();
        return None;
    }
    let set = Arc::new(crate::probes::ProbeSet::restart(
        previous.as_deref(),
        &cfg.bpf_probes,
        &cfg.btf,
        inventory.clone(),
        pipeline.clone(),
        probe_state.clone(),
    ));
    engine.set_map_collectors(vec![set.clone()]);
    // The previous set (dropped here, or after a scrape in flight) detaches only what the
    // new one did not take over.
    drop(previous);
    Some(set)
}

fn serve(args: Args) -> i32 {
    crate::sys::limit_malloc_arenas();
    let cfg = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netsleuth: {e}");
            return 2;
        }
    };
    let listen: Vec<String> = if !args.listen_address.is_empty() {
        args.listen_address.clone()
    } else {
        vec![cfg
            .listen_address
            .clone()
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string())]
    };
    let mut addr_lists = Vec::new();
    for l in &listen {
        match http::parse_listen_address(l) {
            Ok(a) => addr_lists.push(a),
            Err(e) => {
                eprintln!("netsleuth: {e}");
                return 2;
            }
        }
    }
    let web = match &args.web_config_file {
        Some(p) => match crate::web_config::Watched::load(p) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                eprintln!("netsleuth: {e}");
                return 2;
            }
        },
        None => Arc::new(crate::web_config::Watched::plain()),
    };
    for d in &cfg.deferred_probes {
        log::warn!("probe {d} is configured but not implemented in this build; ignored");
    }
    crate::caps::warn_missing(!cfg.bpf_probes.is_empty());
    if !cfg.bpf_probes.is_empty() {
        let kinds: Vec<_> = cfg.bpf_probes.iter().map(|p| p.kind).collect();
        match crate::probes::kernel_btf_summary(&cfg.btf, &kinds) {
            Ok(line) => log::info!("{line}"),
            Err(m) => log::error!("{m}"),
        }
    }
    let listeners = match crate::server::bind(&addr_lists) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netsleuth: {e}");
            return 1;
        }
    };
    let attributor = match &cfg.state_roots {
        Some(r) => netsleuth_attributor(r),
        None => crate::attribution::Attributor::none(),
    };
    // Netlink sockets are kept per namespace (2 fds each): a shell's soft limit of 1024
    // would cap that near 250 namespaces.
    if let Err(e) = crate::sys::raise_nofile_limit() {
        log::warn!("cannot raise RLIMIT_NOFILE to its hard limit: {e}");
    }
    let inventory = Arc::new(Inventory::with_options(
        "/proc",
        crate::inventory::Options {
            netns_dirs: cfg.netns_dirs.clone(),
            attributor,
            extra_labels: cfg.extra_labels.clone(),
        },
    ));
    crate::inventory::spawn_watcher(inventory.clone());
    let refresh = cfg.refresh_interval;
    let mut names: Vec<String> = cfg.probes.iter().map(|p| p.name.clone()).collect();
    names.extend(cfg.bpf_probes.iter().map(|p| p.kind.name().to_string()));
    let pipeline = start_pipeline(&cfg);
    let bpf_cfg = Config {
        bpf_probes: cfg.bpf_probes.clone(),
        btf: cfg.btf.clone(),
        bpf_program_stats: cfg.bpf_program_stats,
        bpf_chain_programs: cfg.bpf_chain_programs,
        ..Config::default_config()
    };
    let status = Arc::new(crate::status::StatusBoard::default());
    status.set(&cfg, None);
    let ct_events = cfg.conntrack_events.clone();
    let engine = Engine::new(cfg, inventory.clone());
    if let Some(p) = &pipeline {
        engine.add_self_metrics(p.clone());
    }
    // The probes' totals and run-time stats switch, kept across reloads.
    let probe_state = Arc::new(crate::probes::ProbeState::default());
    let bpf_set = start_bpf(&bpf_cfg, &engine, &inventory, &pipeline, None, &probe_state);
    status.set_bpf(bpf_set.clone());
    crate::probes::conntrack_events::apply(
        ct_events.as_ref(),
        &inventory,
        &pipeline,
        engine.as_ref(),
    );
    let mut limits = args.limits.clone();
    if let Some(n) = args.max_requests {
        limits.max_requests = n;
    }
    let app = Arc::new(http::App {
        engine: engine.clone(),
        events: pipeline.clone(),
        status: status.clone(),
        history: Default::default(),
    });
    let server = match crate::server::start(listeners, app, web, limits) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netsleuth: cannot start the HTTP server: {e}");
            return 1;
        }
    };
    engine.add_self_metrics(server.stats.clone());
    let addrs: Vec<String> = server.addrs.iter().map(|a| a.to_string()).collect();
    log::info!(
        "netsleuth {VERSION} listening on {}{}; probes: {}",
        addrs.join(" "),
        if server.tls { " (TLS)" } else { "" },
        names.join(", ")
    );

    // Background rescans keep the inventory warm between scrapes.
    {
        let inventory = inventory.clone();
        let _ = std::thread::Builder::new()
            .name("inventory".into())
            .spawn(move || loop {
                std::thread::sleep(refresh);
                inventory.refresh();
            });
    }

    crate::notify::notify_logged("READY=1");
    let bpf_set = run_signals(
        &args,
        &engine,
        &inventory,
        &pipeline,
        &status,
        bpf_set,
        &probe_state,
    );
    let rc = bpf_set.0;
    crate::notify::notify_logged("STOPPING=1");
    // Detach the eBPF programs and flush the event sinks before exiting.
    // Every holder of the set lets go, so that dropping it detaches for real: the status
    // board keeps one for /status (a cls_bpf filter outlives the process otherwise).
    engine.set_map_collectors(Vec::new());
    status.set_bpf(None);
    drop(bpf_set.1);
    crate::probes::conntrack_events::stop();
    if let Some(p) = pipeline {
        p.close();
    }
    rc
}

/// The event pipeline: always there (so `/events` serves and a reload can add sinks); the
/// readers publish into it only for probes with events enabled.
fn start_pipeline(cfg: &Config) -> Option<Arc<crate::events::Pipeline>> {
    let p = crate::events::Pipeline::from_config(&cfg.event_sinks, EVENT_QUEUE);
    Some(Arc::new(p))
}

/// Events queued per sink: at most about 8 MB of events in flight (they are shared between
/// sinks), ample for a sink with 1 s batches.
const EVENT_QUEUE: usize = 16384;

fn netsleuth_attributor(r: &crate::attribution::StateRoots) -> crate::attribution::Attributor {
    crate::attribution::Attributor::new(r)
}

/// Handle signals on the main thread: SIGHUP reloads, SIGTERM/SIGINT exit 0.
/// Returns the exit code and the running eBPF probe set.
fn run_signals(
    args: &Args,
    engine: &Arc<Engine>,
    inventory: &Arc<Inventory>,
    pipeline: &Option<Arc<crate::events::Pipeline>>,
    status: &crate::status::StatusBoard,
    mut bpf_set: Option<Arc<crate::probes::ProbeSet>>,
    probe_state: &Arc<crate::probes::ProbeState>,
) -> (i32, Option<Arc<crate::probes::ProbeSet>>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::sync::atomic::Ordering;
    let mut signals = match signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return (1, bpf_set);
        }
    };
    for sig in signals.forever() {
        match sig {
            SIGHUP => match load_config(args) {
                Ok(cfg) => {
                    let mut names: Vec<String> =
                        cfg.probes.iter().map(|p| p.name.clone()).collect();
                    names.extend(cfg.bpf_probes.iter().map(|p| p.kind.name().to_string()));
                    let bpf_cfg = Config {
                        bpf_probes: cfg.bpf_probes.clone(),
                        btf: cfg.btf.clone(),
                        bpf_program_stats: cfg.bpf_program_stats,
                        bpf_chain_programs: cfg.bpf_chain_programs,
                        ..Config::default_config()
                    };
                    if let Some(p) = pipeline {
                        let sinks = p.reconfigure(&cfg.event_sinks);
                        log::info!("event sinks: {}", sinks.join(", "));
                    }
                    let ct_events = cfg.conntrack_events.clone();
                    // The running eBPF set stays in place until its successor replaces it:
                    // no scrape in between misses its series.
                    status.set(&cfg, bpf_set.clone());
                    let mut active = ActiveProbes::from_config(cfg);
                    if let Some(s) = &bpf_set {
                        active.maps = vec![s.clone()];
                    }
                    engine.set_probes(active);
                    bpf_set = start_bpf(
                        &bpf_cfg,
                        engine,
                        inventory,
                        pipeline,
                        bpf_set.take(),
                        probe_state,
                    );
                    status.set_bpf(bpf_set.clone());
                    crate::probes::conntrack_events::apply(
                        ct_events.as_ref(),
                        inventory,
                        pipeline,
                        engine.as_ref(),
                    );
                    engine.stats.last_reload_ok.store(1, Ordering::Relaxed);
                    log::info!("configuration reloaded; probes: {}", names.join(", "));
                }
                Err(e) => {
                    engine.stats.last_reload_ok.store(0, Ordering::Relaxed);
                    engine.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    log::error!("configuration reload failed, keeping the running one: {e}");
                }
            },
            _ => {
                log::info!("signal {sig}: exiting");
                return (0, bpf_set);
            }
        }
    }
    (0, bpf_set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn selftest_btf_path() {
        let f = std::env::temp_dir().join(format!("ns-cli-btf-{}", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        let a = p(&["selftest", "--json", &format!("--btf-path={}", f.display())]).unwrap();
        assert_eq!(a.btf_path.as_deref(), Some(f.as_path()));
        std::fs::remove_file(&f).unwrap();
        let e = p(&["selftest", "--btf-path", "/nonexistent/vmlinux"]).unwrap_err();
        assert!(e.contains("--btf-path: `/nonexistent/vmlinux`"), "{e}");
    }

    #[test]
    fn flags() {
        let a = p(&[
            "--config.file=/x.yaml",
            "--web.listen-address",
            "127.0.0.1:1",
            "--log.level=debug",
        ])
        .unwrap();
        assert_eq!(a.command, Command::Serve);
        assert_eq!(a.config_file, Some(PathBuf::from("/x.yaml")));
        assert_eq!(a.listen_address, vec!["127.0.0.1:1".to_string()]);
        let a = p(&[
            "--web.listen-address=127.0.0.1:1",
            "--web.listen-address=[::1]:2",
            "--web.config.file=/w.yml",
            "--web.max-requests=0",
        ])
        .unwrap();
        assert_eq!(a.listen_address.len(), 2);
        assert_eq!(a.web_config_file, Some(PathBuf::from("/w.yml")));
        assert_eq!(a.max_requests, Some(0));
        let a = p(&["--web.header-timeout=2s", "--web.max-connections=7"]).unwrap();
        assert_eq!(a.limits.header_timeout, std::time::Duration::from_secs(2));
        assert_eq!(a.limits.max_connections, 7);
        assert_eq!(p(&["probes"]).unwrap().command, Command::Probes);
        assert_eq!(p(&["--version"]).unwrap().command, Command::Version);
        let s = p(&["selftest", "--json"]).unwrap();
        assert_eq!((s.command, s.json), (Command::Selftest, true));
    }

    #[test]
    fn bad_flags_named() {
        assert!(p(&["--nope"]).unwrap_err().contains("--nope"));
        assert!(p(&["--log.level=loud"])
            .unwrap_err()
            .contains("--log.level"));
        assert!(p(&["--web.listen-address=:abc"])
            .unwrap_err()
            .contains("--web.listen-address"));
        assert!(p(&["frobnicate"]).unwrap_err().contains("frobnicate"));
        assert!(p(&["--web.write-timeout=0s"])
            .unwrap_err()
            .contains("--web.write-timeout"));
        assert!(p(&["--web.max-connections=0"])
            .unwrap_err()
            .contains("--web.max-connections"));
        assert!(p(&["--web.max-requests=-1"])
            .unwrap_err()
            .contains("--web.max-requests"));
    }

    #[test]
    fn list_probe_is_probes() {
        for argv in [
            &["list", "probe"][..],
            &["list", "probes", "--config.file=x"],
        ] {
            assert_eq!(p(argv).unwrap().command, Command::Probes, "{argv:?}");
        }
        assert_eq!(
            p(&["list"]).unwrap_err(),
            "`list` needs a target: `netsleuth list probe`"
        );
        assert_eq!(
            p(&["list", "entity"]).unwrap_err(),
            "unknown `list` target `entity` (expected probe)"
        );
    }
}
