//! The Grafana dashboards (`dashboards/*.json`) and the Prometheus rules
//! (`alerts/netsleuth.rules.yml`) against the real thing:
//!
//! - the dashboards' JSON is consistent (variables chained and defined, datasources only
//!   through variables, unique ids, every metric a family docs/metrics.md lists, counters only
//!   under rate/increase, histograms as heatmaps or quantiles, LogQL shaped for the labels the
//!   Loki sink sets) and is what `dashboards/generate.py` writes;
//! - `promtool check rules` and `promtool test rules` (every alert firing and not firing);
//! - a real exporter with every probe this kernel runs, scraped by a real Prometheus loading the
//!   rules, while the test makes a pod-like namespace drop, refuse, retransmit, overflow its
//!   accept queue, read slowly, queue in a tbf qdisc and forward: every dashboard variable and
//!   query and every rule expression goes to Prometheus's HTTP API, is accepted, and returns
//!   data (the drop table the exact count of induced drops), except the panels listed in
//!   [`NO_DATA_HERE`] with the reason.

mod common;
mod loki_server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::*;

const DASHBOARDS: [&str; 3] = [
    "netsleuth-node.json",
    "netsleuth-pod.json",
    "netsleuth-events.json",
];

/// Panels whose probe cannot run on this kernel (checked against [`offers`]: they are expected
/// to return data where fentry or kprobes work), by dashboard file and panel title.
const NO_DATA_HERE: [(&str, &str, &str); 2] = [
    (
        "netsleuth-node.json",
        "virtio-net control command latency",
        "virtcmdlatency attaches only with fentry/fexit or kprobes (and needs a virtio-net device)",
    ),
    (
        "netsleuth-pod.json",
        "Kernel transmit latency",
        "kernellatency's tx side attaches only with fentry or kprobes",
    ),
];

/// Grafana's own variables (set by Grafana, not defined in the dashboard).
const BUILTIN_VARS: [&str; 6] = [
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__auto",
];

/// Stream labels the Loki sink sets (docs/configuration.md, Event delivery).
const LOKI_STREAM_LABELS: [&str; 4] = ["job", "node", "type", "k8s_namespace"];

/// Keys of the sink's logfmt line that the dashboards filter or group on after `| logfmt`.
const LOGFMT_KEYS: [&str; 6] = ["type", "pod", "namespace", "netns", "kind", "name"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn dashboard(file: &str) -> Value {
    serde_json::from_str(&read(&format!("dashboards/{file}")))
        .unwrap_or_else(|e| panic!("dashboards/{file}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .collect()
}

fn var_query(v: &Value) -> String {
    v["query"]["query"]
        .as_str()
        .or_else(|| v["query"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// One query of a panel target.
struct Target<'a> {
    file: &'static str,
    panel: &'a Value,
    target: &'a Value,
    loki: bool,
}

impl Target<'_> {
    fn title(&self) -> &str {
        self.panel["title"].as_str().unwrap_or_default()
    }
    fn expr(&self) -> &str {
        self.target["expr"].as_str().unwrap_or_default()
    }
    fn what(&self) -> String {
        format!(
            "{} / {} / {}",
            self.file,
            self.title(),
            self.target["refId"].as_str().unwrap_or("?")
        )
    }
}

fn targets<'a>(file: &'static str, d: &'a Value) -> Vec<Target<'a>> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let loki = t["datasource"]["type"] == "loki" || p["datasource"]["type"] == "loki";
            out.push(Target {
                file,
                panel: p,
                target: t,
                loki,
            });
        }
    }
    out
}

/// Family names from docs/metrics.md, histograms with their `_bucket`, `_sum`, `_count`.
fn documented_series() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in read("docs/metrics.md").lines() {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        if cells[2] == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{s}"));
            }
        } else {
            out.insert(name.to_string());
        }
    }
    out
}

fn rules() -> serde_norway::Value {
    serde_norway::from_str(&read("alerts/netsleuth.rules.yml")).expect("rules YAML")
}

