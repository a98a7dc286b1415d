//! The status page at `/`: what an operator opens in a browser on the node. Version, uptime,
//! the namespaces by kind and a table of every entity with its rates and top drop reason since
//! the previous sample, every probe as `/status` reports it ([`crate::status::StatusBoard`])
//! and the event sinks with their counts. Server-rendered HTML with an inline stylesheet: no script,
//! no external asset (an air-gapped node renders it whole). Every interpolated string goes
//! through [`escape`].
//!
//! Rates: [`History`] keeps the per-entity counters of the last two samples (a `/metrics`
//! scrape while the page is being watched, or a page load), read from the families the table
//! needs only; a page load compares its own collection with the sample before it. Memory is two
//! samples of a few counters per entity and device, whatever the node's scrape rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::events::SinkStatus;
use crate::inventory::{Entity, EntityKind};
use crate::model::Page;
use crate::status::ProbeRow;
use crate::top::expo;
use crate::top::sample::{compare, Row, Rows, Snapshot};

/// The families the entity table is computed from.
const FAMILIES: [&str; 8] = [
    "netsleuth_netdev_receive_bytes_total",
    "netsleuth_netdev_receive_drop_total",
    "netsleuth_netdev_receive_packets_total",
    "netsleuth_netdev_transmit_bytes_total",
    "netsleuth_netdev_transmit_drop_total",
    "netsleuth_netdev_transmit_packets_total",
    "netsleuth_packetloss_total",
    "netsleuth_probe_up",
];

/// After a page load, `/metrics` scrapes are sampled for this long (nobody watching: no cost
/// on scrapes); a sample older than this is not compared with (a first sample is taken).
const WATCH: Duration = Duration::from_secs(600);

/// The gap between the two samples of a page load that has no recent one to compare with.
const FIRST_GAP: Duration = Duration::from_secs(1);

/// HTML-escapes `s` for text and for quoted attribute values: `& < > " '`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where a sample came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Scrape,
    PageLoad,
}

impl Source {
    fn text(self) -> &'static str {
        match self {
            Source::Scrape => "a /metrics scrape",
            Source::PageLoad => "a page load",
        }
    }
}

struct Obs {
    at: Instant,
    /// Which collection it was read from (concurrent scrapes share one): the same page is
    /// never sampled twice. Weak: the page's text is not kept.
    page: Weak<Page>,
    from: Source,
    snap: Snapshot,
}

#[derive(Default)]
struct Hist {
    before: Option<Obs>,
    last: Option<Obs>,
    viewed: Option<Instant>,
}

/// The samples the page's rates come from.
#[derive(Default)]
pub struct History {
    inner: Mutex<Hist>,
}

/// The entity table's rates: between two samples.
pub struct Interval {
    pub secs: f64,
    pub from: Source,
    pub to: Source,
    pub rows: Rows,
}

fn read(page: &Page) -> Snapshot {
    let mut text = String::new();
    page.family_text(&FAMILIES, &mut text);
    match expo::parse(&text) {
        Ok(samples) => Snapshot::from_samples(&samples),
        Err(e) => {
            log::warn!("status page: {e}");
            Snapshot::default()
        }
    }
}

impl History {
    /// A `/metrics` scrape: sampled when the page was loaded within [`WATCH`].
    pub fn observe_scrape(&self, page: &Arc<Page>) {
        let watched = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .viewed
            .is_some_and(|v| v.elapsed() < WATCH);
        if watched {
            self.record(page, Source::Scrape);
        }
    }

    /// Samples `page` (unless it is the last one sampled); returns the interval from the
    /// sample before it, if there is a recent one.
    fn record(&self, page: &Arc<Page>, from: Source) -> Option<Interval> {
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let same = h
            .last
            .as_ref()
            .is_some_and(|l| std::ptr::eq(l.page.as_ptr(), Arc::as_ptr(page)));
        if !same {
            // Read under the lock, which orders the samples: a few families, quickly.
            let obs = Obs {
                at: Instant::now(),
                page: Arc::downgrade(page),
                from,
                snap: read(page),
            };
            h.before = h.last.replace(obs);
        }
        let (Some(b), Some(l)) = (h.before.as_ref(), h.last.as_ref()) else {
            return None;
        };
        let secs = l.at.duration_since(b.at);
        if secs > WATCH || secs.is_zero() {
            return None;
        }
        Some(Interval {
            secs: secs.as_secs_f64(),
            from: b.from,
            to: l.from,
            rows: compare(&b.snap, &l.snap, secs.as_secs_f64()),
        })
    }