fn rule_list(r: &serde_norway::Value) -> Vec<&serde_norway::Value> {
    r["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect()
}

fn recorded_names() -> BTreeSet<String> {
    let r = rules();
    rule_list(&r)
        .iter()
        .filter_map(|x| x["record"].as_str().map(String::from))
        .collect()
}

/// Metric names an expression selects (ours, Prometheus's `up` and `scrape_duration_seconds`).
fn metric_names(expr: &str) -> Vec<(usize, String)> {
    let re = regex::Regex::new(
        r"(?:^|[^A-Za-z0-9_:])((?:netsleuth|process)[A-Za-z0-9_:]*|up|scrape_duration_seconds)\s*[\{\[\)]",
    )
    .unwrap();
    re.captures_iter(expr)
        .map(|c| {
            let m = c.get(1).unwrap();
            (m.start(), m.as_str().to_string())
        })
        .collect()
}

/// The function whose argument list encloses position `pos` (`rate`, `sum`, ...; "" if none).
fn enclosing_function(expr: &str, pos: usize) -> String {
    let b = expr.as_bytes();
    let mut depth = 0i32;
    let mut i = pos;
    while i > 0 {
        i -= 1;
        match b[i] {
            b')' => depth += 1,
            b'(' if depth == 0 => {
                let before = expr[..i].trim_end();
                let word: String = before
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return word;
            }
            b'(' => depth -= 1,
            _ => {}
        }
    }
    String::new()
}

fn balanced(s: &str) -> bool {
    let mut stack = Vec::new();
    let mut in_str = false;
    let mut esc = false;
    for c in s.chars() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '{' | '[' => stack.push(c),
            ')' | '}' | ']' => {
                let open = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !in_str
}

/// Structural LogQL check (no Loki here to parse it): balanced; one stream selector whose
/// matchers use only the sink's stream labels, with at least one non-empty equality matcher;
/// a pipeline whose label filters on line fields come after `| logfmt`; metric queries are
/// `count_over_time(<log query> [range])` under aggregations by stream labels or, after
/// logfmt, line fields. Returns what is wrong.
fn logql_problems(expr: &str) -> Vec<String> {
    let mut bad = Vec::new();
    if !balanced(expr) {
        bad.push("unbalanced brackets or quotes".into());
    }
    let Some(open) = expr.find('{') else {
        return vec!["no stream selector".into()];
    };
    let close = open + expr[open..].find('}').expect("closing brace");
    let selector = &expr[open + 1..close];
    let matcher =
        regex::Regex::new(r#"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$"#)
            .unwrap();
    let mut anchored = false;
    for m in selector.split(',') {
        match matcher.captures(m) {
            None => bad.push(format!("bad matcher `{m}`")),
            Some(c) => {
                let (label, op, value) = (&c[1], &c[2], &c[3]);
                if !LOKI_STREAM_LABELS.contains(&label) {
                    bad.push(format!(
                        "`{label}` is not a stream label of the Loki sink ({LOKI_STREAM_LABELS:?})"
                    ));
                }
                if op == "=" && !value.is_empty() {
                    anchored = true;
                }
            }
        }
    }
    if !anchored {
        bad.push(
            "no non-empty equality matcher (Loki refuses selectors matching everything)".into(),
        );
    }
    // The pipeline: from the selector to the range (metric query) or the end.
    let prefix = &expr[..open];
    let metric = !prefix.trim().is_empty();
    let rest = &expr[close + 1..];
    let pipeline_end = if metric {
        rest.rfind('[').unwrap_or(rest.len())
    } else {
        rest.len()
    };
    let pipeline = &rest[..pipeline_end];
    let mut parsed = false;
    let filter =
        regex::Regex::new(r#"^([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=|==)\s*"[^"]*"$"#).unwrap();
    for stage in pipeline.split('|').skip(1).map(str::trim) {
        if stage == "logfmt" || stage == "json" {
            parsed = true;
            continue;
        }
        let Some(c) = filter.captures(stage) else {
            bad.push(format!("unknown pipeline stage `{stage}`"));
            continue;
        };
        let label = &c[1];
        if !LOKI_STREAM_LABELS.contains(&label) {
            if !parsed {
                bad.push(format!("filter on `{label}` before `| logfmt`"));
            } else if !LOGFMT_KEYS.contains(&label) {
                bad.push(format!("`{label}` is not a key of the sink's logfmt line"));
            }
        }
    }
    if metric {
        let range = regex::Regex::new(r"\[\s*(\$__interval|\$__auto|\$__range|\d+[smh])\s*\]\s*\)")
            .unwrap();
        if !range.is_match(rest) {
            bad.push("metric query without a [range]".into());
        }
        if !prefix.contains("count_over_time(") && !prefix.contains("rate(") {
            bad.push("metric query not over count_over_time/rate".into());
        }
        for c in regex::Regex::new(r"by \(([^)]*)\)")
            .unwrap()
            .captures_iter(expr)
        {
            for l in c[1].split(',').map(str::trim) {
                let ok = LOKI_STREAM_LABELS.contains(&l) || (parsed && LOGFMT_KEYS.contains(&l));
                if !ok {
                    bad.push(format!("grouping by `{l}`, which the stream does not have"));
                }
            }
        }
    }
    bad
}

/// The key/value pairs of a logfmt line (values quoted with `"` and `\"` escapes, or bare).
fn logfmt(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == ' ' {
            i += 1;
        }
        let k0 = i;
        while i < b.len() && b[i] != '=' && b[i] != ' ' {
            i += 1;
        }
        let key: String = b[k0..i].iter().collect();
        let mut val = String::new();
        if i < b.len() && b[i] == '=' {
            i += 1;
            if i < b.len() && b[i] == '"' {
                i += 1;
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    val.push(b[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < b.len() && b[i] != ' ' {
                    val.push(b[i]);
                    i += 1;
                }
            }
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

/// Evaluates the dashboards' LogQL shapes over pushed entries the way Loki would: the stream
/// selector's matchers (regexes anchored) on the stream labels, then `| logfmt` and label
/// filters on the parsed keys (stream labels win a name clash, as in Loki). Returns the lines
/// selected and, for `sum by (x) (count_over_time(...))`, the groups.
fn logql_eval(
    q: &str,
    entries: &[(Value, u128, String, Value)],
) -> (Vec<String>, BTreeSet<String>) {
    let re = |op: &str, pat: &str, v: &str| -> bool {
        match op {
            "=" => v == pat,
            "!=" => v != pat,
            "=~" => regex::Regex::new(&format!("^(?:{pat})$"))
                .unwrap()
                .is_match(v),
            "!~" => !regex::Regex::new(&format!("^(?:{pat})$"))
                .unwrap()
                .is_match(v),
            _ => panic!("operator {op}"),
        }
    };
    let m = regex::Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)""#).unwrap();
    let open = q.find('{').unwrap();
    let close = open + q[open..].find('}').unwrap();
    let selector: Vec<(String, String, String)> = m
        .captures_iter(&q[open..close])
        .map(|c| (c[1].to_string(), c[2].to_string(), c[3].to_string()))
        .collect();
    let rest = &q[close + 1..];
    let pipeline = &rest[..rest.rfind('[').unwrap_or(rest.len())];
    let mut lines = Vec::new();
    let mut groups = BTreeSet::new();
    let by = regex::Regex::new(r"by \(([^)]*)\)")
        .unwrap()
        .captures(q)
        .map(|c| c[1].trim().to_string());
    for (stream, _, line, _) in entries {
        let label = |k: &str| stream[k].as_str().unwrap_or_default().to_string();
        if !selector.iter().all(|(k, op, v)| re(op, v, &label(k))) {
            continue;
        }
        let mut labels: BTreeMap<String, String> = stream
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let mut keep = true;
        for stage in pipeline.split('|').skip(1).map(str::trim) {
            if stage == "logfmt" {
                for (k, v) in logfmt(line) {
                    labels.entry(k).or_insert(v);
                }
            } else if let Some(c) = m.captures(stage) {
                let v = labels.get(&c[1]).cloned().unwrap_or_default();
                keep &= re(&c[2], &c[3], &v);
            } else {
                panic!("stage {stage}");
            }
        }
        if keep {
            lines.push(line.clone());
            if let Some(by) = &by {
                groups.insert(labels.get(by).cloned().unwrap_or_default());
            }
        }
    }
    (lines, groups)
}

#[test]
fn dashboards_are_valid_and_consistent() {
    let documented = documented_series();
    let recorded = recorded_names();
    assert!(documented.contains("netsleuth_packetloss_total"));
    let doc = read("docs/dashboards.md");
    let mut uids = BTreeSet::new();
    let used = regex::Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    let window = regex::Regex::new(r"\[([^\]]*)\]").unwrap();
    let mut problems = Vec::new();
    for file in DASHBOARDS {
        let raw = read(&format!("dashboards/{file}"));
        let d = dashboard(file);
        let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
        assert!(schema >= 39, "{file}: schemaVersion {schema} < 39");
        let uid = d["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} twice");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        // Variables: the datasource ones, then node -> instance, k8s_namespace -> k8s_pod.
        let vars = variables(&d);
        let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        let defined: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(defined.len(), names.len(), "{file}: a variable twice");
        let var = |n: &str| {
            *vars
                .iter()
                .find(|v| v["name"] == n)
                .unwrap_or_else(|| panic!("{file}: no variable {n}"))
        };
        assert_eq!(var("datasource")["type"], "datasource");
        assert_eq!(var("datasource")["query"], "prometheus");
        let has_loki = targets(file, &d).iter().any(|t| t.loki);
        if has_loki {
            assert_eq!(var("loki_datasource")["type"], "datasource");
            assert_eq!(var("loki_datasource")["query"], "loki");
        }
        for (v, needs) in [
            ("node", vec![]),
            ("instance", vec!["$node"]),
            ("k8s_namespace", vec!["$node"]),
            ("k8s_pod", vec!["$node", "$k8s_namespace"]),
        ] {
            let q = var_query(var(v));
            assert!(
                q.starts_with("label_values("),
                "{file}: {v} is not label_values(): {q}"
            );
            for n in needs {
                assert!(
                    q.contains(n),
                    "{file}: variable {v} does not narrow by {n}: {q}"
                );
            }
            assert_eq!(var(v)["datasource"]["uid"], "${datasource}", "{file}: {v}");
            // Each variable comes after the ones it uses (Grafana resolves in order).
            let pos = names.iter().position(|x| *x == v).unwrap();
            for (i, other) in names.iter().enumerate() {
                if q.contains(&format!("${other}")) {
                    assert!(i < pos, "{file}: {v} uses ${other}, defined after it");
                }
            }
        }
        // Every `$var` used anywhere is defined or Grafana's own.
        for c in used.captures_iter(&raw) {
            let n = &c[1];
            if !defined.contains(n) && !BUILTIN_VARS.contains(&n) {
                problems.push(format!("{file}: undefined variable ${n}"));
            }
        }
        // Datasources only through the variables (no UIDs of someone's Grafana).
        fn walk(v: &Value, file: &str, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(ds) = m.get("datasource") {
                        let uid = ds["uid"].as_str().unwrap_or_default();
                        let builtin = ds["type"] == "grafana" && uid == "-- Grafana --";
                        if !builtin && uid != "${datasource}" && uid != "${loki_datasource}" {
                            out.push(format!("{file}: datasource not a variable: {ds}"));
                        }
                    }
                    m.values().for_each(|x| walk(x, file, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, file, out)),
                _ => {}
            }
        }
        walk(&d["panels"], file, &mut problems);
        walk(&d["templating"], file, &mut problems);
        walk(&d["annotations"], file, &mut problems);
        // Panels: unique ids, a datasource, inside the 24-column grid, described in the doc.
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let id = p["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{file}: panel id {id} twice");
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && g["h"].as_u64().unwrap() > 0,
                "{file}: gridPos {g}"
            );
            let title = p["title"].as_str().expect("title");
            if p["type"] == "row" {
                continue;
            }
            assert!(
                p["datasource"]["uid"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("${")),
                "{file}: {title}: panel datasource"
            );
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "{file}: {title}: no targets"
            );
            if !doc.contains(title) {
                problems.push(format!(
                    "docs/dashboards.md does not describe panel `{title}` ({file})"
                ));
            }
        }
        // Queries.
        for t in targets(file, &d) {
            let expr = t.expr();
            assert!(!expr.is_empty(), "{}: empty expr", t.what());
            assert_eq!(
                t.target["datasource"],
                t.panel["datasource"],
                "{}: target datasource",
                t.what()
            );
            if t.loki {
                for p in logql_problems(expr) {
                    problems.push(format!("{}: LogQL {expr}: {p}", t.what()));
                }
                continue;
            }
            if !balanced(expr) {
                problems.push(format!("{}: unbalanced: {expr}", t.what()));
            }
            let names = metric_names(expr);
            if names.is_empty() {
                problems.push(format!("{}: no metric in {expr}", t.what()));
            }
            for (pos, n) in names {
                let known = documented.contains(&n)
                    || recorded.contains(&n)
                    || n == "up"
                    || n == "scrape_duration_seconds";
                if !known {
                    problems.push(format!(
                        "{}: `{n}` is neither in docs/metrics.md nor a recording rule",
                        t.what()
                    ));
                }
                let f = enclosing_function(expr, pos);
                if n.ends_with("_total")
                    && !matches!(f.as_str(), "rate" | "increase" | "irate")
                    && !t.title().contains("since the exporter started")
                {
                    problems.push(format!(
                        "{}: counter {n} not under rate()/increase() (in `{f}`)",
                        t.what()
                    ));
                }
                if n.ends_with("_bucket") {
                    let heatmap = t.panel["type"] == "heatmap" && t.target["format"] == "heatmap";
                    if !(heatmap || expr.contains("histogram_quantile(")) || f != "rate" {
                        problems.push(format!(
                            "{}: histogram {n} neither a heatmap nor a quantile of rate()",
                            t.what()
                        ));
                    }
                }
            }
            // Rate windows come from Grafana, never hard-coded.
            for c in window.captures_iter(expr) {
                if !matches!(&c[1], "$__rate_interval" | "$__range") {
                    problems.push(format!("{}: window [{}] in {expr}", t.what(), &c[1]));
                }
            }
        }
    }
    for (file, title, _) in NO_DATA_HERE {
        let d = dashboard(file);
        assert!(
            panels(&d).iter().any(|p| p["title"] == title),
            "NO_DATA_HERE lists `{title}`, which {file} does not have"
        );
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The JSON files are what the generator writes (nobody edited one and not the other).
#[test]
fn dashboards_are_what_the_generator_writes() {
    if !have("python3") {
        skip(
            "dashboards_are_what_the_generator_writes",
            "python3 not on PATH",
        );
        return;
    }
    let dir = std::env::temp_dir().join(unique("nsldash"));
    std::fs::create_dir_all(&dir).unwrap();
    let gen = repo().join("dashboards/generate.py");
    run("python3", &[gen.to_str().unwrap(), dir.to_str().unwrap()]);
    for file in DASHBOARDS {
        let want = read(&format!("dashboards/{file}"));
        let got = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            want == got,
            "dashboards/{file} differs from what dashboards/generate.py writes: run it"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("alerts"))
        .output()
        .expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// promtool accepts the rules, and its unit tests (every alert firing, with its labels and
/// rendered annotations, and not firing) pass; every alert has a severity and runbook-style
/// annotations naming what it is about.
#[test]
fn alert_rules_pass_promtool() {
    if !have("promtool") {
        skip(
            "alert_rules_pass_promtool",
            "promtool not installed (Debian package prometheus)",
        );
        return;
    }
    let out = promtool(&["check", "rules", "netsleuth.rules.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "netsleuth.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    let r = rules();
    let tests: serde_norway::Value =
        serde_norway::from_str(&read("alerts/netsleuth.rules.test.yml")).unwrap();
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().unwrap() {
            let name = a["alertname"].as_str().unwrap().to_string();
            if a["exp_alerts"].as_sequence().unwrap().is_empty() {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let doc = read("docs/dashboards.md");
    let mut alerts = 0;
    for rule in rule_list(&r) {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        alerts += 1;
        let sev = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            matches!(sev, "critical" | "warning" | "info"),
            "{name}: severity `{sev}`"
        );
        let desc = rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            rule["annotations"]["summary"].as_str().is_some() && desc.len() > 80,
            "{name}: summary and a runbook-style description"
        );
        let expr = rule["expr"].as_str().unwrap();
        // Per-namespace alerts name the pod; node-level ones what they are about.
        let per_namespace = ["packetloss", "tcpext", "tcp_", "conntrack", "socketlatency"]
            .iter()
            .any(|m| expr.contains(m));
        let names = if per_namespace {
            desc.contains("$labels.k8s_pod") || desc.contains("$labels.name")
        } else {
            desc.contains("$labels.")
        };
        assert!(names, "{name}: the description names no pod/probe/instance");
        assert!(firing.contains(name), "{name}: no unit test where it fires");
        assert!(
            silent.contains(name),
            "{name}: no unit test where it does not"
        );
        assert!(
            doc.contains(name),
            "docs/dashboards.md does not list {name}"
        );
    }
    assert!(alerts >= 14, "{alerts} alerts");
}

// ---------------------------------------------------------------------------------------------
// The real Prometheus.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A Prometheus server of the test's own (loopback port, own data dir), killed on drop.
struct Prometheus {
    child: Child,
    api: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str, rules: &Path) -> Prometheus {
        let dir = std::env::temp_dir().join(unique("nsldashprom"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n- job_name: netsleuth\n  static_configs:\n  - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            api: format!("127.0.0.1:{port}"),
            dir,
        }
    }

    fn get(&self, path: &str) -> Value {
        let (code, _, body) = http_get(&self.api, path, &[]);
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("GET {path}: {code} {e}: {}", String::from_utf8_lossy(&body))
        });
        v
    }

    /// An instant query: Ok(result) or Err(Prometheus's error).
    fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let v = self.get(&format!(
            "/api/v1/query?query={}&time={:.3}",
            urlencode(q),
            now()
        ));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// A range query over the last `secs` seconds.
    fn query_range(&self, q: &str, secs: f64) -> Result<Vec<Value>, String> {
        let end = now();
        let v = self.get(&format!(
            "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step=2",
            urlencode(q),
            end - secs,
            end
        ));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// What Grafana's `label_values(selector, label)` lists.
    fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>, String> {
        let v = self.get(&format!(
            "/api/v1/label/{label}/values?match[]={}&start={:.3}&end={:.3}",
            urlencode(selector),
            now() - 300.0,
            now()
        ));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect())
    }

    fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q).ok()?;
        value_of(r.first()?)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn value_of(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

/// Runs `f` on a thread inside the named network namespace.
fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A TCP listener on `addr` with accept-queue limit `backlog` (std's is 128), made in `ns`:
/// listen() again on a listening socket sets its new limit.
fn listen_with_backlog(ns: &Netns, addr: SocketAddr, backlog: i32) -> TcpListener {
    ns.within(move || {
        let l = TcpListener::bind(addr).unwrap();
        nix::sys::socket::listen(&l, nix::sys::socket::Backlog::new(backlog).unwrap()).unwrap();
        l
    })
}

/// The pod `b` fills the small receive window of a reader in `a` on `to` with non-blocking
/// writes: the last writes leave data the stack cannot send yet (socket send latency); a reads
/// it all 400 ms later.
fn fill_window(a: &Netns, b: &Netns, to: SocketAddr) {
    let sink = listen_with_backlog(a, to, 16);
    let sinker = std::thread::spawn(move || {
        let (mut s, _) = sink.accept().unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v.len()
    });
    let bulk = spawn_in(&b.name, move || {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 1 << 16];
        let mut sent = 0usize;
        while sent < (64 << 20) {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(600));
        sent
    });
    let sent = bulk.join().unwrap();
    assert_eq!(sinker.join().unwrap(), sent);
}

/// Everything a panel query's variables stand for in this test.
struct Vars(BTreeMap<String, String>);

impl Vars {
    fn apply(&self, expr: &str) -> String {
        let mut s = expr.to_string();
        // Longest names first ($k8s_namespace before a hypothetical $k8s).
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for n in names {
            s = s
                .replace(&format!("${{{n}}}"), &self.0[n])
                .replace(&format!("${n}"), &self.0[n]);
        }
        s
    }
}

/// Parses Grafana's `label_values(selector, label)`.
fn parse_label_values(q: &str) -> (String, String) {
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(): {q}"));
    let (sel, label) = inner.rsplit_once(',').unwrap();
    (sel.trim().to_string(), label.trim().to_string())
}

#[test]
fn every_query_runs_against_a_real_prometheus() {
    const T: &str = "every_query_runs_against_a_real_prometheus";
    if !privileged_with(T, &["prometheus", "iptables", "tc", "podman"]) {
        return;
    }
    let started = Instant::now();
    // The pod: namespace b of a pair (a is its peer), with a CRI-O sandbox record (a run root
    // of the test's own) whose pause process is a `sleep` inside b. Namespace c sits behind b,
    // so that b forwards a's datagrams to c.
    const DROP_PORT: u16 = 7100;
    const DROPS: usize = 7;
    const REFUSED: usize = 3;
    let pair = Pair::dropping(DROP_PORT);
    let (a, b) = (&pair.a, &pair.b);
    let c = Netns::new("nsc");
    let (dev_bc, dev_cb) = (unique("vbc"), unique("vcb"));
    // 198.19.160-199.x: away from the runtimes' CNI range of tests/runtimes (198.19.64.0/20).
    let net = 160 + std::process::id() % 40;
    let (ip_bc, ip_c) = (format!("198.19.{net}.1"), format!("198.19.{net}.2"));
    run(
        "ip",
        &[
            "link", "add", &dev_bc, "netns", &b.name, "type", "veth", "peer", "name", &dev_cb,
            "netns", &c.name,
        ],
    );
    b.exec(
        "ip",
        &["addr", "add", &format!("{ip_bc}/24"), "dev", &dev_bc],
    );
    c.exec(
        "ip",
        &["addr", "add", &format!("{ip_c}/24"), "dev", &dev_cb],
    );
    b.exec("ip", &["link", "set", &dev_bc, "up"]);
    c.exec("ip", &["link", "set", &dev_cb, "up"]);
    c.exec("ip", &["route", "add", "default", "via", &ip_bc]);
    a.exec(
        "ip",
        &[
            "route",
            "add",
            &format!("198.19.{net}.0/24"),
            "via",
            &pair.ip_b,
        ],
    );
    b.sysctl("net.ipv4.ip_forward", "1");
    // b's own transmit goes through a tbf (qdisc latency, qdisc drops, unsent TCP writes).
    a.sysctl("net.ipv4.tcp_rmem", "4096 16384 16384");
    b.sysctl("net.ipv4.tcp_wmem", "4096 1048576 4194304");
    b.exec(
        "tc",
        &[
            "qdisc",
            "add",
            "dev",
            &pair.dev_b,
            "root",
            "tbf",
            "rate",
            "1mbit",
            "burst",
            "32kbit",
            "latency",
            "400ms",
        ],
    );
    // b's SYNs to a's port 7104 go unanswered (retransmits from the pod).
    a.exec(
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "7104", "-j", "DROP"],
    );
    // Connection tracking in the pod (a rule that needs it; it accepts what the policy accepts
    // anyway), so that its table has entries.
    b.exec(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    );
    let pause = Holder::spawn(Command::new("ip").args(["netns", "exec", &b.name, "sleep", "300"]));
    let pod = unique("dash");
    let k8s_ns = "nsl-dash";
    let node = unique("node");
    let root = std::env::temp_dir().join(unique("nsldashrt"));
    let sandbox = format!("{pod}sb");
    let ud = root
        .join("crio/overlay-containers")
        .join(&sandbox)
        .join("userdata");
    std::fs::create_dir_all(&ud).unwrap();
    std::fs::write(
        ud.join("config.json"),
        serde_json::json!({
            "ociVersion": "1.0.2-dev",
            "annotations": {
                "io.kubernetes.cri-o.ContainerType": "sandbox",
                "io.kubernetes.cri-o.SandboxID": sandbox,
                "io.kubernetes.container.name": "POD",
                "io.kubernetes.pod.name": pod,
                "io.kubernetes.pod.namespace": k8s_ns,
                "io.kubernetes.pod.uid": "00000000-0000-4000-8000-000000000016",
            },
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(ud.join("pidfile"), pause.pid().to_string()).unwrap();

    // Every probe; events of two to a Loki stand-in that records the pushes (the Loki panels'
    // queries are evaluated over them) and to a Loki that is not there (its drops are the
    // exporter health panels' data). The sink's `node` is set to the inventory's nodeName, so
    // that one `node` variable selects both.
    // A podman container beside the pod (tests/runtimes/up.sh made its image): the node
    // overview's namespaces by kind must count it.
    let mut podman_objects = PodmanObjects::default();
    let container = unique("nsldash");
    podman_objects.run(&container, &["--network", "none"]);
    let loki = loki_server::TestLoki::start(vec![]);
    let loki_port = free_port();
    let none = root.join("none");
    let cfg = write_config(&format!(
        r#"
metrics:
  probes: [netdev, ip, tcp, udp, tcpext, ipext, sock, softnet, io, fd, conntrack, tcpsummary, qdisc,
           packetloss, tcpreset, tcpretrans, netiftxlat, softirq, socketlatency, kernellatency,
           virtcmdlatency]
event:
  probes: [packetloss, tcpreset]
  sinks:
  - name: loki
    args: {{url: '{loki_url}', node: {node}, batchWait: 200ms}}
  - name: loki
    args: {{url: 'http://127.0.0.1:{loki_port}/loki/api/v1/push', maxRetries: 1, minBackoff: 10ms, maxBackoff: 10ms}}
inventory:
  addNodeLabel: true
  nodeName: {node}
  maxStaleness: 0s
  stateRoots:
    crio: ['{crio}']
    containerd: ['{none}']
    docker: ['{none}']
    podman: [{{graphRoot: /var/lib/containers/storage, runRoot: /run/containers/storage}}]
"#,
        crio = root.join("crio").display(),
        loki_url = loki.url(),
        none = none.display(),
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    let inode = b.inode().to_string();
    wait_for("the pod's series labelled", Duration::from_secs(10), || {
        let s = e.scrape();
        let v = s.find(
            "netsleuth_netdev_receive_packets_total",
            &[("k8s_pod", &pod), ("kind", "pod"), ("k8s_node", &node)],
        );
        (v.first()?.labels["netns"] == inode).then_some(())
    });

    // The rules as shipped, with the recording group evaluated every second instead of 30 s.
    let shipped = read("alerts/netsleuth.rules.yml");
    assert_eq!(shipped.matches("interval: 30s").count(), 1);
    let rules_file = root.join("netsleuth.rules.yml");
    std::fs::write(
        &rules_file,
        shipped.replace("interval: 30s", "interval: 1s"),
    )
    .unwrap();
    let prom = Prometheus::start(&e.addr, &rules_file);
    wait_for(
        "prometheus scrapes the exporter",
        Duration::from_secs(60),
        || {
            let (code, _, body) = try_http_get(&prom.api, "/api/v1/targets", &[]).ok()?;
            let v: Value = serde_json::from_slice(&body).ok()?;
            let t = v["data"]["activeTargets"].as_array()?.first()?.clone();
            (code == 200 && t["health"] == "up").then_some(())
        },
    );

    // --- The conditions. -----------------------------------------------------------------
    let ip_a: std::net::Ipv4Addr = pair.ip_a.parse().unwrap();
    let ip_b: std::net::Ipv4Addr = pair.ip_b.parse().unwrap();
    // A listener in the pod with an accept queue of 1 that never accepts.
    let full = listen_with_backlog(b, SocketAddr::from((ip_b, 7101)), 1);
    // A slow reader in the pod: reads every 150 ms what a sends every 20 ms.
    let slow = listen_with_backlog(b, SocketAddr::from((ip_b, 7102)), 16);
    let reader = std::thread::spawn(move || {
        let (mut s, _) = slow.accept().unwrap();
        let mut buf = [0u8; 65536];
        let mut total = 0;
        loop {
            std::thread::sleep(Duration::from_millis(150));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    let to_slow = SocketAddr::from((ip_b, 7102));
    let writer = spawn_in(&a.name, move || {
        let mut s = TcpStream::connect(to_slow).unwrap();
        for _ in 0..60 {
            s.write_all(b"0123456789abcdef").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // The pod's SYNs to a's DROP rule: retransmitted after 1 s and 3 s (a scrape between).
    let to_blackhole = SocketAddr::from((ip_a, 7104));
    let syn = spawn_in(&b.name, move || {
        TcpStream::connect_timeout(&to_blackhole, Duration::from_millis(3500)).is_err()
    });
    let to_full = SocketAddr::from((ip_b, 7101));
    let overflow = spawn_in(&a.name, move || {
        (0..6)
            .filter_map(|_| TcpStream::connect_timeout(&to_full, Duration::from_millis(300)).ok())
            .collect::<Vec<_>>()
    });
    // Exactly DROPS datagrams into b's iptables DROP rule and REFUSED connects to a closed
    // port of the pod (the pod answers each SYN with a reset), in two rounds with a scrape
    // between: a counter's first sample is where rate() starts, so the second round is what
    // the rate panels show.
    let to_closed = SocketAddr::from((ip_b, 7105));
    let refuse = |n: usize| {
        a.within(move || {
            (0..n)
                .filter(|_| {
                    TcpStream::connect_timeout(&to_closed, Duration::from_secs(2))
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                })
                .count()
        })
    };
    let drops_q =
        format!("sum(netsleuth_packetloss_total{{k8s_pod=\"{pod}\", reason=\"NETFILTER_DROP\"}})");
    let nosock_q = format!("sum(netsleuth_tcpreset_total{{k8s_pod=\"{pod}\", type=\"NOSOCK\"}})");
    // Datagrams the pod forwards to c (and c's port unreachables it forwards back).
    let to_c: SocketAddr = format!("{ip_c}:7106").parse().unwrap();
    let forward = |n: usize| {
        a.within(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..n {
                s.send_to(b"forward me", to_c).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    fill_window(a, b, SocketAddr::from((ip_a, 7103)));
    forward(10);
    pair.send_udp_to_b(DROP_PORT, 3);
    assert_eq!(refuse(1), 1);
    wait_for(
        "the first drops in prometheus",
        Duration::from_secs(20),
        || (prom.value(&drops_q)? == 3.0 && prom.value(&nosock_q)? == 1.0).then_some(()),
    );
    // The first window filled, the second after Prometheus saw the first (rate() needs both).
    let send_q = format!("sum(netsleuth_socketlatency_send_seconds_count{{k8s_pod=\"{pod}\"}})");
    wait_for(
        "the first send latencies in prometheus",
        Duration::from_secs(20),
        || (prom.value(&send_q)? >= 1.0).then_some(()),
    );
    fill_window(a, b, SocketAddr::from((ip_a, 7109)));
    forward(10);
    pair.send_udp_to_b(DROP_PORT, DROPS - 3);
    assert_eq!(refuse(REFUSED - 1), REFUSED - 1);
    // A datagram the pod reads 300 ms after it arrived.
    let to_udp = SocketAddr::from((ip_b, 7108));
    let late = spawn_in(&b.name, move || {
        let s = UdpSocket::bind(to_udp).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf).unwrap().0
    });
    std::thread::sleep(Duration::from_millis(50));
    a.within(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"late", to_udp).unwrap();
    });
    // A burst the tbf cannot take: qdisc drops in the pod.
    let to_a = SocketAddr::from((ip_a, 7107));
    b.within(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..200 {
            let _ = s.send_to(&[1u8; 1400], to_a);
        }
    });
    writer.join().unwrap();
    assert!(syn.join().unwrap(), "the SYN to a's DROP rule was answered");
    let held = overflow.join().unwrap();
    assert_eq!(reader.join().unwrap(), 60 * 16);

    // Prometheus has the induced drops.
    assert_eq!(late.join().unwrap(), 4);
    wait_for(
        "the induced drops in prometheus",
        Duration::from_secs(20),
        || (prom.value(&drops_q)? == DROPS as f64).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));

    // --- Variables: each narrows the next; the test's node, namespace and pod are listed. ---
    let mut vars = Vars(BTreeMap::new());
    vars.0.insert("__rate_interval".into(), "2m".into());
    vars.0.insert("__range".into(), "2m".into());
    vars.0.insert("__interval".into(), "1m".into());
    let want: BTreeMap<&str, String> = [
        ("node", node.clone()),
        ("instance", e.addr.clone()),
        ("k8s_namespace", k8s_ns.to_string()),
        ("k8s_pod", pod.clone()),
    ]
    .into_iter()
    .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in DASHBOARDS {
        let d = dashboard(file);
        for v in variables(&d) {
            if v["type"] != "query" {
                continue;
            }
            let name = v["name"].as_str().unwrap();
            let (sel, label) = parse_label_values(&var_query(v));
            let sel = vars.apply(&sel);
            match prom.label_values(&sel, &label) {
                Err(err) => failures.push(format!("{file}: variable {name}: {err}")),
                Ok(values) => {
                    checked += 1;
                    if !values.contains(&want[name]) {
                        failures.push(format!(
                            "{file}: variable {name} ({sel}) lists {values:?}, not {}",
                            want[name]
                        ));
                    }
                    // Narrowed: the pod variable of our namespace lists only our pod.
                    if name == "k8s_pod" && values != vec![pod.clone()] {
                        failures.push(format!("{file}: k8s_pod lists {values:?}"));
                    }
                }
            }
            vars.0.insert(name.to_string(), want[name].clone());
        }
    }

    // --- Every Prometheus panel query: accepted, and data unless listed. ------------------
    let no_data: BTreeSet<(&str, &str)> = NO_DATA_HERE.iter().map(|(f, t, _)| (*f, *t)).collect();
    // Each listed panel lacks data because this kernel refuses fentry and has no kprobes.
    if !no_data.is_empty() {
        let o = offers();
        assert!(
            !o.fentry() && !o.kprobes(),
            "this kernel offers fentry or kprobes: NO_DATA_HERE's panels should have data"
        );
    }
    let mut by_title: BTreeMap<(String, String), Vec<Vec<Value>>> = BTreeMap::new();
    let mut loki_targets = Vec::new();
    for file in DASHBOARDS {
        let d = dashboard(file);
        for t in targets(file, &d) {
            if t.loki {
                loki_targets.push((file, t.title().to_string(), t.expr().to_string()));
                continue;
            }
            let q = vars.apply(t.expr());
            assert!(!q.contains('$'), "{}: unsubstituted {q}", t.what());
            checked += 1;
            let instant = prom.query(&q);
            if t.target["range"] == true {
                if let Err(err) = prom.query_range(&q, 60.0) {
                    failures.push(format!("{}: range query refused: {err}\n  {q}", t.what()));
                }
            }
            let r = match instant {
                Err(err) => {
                    failures.push(format!("{}: refused: {err}\n  {q}", t.what()));
                    continue;
                }
                Ok(r) => r,
            };
            let listed = no_data.contains(&(file, t.title()));
            if listed {
                if !r.is_empty() {
                    failures.push(format!("{}: listed as without data, has {r:?}", t.what()));
                }
            } else if r.is_empty() {
                failures.push(format!("{}: no data\n  {q}", t.what()));
            } else if q.contains("histogram_quantile(")
                && !r.iter().any(|s| value_of(s).is_some_and(f64::is_finite))
            {
                failures.push(format!(
                    "{}: quantiles of an empty histogram (NaN)\n  {q}",
                    t.what()
                ));
            }
            by_title
                .entry((file.to_string(), t.title().to_string()))
                .or_default()
                .push(r);
        }
    }

    // --- What the induced conditions must show. --------------------------------------------
    let panel = |file: &str, title: &str| -> &Vec<Vec<Value>> {
        by_title
            .get(&(file.to_string(), title.to_string()))
            .unwrap_or_else(|| panic!("{file}: no panel {title}"))
    };
    // The largest value among a panel's series with this label value.
    let series = |file: &str, title: &str, label: &str, value: &str| -> Option<f64> {
        panel(file, title)
            .iter()
            .flatten()
            .filter(|s| s["metric"][label] == value)
            .filter_map(value_of)
            .reduce(f64::max)
    };
    // The exact count of drops per reason, as the kernel counted them.
    let exact = series(
        "netsleuth-pod.json",
        "Drops by reason and protocol, since the exporter started",
        "reason",
        "NETFILTER_DROP",
    );
    if exact != Some(DROPS as f64) {
        failures.push(format!(
            "drop table shows NETFILTER_DROP {exact:?}, not {DROPS}"
        ));
    }
    let table = &panel(
        "netsleuth-pod.json",
        "Drops by reason and protocol, since the exporter started",
    )[0];
    let udp = table
        .iter()
        .find(|s| s["metric"]["reason"] == "NETFILTER_DROP")
        .map(|s| s["metric"]["protocol"].clone());
    if udp != Some(Value::from("UDP")) {
        failures.push(format!("NETFILTER_DROP drops are not UDP: {udp:?}"));
    }
    for (file, title, label, value) in [
        (
            "netsleuth-pod.json",
            "Drops by kernel reason",
            "reason",
            "NETFILTER_DROP",
        ),
        (
            "netsleuth-node.json",
            "Drops by kernel reason",
            "reason",
            "NETFILTER_DROP",
        ),
        (
            "netsleuth-node.json",
            "Drops by pod and reason in the time range",
            "reason",
            "NETFILTER_DROP",
        ),
        (
            "netsleuth-pod.json",
            "Resets by type and retransmits",
            "type",
            "NOSOCK",
        ),
        (
            "netsleuth-node.json",
            "TCP resets by type",
            "type",
            "NOSOCK",
        ),
        (
            "netsleuth-node.json",
            "Events dropped, lost, map full",
            "reason",
            "retries_exhausted",
        ),
    ] {
        match series(file, title, label, value) {
            Some(v) if v > 0.0 => {}
            other => failures.push(format!("{file} / {title}: {label}={value} is {other:?}")),
        }
    }
    // The namespaces by kind: the pod, the named a and c, the podman container, the host.
    for (kind, at_least) in [
        ("pod", 1.0),
        ("named", 2.0),
        ("container", 1.0),
        ("host", 1.0),
    ] {
        match series("netsleuth-node.json", "Namespaces by kind", "kind", kind) {
            Some(v) if v >= at_least => {}
            other => failures.push(format!("namespaces of kind {kind}: {other:?}")),
        }
    }
    // The tbf's drops as the kernel counts them (tc -s) are the pod's qdisc drops in Prometheus.
    let tc_dropped = || -> u64 {
        let out = b.exec("tc", &["-s", "qdisc", "show", "dev", &pair.dev_b]);
        let i = out.find("dropped ").expect("tc -s: dropped") + "dropped ".len();
        out[i..].split(',').next().unwrap().trim().parse().unwrap()
    };
    let qdisc_q = format!(
        "sum(netsleuth_qdisc_drops_total{{k8s_pod=\"{pod}\", device=\"{}\", qdisc_kind=\"tbf\"}})",
        pair.dev_b
    );
    let tc_drops = tc_dropped();
    if tc_drops == 0 {
        failures.push("the tbf dropped nothing".into());
    }
    let seen = (0..50).find_map(|_| {
        let v = prom.value(&qdisc_q);
        if v == Some(tc_drops as f64) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    if seen.is_none() {
        failures.push(format!(
            "qdisc drops in prometheus {:?}, tc -s says {tc_drops}",
            prom.value(&qdisc_q)
        ));
    }
    // The whole drop table is what the test did: the refused SYNs (no socket), the datagrams
    // into the DROP rule, and the tbf's drops.
    let got: BTreeMap<String, String> = table
        .iter()
        .map(|s| {
            (
                format!(
                    "{}/{}",
                    s["metric"]["reason"].as_str().unwrap_or("?"),
                    s["metric"]["protocol"].as_str().unwrap_or("?")
                ),
                s["value"][1].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("NO_SOCKET/TCP", REFUSED as u64),
        ("NETFILTER_DROP/UDP", DROPS as u64),
        ("QDISC_DROP/UDP", tc_drops),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if got != want {
        failures.push(format!("the pod's drop table is {got:?}, not {want:?}"));
    }
    eprintln!("pod drop table: {got:?}; tbf dropped {tc_drops}");
    // Failing collectors and probes (the values are the 0 of the gauge).
    for (file, title, label, value) in [
        (
            "netsleuth-node.json",
            "eBPF probes not attached",
            "probe",
            "virtcmdlatency",
        ),
        (
            "netsleuth-node.json",
            "Collectors failing",
            "collector",
            "ebpf",
        ),
    ] {
        if series(file, title, label, value).is_none() {
            failures.push(format!("{file} / {title}: no {label}={value}"));
        }
    }
    // Rates of what was induced are positive (the first target of each panel).
    for (file, title) in [
        ("netsleuth-pod.json", "Listen overflows and drops"),
        (
            "netsleuth-node.json",
            "Listen queue overflows, top 10 entities",
        ),
        ("netsleuth-node.json", "TCP retransmits, top 10 entities"),
        ("netsleuth-pod.json", "Qdisc drops and backlog"),
        ("netsleuth-pod.json", "Socket read latency p50 / p99"),
        ("netsleuth-pod.json", "Socket send latency p50 / p99"),
        ("netsleuth-pod.json", "Qdisc latency per device"),
        ("netsleuth-pod.json", "Kernel receive latency"),
        ("netsleuth-pod.json", "Kernel forward latency"),
        (
            "netsleuth-node.json",
            "Socket read latency p99, top 10 entities",
        ),
        ("netsleuth-node.json", "Conntrack entries vs limit"),
        ("netsleuth-node.json", "Conntrack usage, top 10 entities"),
    ] {
        let best = panel(file, title)[0]
            .iter()
            .filter_map(value_of)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        if best <= 0.0 {
            failures.push(format!(
                "{file} / {title}: nothing positive ({:?})",
                panel(file, title)[0]
            ));
        }
    }
    // The slow reader left data waiting for up to 150 ms: the p99 says so.
    let p99 = panel("netsleuth-pod.json", "Socket read latency p50 / p99")[1]
        .iter()
        .filter_map(value_of)
        .fold(0.0f64, f64::max);
    if !(0.03..1.0).contains(&p99) {
        let buckets = prom.query(&format!(
            "netsleuth_socketlatency_read_seconds_bucket{{k8s_pod=\"{pod}\"}}"
        ));
        failures.push(format!(
            "socket read p99 {p99} s, not what a 300 ms late read gives: {buckets:?}"
        ));
    }
    // The resets the pod sent: exactly one per refused connect.
    let nosock = prom.value(&nosock_q);
    if nosock != Some(REFUSED as f64) {
        failures.push(format!("pod's NOSOCK resets {nosock:?}, not {REFUSED}"));
    }

    // --- Every rule expression: accepted; the recorded series and alerts exist. --------------
    let r = rules();
    for rule in rule_list(&r) {
        let expr = rule["expr"].as_str().unwrap();
        checked += 1;
        if let Err(err) = prom.query(expr) {
            failures.push(format!(
                "rule {:?}: refused: {err}",
                rule["alert"].as_str().or(rule["record"].as_str())
            ));
        }
        if let Some(rec) = rule["record"].as_str() {
            let sel = if rec.contains("softirq") {
                format!("{rec}{{instance=\"{}\"}}", e.addr)
            } else {
                format!("{rec}{{k8s_pod=\"{pod}\"}}")
            };
            match prom.query(&sel) {
                Ok(v) if !v.is_empty() => {}
                other => failures.push(format!("recording rule {rec}: {other:?}")),
            }
        }
    }
    let alerts = prom.get("/api/v1/alerts");
    let active: Vec<(String, String, String)> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                a["state"].as_str().unwrap_or_default().to_string(),
                a["labels"].to_string(),
            )
        })
        .collect();
    for (name, label) in [
        ("NetsleuthProbeNotAttached", "\"probe\":\"virtcmdlatency\""),
        ("NetsleuthCollectorFailing", "\"collector\":\"ebpf\""),
        ("NetsleuthEventsDropped", "\"reason\":\"retries_exhausted\""),
    ] {
        if !active
            .iter()
            .any(|(n, _, l)| n == name && l.contains(label))
        {
            failures.push(format!(
                "alert {name} ({label}) not pending/firing: {active:?}"
            ));
        }
    }
    drop(held);
    drop(full);
    // --- The Loki queries over what the sink really pushed (no Loki here to run them). ---
    let pod_lines = |want: &str| -> usize {
        loki.entries()
            .iter()
            .filter(|(_, _, line, _)| {
                let kv = logfmt(line);
                kv.get("pod") == Some(&pod)
                    && kv.get("type").map(String::as_str) == Some("PACKETLOSS")
                    && kv.get("reason").map(String::as_str) == Some(want)
            })
            .count()
    };
    wait_for(
        "the pod's PACKETLOSS events at the Loki stand-in",
        Duration::from_secs(10),
        || (pod_lines("NETFILTER_DROP") == DROPS).then_some(()),
    );
    let entries = loki.entries();
    for (file, title, expr) in &loki_targets {
        let q = vars.apply(expr);
        let (lines, groups) = logql_eval(&q, &entries);
        let what = format!("{file} / {title} (Loki)");
        if lines.is_empty() {
            failures.push(format!(
                "{what}: selects none of the {} pushed lines\n  {q}",
                entries.len()
            ));
            continue;
        }
        if let Some(other) = lines.iter().find(|l| logfmt(l).get("pod") != Some(&pod)) {
            failures.push(format!("{what}: selects another pod's line: {other}"));
        }
        if q.contains("by (pod)") && groups != BTreeSet::from([pod.clone()]) {
            failures.push(format!("{what}: groups {groups:?}"));
        }
        if q.contains("by (type)") && !groups.contains("PACKETLOSS") {
            failures.push(format!("{what}: groups {groups:?}"));
        }
        // Through the query: exactly the induced drops and resets.
        let count = |ty: &str, key: &str, val: &str| {
            lines
                .iter()
                .filter(|l| {
                    let kv = logfmt(l);
                    kv.get("type").map(String::as_str) == Some(ty)
                        && kv.get(key).map(String::as_str) == Some(val)
                })
                .count()
        };
        let (nf, nosock) = (
            count("PACKETLOSS", "reason", "NETFILTER_DROP"),
            count("TCPRESET_NOSOCK", "pod", &pod),
        );
        if nf != DROPS || nosock != REFUSED {
            failures.push(format!(
                "{what}: {nf} NETFILTER_DROP and {nosock} TCPRESET_NOSOCK lines, not {DROPS} and {REFUSED}"
            ));
        }
        checked += 1;
    }
    eprintln!(
        "{checked} variables, panel queries and rules checked against Prometheus in {:?}; \
         Loki queries evaluated over the sink's {} pushed lines (not by a Loki): {:?}; \
         without data on this kernel: {:?}",
        started.elapsed(),
        entries.len(),
        loki_targets
            .iter()
            .map(|(f, t, _)| format!("{f} / {t}"))
            .collect::<Vec<_>>(),
        NO_DATA_HERE
    );
    let _ = std::fs::remove_dir_all(&root);
    drop(pause);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