    /// A page load: collects now and compares with the previous sample; without a recent
    /// one, samples again after [`FIRST_GAP`].
    pub fn load(&self, engine: &Engine) -> Option<Interval> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).viewed = Some(Instant::now());
        let page = engine.scrape(None);
        if let Some(i) = self.record(&page, Source::PageLoad) {
            return Some(i);
        }
        drop(page);
        std::thread::sleep(FIRST_GAP);
        let page = engine.scrape(None);
        self.record(&page, Source::PageLoad)
    }
}

/// What the page shows, gathered.
pub struct View<'a> {
    pub version: &'a str,
    pub node: &'a str,
    pub uptime: Duration,
    pub probes: &'a [ProbeRow],
    /// `None`: no event pipeline configured.
    pub sinks: Option<&'a [SinkStatus]>,
    pub events_published: Option<u64>,
    pub entities: &'a [Arc<Entity>],
    pub interval: Option<&'a Interval>,
}

/// `3d 04h 05m`, `2h 03m 04s`, `5m 06s`, `7s`.
pub fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1f3a5f;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:22px;display:inline-block}
header .meta{display:inline-block;margin-left:16px;opacity:.9}
header a{color:#cfe3ff;margin-right:12px}
main{padding:8px 24px 24px}
h2{font-size:17px;margin:20px 0 8px}
h2 small{font-weight:normal;color:#5b6475;margin-left:8px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600;font-size:13px;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name,td.netns,td.pod,td.k8s-namespace{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:13px;word-break:break-all}
td.details{color:#4a5263;font-size:13px}
#probes td.name,#sinks td.name{white-space:nowrap;word-break:normal}
tr.off td{color:#8a93a3}
.yes{color:#137333;font-weight:600}.no{color:#8a93a3}.fail{color:#b3261e;font-weight:600}
ul.kinds{list-style:none;padding:0;margin:0 0 8px}
ul.kinds li{display:inline-block;background:#fff;border:1px solid #d6dae1;border-radius:12px;padding:1px 10px;margin-right:6px}
tr.dropping td.drops,tr.dropping td.drop-rate,tr.dropping td.reason{color:#b3261e;font-weight:600}
p.note{color:#5b6475;margin:4px 0 8px}
";

/// `<td class="CLASS">TEXT</td>`, escaped.
fn td(out: &mut String, class: &str, text: &str) {
    let _ = write!(out, "<td class=\"{}\">{}</td>", escape(class), escape(text));
}

/// A number cell whose title holds the exact figure.
fn td_num(out: &mut String, class: &str, shown: &str, exact: &str) {
    let _ = write!(
        out,
        "<td class=\"num {}\" title=\"{}\">{}</td>",
        escape(class),
        escape(exact),
        escape(shown)
    );
}

fn yes_no(out: &mut String, class: &str, on: bool) {
    let _ = write!(
        out,
        "<td class=\"{} {}\">{}</td>",
        escape(class),
        if on { "yes" } else { "no" },
        if on { "yes" } else { "no" }
    );
}

/// The kinds in the order the page lists them.
fn kind_order(k: &str) -> usize {
    ["host", "pod", "container", "named", "process"]
        .iter()
        .position(|x| *x == k)
        .unwrap_or(9)
}

/// A rate as the table shows it: `12.3K/s`.
fn rate(v: f64) -> String {
    format!("{}/s", crate::top::view::human(v))
}

/// A figure in full (`-0`, which an empty float sum is, as `0`).
fn exact(v: f64) -> String {
    format!("{}", v + 0.0)
}

/// The whole page.
pub fn render(v: &View) -> String {
    let mut o = String::with_capacity(16 << 10);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>netsleuth on {}</title><style>{STYLE}</style></head><body>\n",
        escape(v.node)
    );
    let _ = write!(
        o,
        "<header><h1>netsleuth <span id=\"version\">{}</span></h1><span class=\"meta\">on <b id=\"node\">{}</b> · up <span id=\"uptime\" title=\"{} s\">{}</span></span>\
         <nav class=\"meta\"><a href=\"metrics\">/metrics</a><a href=\"events\">/events</a><a href=\"status\">/status</a><a href=\"-/healthy\">/-/healthy</a></nav></header>\n<main>\n",
        escape(v.version),
        escape(v.node),
        escape(&v.uptime.as_secs().to_string()),
        escape(&uptime(v.uptime))
    );
    // What drops now first; what runs below it.
    namespaces(&mut o, v);
    probes(&mut o, v.probes);
    sinks(&mut o, v.sinks, v.events_published);
    o.push_str("</main></body></html>\n");
    o
}

fn probes(o: &mut String, rows: &[ProbeRow]) {
    let running = rows.iter().filter(|r| r.running).count();
    let _ = write!(
        o,
        "<section><h2>Probes<small>{}</small></h2>\n<table id=\"probes\"><thead><tr><th>probe</th><th>source</th><th>enabled</th><th>available</th><th>running</th><th>attach method per attach point, or why not</th></tr></thead><tbody>\n",
        escape(&format!("{running} running of {}", rows.len()))
    );
    for r in rows {
        let class = if r.running { "on" } else { "off" };
        let _ = write!(
            o,
            "<tr class=\"{}\" data-probe=\"{}\">",
            escape(class),
            escape(&r.name)
        );
        td(o, "name", &r.name);
        td(o, "source", &r.source.replace('_', " "));
        let enabled = r.enabled != "no";
        let _ = write!(
            o,
            "<td class=\"enabled {}\">{}</td>",
            if enabled { "yes" } else { "no" },
            escape(r.enabled)
        );
        let avail = match r.available {
            Some(true) => ("yes", "yes"),
            Some(false) => ("no", if enabled { "fail" } else { "no" }),
            None => ("not tried", "no"),
        };
        let _ = write!(
            o,
            "<td class=\"available {}\">{}</td>",
            escape(avail.1),
            escape(avail.0)
        );
        yes_no(o, "running", r.running);
        let mut why = String::new();
        if !r.attach.is_empty() {
            let _ = write!(why, "attach: {}", r.attach.join(", "));
            for (group, res) in &r.optional {
                match res {
                    Ok(m) => {
                        let _ = write!(why, "; {group}: {}", m.join(", "));
                    }
                    Err(e) => {
                        let _ = write!(why, "; {group}: unavailable: {e}");
                    }
                }
            }
        } else {
            why.push_str(&r.details);
        }
        td(o, "details", &why);
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table></section>\n");
}

fn sinks(o: &mut String, sinks: Option<&[SinkStatus]>, published: Option<u64>) {
    o.push_str("<section><h2>Event sinks");
    if let Some(n) = published {
        let _ = write!(
            o,
            "<small>{}</small>",
            escape(&format!("{n} events published"))
        );
    }
    o.push_str("</h2>\n");
    let Some(sinks) = sinks.filter(|s| !s.is_empty()) else {
        o.push_str("<p class=\"note\" id=\"no-sinks\">No event sinks configured (<code>event.sinks</code>).</p></section>\n");
        return;
    };
    o.push_str("<table id=\"sinks\"><thead><tr><th>sink</th><th>type</th><th>state</th><th class=\"num\">queued</th><th class=\"num\">sent</th><th class=\"num\">failed</th><th class=\"num\">retried</th><th class=\"num\">dropped</th><th>error</th></tr></thead><tbody>\n");
    for s in sinks {
        let _ = write!(o, "<tr data-sink=\"{}\">", escape(&s.name));
        td(o, "name", &s.name);
        td(o, "type", s.kind);
        let _ = write!(
            o,
            "<td class=\"state {}\">{}</td>",
            if s.state == "running" { "yes" } else { "fail" },
            escape(s.state)
        );
        for (class, n) in [
            ("queued", s.queued as u64),
            ("sent", s.sent),
            ("failed", s.failed),
            ("retried", s.retried),
        ] {
            td_num(o, class, &n.to_string(), &n.to_string());
        }
        let total: u64 = s.dropped.iter().map(|(_, n)| n).sum();
        let by: Vec<String> = s
            .dropped
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        td_num(
            o,
            "dropped",
            &total.to_string(),
            &if by.is_empty() {
                "none dropped".to_string()
            } else {
                by.join(", ")
            },
        );
        td(o, "error", s.error.as_deref().unwrap_or(""));
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table></section>\n");
}

fn namespaces(o: &mut String, v: &View) {
    let mut by_kind: BTreeMap<EntityKind, usize> =
        EntityKind::ALL.iter().map(|k| (*k, 0)).collect();
    for e in v.entities {
        *by_kind.entry(e.kind).or_default() += 1;
    }
    let _ = write!(
        o,
        "<section><h2>Namespaces<small>{}</small></h2>\n<ul class=\"kinds\" id=\"kinds\">",
        escape(&format!("{} in all", v.entities.len()))
    );
    for (k, n) in &by_kind {
        let _ = write!(
            o,
            "<li data-kind=\"{}\">{} <b>{}</b></li>",
            escape(k.as_str()),
            escape(k.as_str()),
            escape(&n.to_string())
        );
    }
    o.push_str("</ul>\n");

    // The rows of the interval by namespace inode.
    let mut rows: BTreeMap<u64, &Row> = BTreeMap::new();
    if let Some(i) = v.interval {
        for r in &i.rows.rows {
            rows.entry(r.key.netns).or_insert(r);
        }
    }
    let note = match v.interval {
        Some(i) => {
            let src = i.rows.rows.first().map_or("", |r| r.drops_source);
            let drops = if src == "netdev" {
                "drops are the devices' rx+tx dropped counters (the packetloss probe is not running, so no reason is known)"
            } else {
                "drops and their reasons are the kernel's (the packetloss probe)"
            };
            format!(
                "Rates over the {:.2} s from {} to {}; {drops}.",
                i.secs,
                i.from.text(),
                i.to.text()
            )
        }
        None => "No rates: there was no earlier sample to compare with.".to_string(),
    };
    let secs = v.interval.map_or(0.0, |i| i.secs);
    let _ = writeln!(
        o,
        "<p class=\"note\" id=\"interval\" data-seconds=\"{}\">{}</p>",
        escape(&exact(secs)),
        escape(&note)
    );
    o.push_str("<table id=\"entities\"><thead><tr><th>kind</th><th>name</th><th>k8s namespace</th><th>pod</th><th class=\"num\">netns inode</th><th class=\"num\">rx bytes/s</th><th class=\"num\">tx bytes/s</th><th class=\"num\">rx packets/s</th><th class=\"num\">tx packets/s</th><th class=\"num\">drops</th><th class=\"num\">drops/s</th><th>top drop reason</th></tr></thead><tbody>\n");

    let mut entities: Vec<&Arc<Entity>> = v.entities.iter().collect();
    entities.sort_by(|a, b| {
        kind_order(a.kind.as_str())
            .cmp(&kind_order(b.kind.as_str()))
            .then_with(|| a.name.cmp(&b.name))
            .then(a.inode.cmp(&b.inode))
    });
    for e in entities {
        let row = rows.remove(&e.inode);
        entity_row(
            o,
            e.kind.as_str(),
            &e.name,
            &e.k8s_namespace,
            &e.k8s_pod,
            e.inode,
            row,
        );
    }
    // Namespaces with series the inventory does not know (an eBPF probe saw them).
    for (inode, r) in rows {
        entity_row(
            o,
            &r.key.kind,
            &r.key.name,
            &r.key.k8s_namespace,
            &r.key.k8s_pod,
            inode,
            Some(r),
        );
    }
    o.push_str("</tbody></table></section>\n");
}

fn entity_row(
    o: &mut String,
    kind: &str,
    name: &str,
    k8s_namespace: &str,
    pod: &str,
    inode: u64,
    row: Option<&Row>,
) {
    let dropping = row.is_some_and(|r| r.drops.delta > 0.0);
    let _ = write!(
        o,
        "<tr data-netns=\"{}\" data-kind=\"{}\"{}>",
        escape(&inode.to_string()),
        escape(kind),
        if dropping { " class=\"dropping\"" } else { "" }
    );
    td(o, "kind", kind);
    td(o, "name", name);
    td(o, "k8s-namespace", k8s_namespace);
    td(o, "pod", pod);
    td_num(o, "netns", &inode.to_string(), &inode.to_string());
    match row.filter(|r| !r.new) {
        Some(r) => {
            for (class, d) in [
                ("rx-bytes", &r.rx_bytes),
                ("tx-bytes", &r.tx_bytes),
                ("rx-packets", &r.rx_packets),
                ("tx-packets", &r.tx_packets),
            ] {
                td_num(
                    o,
                    class,
                    &rate(d.rate),
                    &format!("{} in the interval, {}/s", exact(d.delta), exact(d.rate)),
                );
            }
            td_num(
                o,
                "drops",
                &exact(r.drops.delta),
                &format!("from {}", r.drops_source),
            );
            td_num(o, "drop-rate", &rate(r.drops.rate), &exact(r.drops.rate));
            let reasons: Vec<String> = r
                .drop_reasons
                .iter()
                .filter(|(_, n)| **n > 0.0)
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = write!(
                o,
                "<td class=\"reason\" title=\"{}\">{}</td>",
                escape(&reasons.join(", ")),
                escape(r.top_reason.as_deref().unwrap_or("—"))
            );
        }
        None => {
            let why = if row.is_some() {
                "new since the previous sample"
            } else {
                "no series for this namespace in the interval"
            };
            for class in [
                "rx-bytes",
                "tx-bytes",
                "rx-packets",
                "tx-packets",
                "drops",
                "drop-rate",
            ] {
                td_num(o, class, "—", why);
            }
            td(o, "reason", "—");
        }
    }
    o.push_str("</tr>\n");
}

/// `GET /`: the page for the running exporter.
pub fn page(
    engine: &Engine,
    board: &crate::status::StatusBoard,
    events: Option<&crate::events::Pipeline>,
    history: &History,
) -> String {
    let interval = history.load(engine);
    let probes = board.probe_rows();
    let sinks = events.map(|p| p.sink_status());
    let snap = engine.inventory().snapshot();
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    render(&View {
        version: env!("CARGO_PKG_VERSION"),
        node: &node,
        uptime: engine.uptime(),
        probes: &probes,
        sinks: sinks.as_deref(),
        events_published: events
            .map(|p| p.stats.accepted.load(std::sync::atomic::Ordering::Relaxed)),
        entities: &snap.entities,
        interval: interval.as_ref(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(escape("<"), "&lt;");
        assert_eq!(escape(">"), "&gt;");
        assert_eq!(escape("&"), "&amp;");
        assert_eq!(escape("\""), "&quot;");
        assert_eq!(escape("'"), "&#39;");
        assert_eq!(
            escape("a<script>alert('x')</script>&\"b\""),
            "a&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;b&quot;"
        );
        // Escaping is not idempotent on purpose: `&amp;` in a name is shown as typed.
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape("plain ü — 7"), "plain ü — 7");
    }

    #[test]
    fn figures_in_full() {
        assert_eq!(exact(std::iter::empty::<f64>().sum()), "0");
        assert_eq!(exact(25.0), "25");
        assert_eq!(exact(12.5), "12.5");
        assert_eq!(rate(1234.0), "1.23K/s");
    }

    #[test]
    fn uptime_text() {
        assert_eq!(uptime(Duration::from_secs(7)), "7s");
        assert_eq!(uptime(Duration::from_secs(366)), "6m 06s");
        assert_eq!(uptime(Duration::from_secs(7384)), "2h 03m 04s");
        assert_eq!(
            uptime(Duration::from_secs(3 * 86400 + 4 * 3600 + 300)),
            "3d 04h 05m"
        );
    }

    fn probe(name: &str, running: bool, details: &str) -> ProbeRow {
        ProbeRow {
            name: name.into(),
            source: "collector",
            enabled: if running { "yes" } else { "no" },
            available: Some(true),
            running,
            details: details.into(),
            attach: Vec::new(),
            optional: Vec::new(),
            default_fields: None,
        }
    }

    /// Two samples of a page as the exporter writes it: a named namespace whose name and
    /// device carry HTML, 25 drops of one reason and 3 of another in 2 s.
    #[test]
    fn renders_entities_rates_and_hostile_names_as_text() {
        let k = "netns=\"4026532000\",kind=\"named\",name=\"x<script>alert(1)</script>&\\\"'\"";
        let page = |rx: u64, nf: u64, ns: u64| {
            format!(
                "netsleuth_probe_up{{probe=\"packetloss\"}} 1\n\
                 netsleuth_netdev_receive_bytes_total{{{k},device=\"<b>eth0\"}} {rx}\n\
                 netsleuth_packetloss_total{{{k},reason=\"NETFILTER_DROP\",protocol=\"UDP\"}} {nf}\n\
                 netsleuth_packetloss_total{{{k},reason=\"NO_SOCKET\",protocol=\"TCP\"}} {ns}\n"
            )
        };
        let snap = |t: &str| Snapshot::from_samples(&expo::parse(t).unwrap());
        let interval = Interval {
            secs: 2.0,
            from: Source::Scrape,
            to: Source::PageLoad,
            rows: compare(&snap(&page(1000, 5, 1)), &snap(&page(3000, 30, 4)), 2.0),
        };
        let probes = [
            probe("netdev", true, "interface counters"),
            probe("odd<i>", false, "cannot run: <no> & 'never'"),
        ];
        let html = render(&View {
            version: "9.9.9",
            node: "node<1>",
            uptime: Duration::from_secs(61),
            probes: &probes,
            sinks: None,
            events_published: None,
            entities: &[],
            interval: Some(&interval),
        });
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<i>") && !html.contains("<b>eth0") && !html.contains("<no>"));
        assert!(html.contains("<title>netsleuth on node&lt;1&gt;</title>"));
        assert!(html.contains("up <span id=\"uptime\" title=\"61 s\">1m 01s</span>"));
        assert!(html.contains("<small>1 running of 2</small>"));
        assert!(html.contains(
            "<tr class=\"off\" data-probe=\"odd&lt;i&gt;\"><td class=\"name\">odd&lt;i&gt;</td>"
        ));
        assert!(html
            .contains("<td class=\"details\">cannot run: &lt;no&gt; &amp; &#39;never&#39;</td>"));
        // The namespace is not in the inventory: listed from its series, name as text.
        let row_start = html.find("<tr data-netns=\"4026532000\"").expect("the row");
        let row = &html[row_start..html[row_start..].find("</tr>").unwrap() + row_start];
        assert!(row.contains("class=\"dropping\""));
        assert!(row.contains(
            "<td class=\"name\">x&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;</td>"
        ));
        assert!(row.contains(
            "<td class=\"num rx-bytes\" title=\"2000 in the interval, 1000/s\">1.00K/s</td>"
        ));
        assert!(row.contains("<td class=\"num drops\" title=\"from packetloss\">28</td>"));
        assert!(row.contains("<td class=\"num drop-rate\" title=\"14\">14/s</td>"));
        assert!(row.contains(
            "<td class=\"reason\" title=\"NETFILTER_DROP: 25, NO_SOCKET: 3\">NETFILTER_DROP</td>"
        ));
        assert!(html.contains("Rates over the 2.00 s from a /metrics scrape to a page load"));
        assert!(html.contains("<a href=\"metrics\">") && html.contains("<a href=\"events\">"));
        assert!(html.contains("<a href=\"status\">"));
        assert!(html.contains("id=\"no-sinks\""));
    }

    #[test]
    fn without_an_interval_rates_are_dashes() {
        let html = render(&View {
            version: "1",
            node: "n",
            uptime: Duration::ZERO,
            probes: &[],
            sinks: Some(&[SinkStatus {
                name: "loki\"a".into(),
                kind: "loki",
                state: "failed",
                error: Some("refused <x>".into()),
                queued: 0,
                sent: 5,
                failed: 1,
                retried: 2,
                backlog: 0,
                dropped: vec![("sink/queue_full".into(), 3), ("sink/expired".into(), 0)],
            }]),
            events_published: Some(9),
            entities: &[],
            interval: None,
        });
        assert!(html.contains("No rates: there was no earlier sample"));
        assert!(html.contains("<tr data-sink=\"loki&quot;a\">"));
        assert!(html.contains("<td class=\"num sent\" title=\"5\">5</td>"));
        assert!(html.contains("<td class=\"num dropped\" title=\"sink/queue_full: 3\">3</td>"));
        assert!(html.contains("<td class=\"error\">refused &lt;x&gt;</td>"));
        assert!(html.contains("<small>9 events published</small>"));
        assert!(html.contains("<li data-kind=\"named\">named <b>0</b></li>"));
    }
}
