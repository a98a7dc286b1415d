//! What the inspector shows, from [`Rows`]: the full-screen view drawn with ratatui (pure: it
//! draws into any backend, so it is tested on ratatui's `TestBackend`), the plain table of
//! `top --once` and its JSON. Columns that do not fit the width are dropped, least useful first,
//! instead of wrapping; colours only when asked for (the caller honours `NO_COLOR`).

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TRow, Table, TableState};
use ratatui::Frame;

use super::sample::{sort, Column, Filter, Row, Rows};

/// The columns' widths, their headings and the order in which they go when space runs out
/// (first in [`KEEP`], last to go).
fn width(c: Column) -> u16 {
    match c {
        Column::Kind => 9,
        Column::Name => 16,
        Column::RxBytes | Column::TxBytes => 9,
        Column::RxPackets | Column::TxPackets => 8,
        Column::Drops => 8,
        Column::TopReason => 22,
        Column::Resets => 7,
        Column::Retrans => 7,
        Column::Established => 6,
        Column::ListenOverflows => 7,
        Column::ReadP99 => 8,
        Column::QdiscDrops => 8,
    }
}

pub fn heading(c: Column) -> &'static str {
    match c {
        Column::Kind => "KIND",
        Column::Name => "NAME",
        Column::RxBytes => "RX B/s",
        Column::TxBytes => "TX B/s",
        Column::RxPackets => "RX pk/s",
        Column::TxPackets => "TX pk/s",
        Column::Drops => "DROP/s",
        Column::TopReason => "TOP DROP REASON",
        Column::Resets => "RST/s",
        Column::Retrans => "RETR/s",
        Column::Established => "ESTAB",
        Column::ListenOverflows => "LOVF/s",
        Column::ReadP99 => "RD p99",
        Column::QdiscDrops => "QDROP/s",
    }
}

/// Most useful first: a narrow terminal keeps a prefix of this list.
const KEEP: [Column; 14] = [
    Column::Name,
    Column::Drops,
    Column::TopReason,
    Column::Resets,
    Column::RxBytes,
    Column::TxBytes,
    Column::Retrans,
    Column::Kind,
    Column::Established,
    Column::ReadP99,
    Column::ListenOverflows,
    Column::QdiscDrops,
    Column::RxPackets,
    Column::TxPackets,
];

/// The columns that fit in `total` cells (one space between columns), in display order.
pub fn columns_for(total: u16) -> Vec<Column> {
    let mut n = KEEP.len();
    while n > 1 {
        let w: u16 = KEEP[..n].iter().map(|c| width(*c) + 1).sum();
        if w <= total {
            break;
        }
        n -= 1;
    }
    let keep = &KEEP[..n];
    Column::ALL
        .into_iter()
        .filter(|c| keep.contains(c))
        .collect()
}

/// `12.3K`, `4.5M`: decimal (SI) prefixes, at most 6 characters.
pub fn human(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let (v, p) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "K")
    } else {
        (v, "")
    };
    if v >= 100.0 || (p.is_empty() && v.fract() == 0.0) {
        format!("{v:.0}{p}")
    } else if v >= 10.0 {
        format!("{v:.1}{p}")
    } else {
        format!("{v:.2}{p}")
    }
}

pub fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1e-3 => format!("{:.0}us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

/// A cell's text.
pub fn cell(r: &Row, c: Column) -> String {
    match c {
        Column::Kind => r.key.kind.clone(),
        Column::Name => r.key.display(),
        Column::RxBytes => human(r.rx_bytes.rate),
        Column::TxBytes => human(r.tx_bytes.rate),
        Column::RxPackets => human(r.rx_packets.rate),
        Column::TxPackets => human(r.tx_packets.rate),
        Column::Drops => human(r.drops.rate),
        Column::TopReason => r.top_reason.clone().unwrap_or_else(|| "-".into()),
        Column::Resets => human(r.resets.rate),
        Column::Retrans => human(r.retrans.rate),
        Column::Established => r
            .established
            .map(|e| format!("{e:.0}"))
            .unwrap_or_else(|| "-".into()),
        Column::ListenOverflows => human(r.listen_overflows.rate),
        Column::ReadP99 => seconds(r.read_p99),
        Column::QdiscDrops => human(r.qdisc_drops.rate),
    }
}

fn truncate(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// The header's two lines.
pub fn header_lines(node: &str, rows: &Rows, paused: bool) -> [String; 2] {
    let h = &rows.header;
    let kinds: Vec<String> = h
        .netns_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n:.0}"))
        .collect();
    let mut failed = String::new();
    if !h.probes_failed.is_empty() {
        failed = format!(" failed: {}", h.probes_failed.join(","));
    }
    [
        format!(
            "netsleuth {} on {node}   namespaces: {}   interval {:.1}s{}",
            if h.version.is_empty() {
                "?"
            } else {
                &h.version
            },
            if kinds.is_empty() {
                "-".to_string()
            } else {
                kinds.join(", ")
            },
            rows.interval,
            if paused { "   [PAUSED]" } else { "" }
        ),
        format!(
            "probes: {} running{}   events {}/s   lost {}",
            h.probes_running.len(),
            failed,
            human(h.events.rate),
            human(h.events_lost.delta),
        ),
    ]
}

/// The plain table of `top --once`: every column, aligned, one line per entity.
pub fn plain_table(rows: &[&Row], columns: &[Column]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| heading(*c).len()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(r, *c)).collect())
        .collect();
    for line in &cells {
        for (i, c) in line.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut put = |vals: Vec<String>| {
        let mut l = String::new();
        for (i, v) in vals.iter().enumerate() {
            let left = matches!(columns[i], Column::Kind | Column::Name | Column::TopReason);
            if i > 0 {
                l.push_str("  ");
            }
            let pad = widths[i].saturating_sub(v.chars().count());
            if left {
                l.push_str(v);
                if i + 1 < vals.len() {
                    l.push_str(&" ".repeat(pad));
                }
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(v);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    put(columns.iter().map(|c| heading(*c).to_string()).collect());
    for line in cells {
        put(line);
    }
    out
}

fn d(x: &super::sample::Delta) -> serde_json::Value {
    serde_json::json!({"delta": x.delta, "rate": x.rate})
}

/// `top --once --output=json`: the interval, the header and every row with deltas and rates.
pub fn to_json(node: &str, rows: &Rows, shown: &[&Row]) -> serde_json::Value {
    let h = &rows.header;
    let list: Vec<serde_json::Value> = shown
        .iter()
        .map(|r| {
            let devices: serde_json::Map<String, serde_json::Value> = r
                .devices
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::json!({"rx_bytes": v[0], "tx_bytes": v[1], "rx_packets": v[2],
                            "tx_packets": v[3], "rx_drops": v[4], "tx_drops": v[5]}),
                    )
                })
                .collect();
            serde_json::json!({
                "netns": r.key.netns,
                "kind": r.key.kind,
                "k8s_namespace": r.key.k8s_namespace,
                "k8s_pod": r.key.k8s_pod,
                "name": r.key.name,
                "new": r.new,
                "rx_bytes": d(&r.rx_bytes),
                "tx_bytes": d(&r.tx_bytes),
                "rx_packets": d(&r.rx_packets),
                "tx_packets": d(&r.tx_packets),
                "drops": d(&r.drops),
                "drops_source": r.drops_source,
                "drop_reasons": r.drop_reasons,
                "top_drop_reason": r.top_reason,
                "resets": d(&r.resets),
                "resets_by_type": r.resets_by_type,
                "retransmits": d(&r.retrans),
                "established": r.established,
                "listen_overflows": d(&r.listen_overflows),
                "read_latency_p99_seconds": r.read_p99,
                "qdisc_drops": d(&r.qdisc_drops),
                "devices": devices,
            })
        })
        .collect();
    serde_json::json!({
        "node": node,
        "interval_seconds": rows.interval,
        "exporter": {
            "version": h.version,
            "namespaces": h.netns_by_kind,
            "probes_running": h.probes_running,
            "probes_failed": h.probes_failed,
            "events": d(&h.events),
            "events_lost": d(&h.events_lost),
        },
        "rows": list,
    })
}

/// An event line for the detail pane.
#[derive(Clone, Debug, PartialEq)]
pub struct EventLine {
    pub netns: u64,
    pub text: String,
}

/// Everything the full-screen view shows.
#[derive(Debug, Default)]
pub struct ViewState {
    pub node: String,
    pub rows: Rows,
    pub sort: Column,
    pub reverse: bool,
    pub filter: Filter,
    /// The `/` filter as typed (applied).
    pub filter_text: String,
    /// While typing a filter: the text so far.
    pub editing: Option<String>,
    pub selected: usize,
    pub detail: bool,
    pub paused: bool,
    pub colour: bool,
    /// The last fetch's problem, shown in the footer (the last good rows stay).
    pub error: Option<String>,
    pub events: VecDeque<EventLine>,
    /// Rows still waiting for the second sample.
    pub waiting: bool,
}

impl ViewState {
    /// The rows shown, filtered and sorted.
    pub fn shown(&self) -> Vec<&Row> {
        let mut v: Vec<Row> = self
            .rows
            .rows
            .iter()
            .filter(|r| self.filter.matches(&r.key))
            .cloned()
            .collect();
        sort(&mut v, self.sort, self.reverse);
        // Map back to references into self.rows in the sorted order.
        v.iter()
            .filter_map(|s| self.rows.rows.iter().find(|r| r.key == s.key))
            .collect()
    }

    fn style(&self, colour: Color) -> Style {
        if self.colour {
            Style::default().fg(colour)
        } else {
            Style::default()
        }
    }
}

/// Draws the whole view.
pub fn draw(f: &mut Frame, st: &ViewState) {
    let area = f.area();
    let shown = st.shown();
    let detail = st.detail && !shown.is_empty();
    let chunks = Layout::vertical([
        Constraint::Length(2),
        if detail {
            // The rows there are (and their heading), at most 45% of the height.
            Constraint::Length((shown.len() as u16 + 1).clamp(3, area.height * 45 / 100))
        } else {
            Constraint::Min(3)
        },
        if detail {
            Constraint::Min(6)
        } else {
            Constraint::Length(0)
        },
        Constraint::Length(1),
    ])
    .split(area);
    let [h1, h2] = header_lines(&st.node, &st.rows, st.paused);
    let header = Paragraph::new(vec![
        Line::from(Span::styled(
            truncate(&h1, area.width as usize),
            st.style(Color::Cyan).add_modifier(Modifier::BOLD),
        )),
        Line::from(Span::raw(truncate(&h2, area.width as usize))),
    ]);
    f.render_widget(header, chunks[0]);
    draw_table(f, st, &shown, chunks[1]);
    if detail {
        let sel = shown[st.selected.min(shown.len() - 1)];
        draw_detail(f, st, sel, chunks[2]);
    }
    let footer = if let Some(t) = &st.editing {
        format!("filter (regex, Enter applies, Esc cancels): {t}_")
    } else if let Some(e) = &st.error {
        format!("error: {e}")
    } else if st.waiting {
        "first sample taken; rates after the interval ...".to_string()
    } else {
        format!(
            "q quit  ↑↓ select  Enter detail  </> sort: {}{}  r reverse  / filter{}  p pause",
            st.sort.name(),
            if st.reverse { " (reversed)" } else { "" },
            if st.filter_text.is_empty() {
                String::new()
            } else {
                format!(": {}", st.filter_text)
            }
        )
    };
    let style = if st.error.is_some() {
        st.style(Color::Red)
    } else {
        Style::default().add_modifier(Modifier::REVERSED)
    };
    f.render_widget(
        Paragraph::new(Span::styled(truncate(&footer, area.width as usize), style)),
        chunks[3],
    );
}

fn draw_table(f: &mut Frame, st: &ViewState, shown: &[&Row], area: Rect) {
    let cols = columns_for(area.width);
    let name_extra = area
        .width
        .saturating_sub(cols.iter().map(|c| width(*c) + 1).sum::<u16>());
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|c| {
            if *c == Column::Name {
                Constraint::Length(width(*c) + name_extra.min(40))
            } else {
                Constraint::Length(width(*c))
            }
        })
        .collect();
    let head = TRow::new(cols.iter().map(|c| {
        let mut t = heading(*c).to_string();
        if *c == st.sort {
            t.push(if st.reverse { '^' } else { 'v' });
        }
        Cell::from(t)
    }))
    .style(st.style(Color::Yellow).add_modifier(Modifier::BOLD));
    let body: Vec<TRow> = shown
        .iter()
        .map(|r| {
            TRow::new(cols.iter().map(|c| {
                let text = cell(r, *c);
                let hot = match c {
                    Column::Drops | Column::TopReason => r.drops.delta > 0.0,
                    Column::Resets => r.resets.delta > 0.0,
                    Column::Retrans => r.retrans.delta > 0.0,
                    Column::ListenOverflows => r.listen_overflows.delta > 0.0,
                    Column::QdiscDrops => r.qdisc_drops.delta > 0.0,
                    _ => false,
                };
                let s = if hot {
                    st.style(Color::Red)
                } else {
                    Style::default()
                };
                Cell::from(text).style(s)
            }))
        })
        .collect();
    let table = Table::new(body, widths)
        .header(head)
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut ts = TableState::default();
    if !shown.is_empty() {
        ts.select(Some(st.selected.min(shown.len() - 1)));
    }
    f.render_stateful_widget(table, area, &mut ts);
}

fn draw_detail(f: &mut Frame, st: &ViewState, r: &Row, area: Rect) {
    let mut lines: Vec<Line> = Vec::new();
    let bold = Style::default().add_modifier(Modifier::BOLD);
    lines.push(Line::from(Span::styled(
        "devices         rx B/s    tx B/s   rx pk/s   tx pk/s  drops",
        bold,
    )));
    let secs = st.rows.interval.max(f64::MIN_POSITIVE);
    for (dev, v) in &r.devices {
        lines.push(Line::from(format!(
            "{:<14} {:>8}  {:>8}  {:>8}  {:>8}  {:>5}",
            truncate(dev, 14),
            human(v[0] / secs),
            human(v[1] / secs),
            human(v[2] / secs),
            human(v[3] / secs),
            human(v[4] + v[5])
        )));
    }
    let list = |m: &std::collections::BTreeMap<String, f64>| -> String {
        let v: Vec<String> = m
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(k, n)| format!("{k} {n:.0}"))
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    lines.push(Line::from(vec![
        Span::styled(format!("drops ({}): ", r.drops_source), bold),
        Span::raw(if r.drops_source == "packetloss" {
            list(&r.drop_reasons)
        } else {
            format!("{:.0}", r.drops.delta)
        }),
    ]));
    lines.push(Line::from(vec![
        Span::styled("resets: ", bold),
        Span::raw(list(&r.resets_by_type)),
    ]));
    let total: f64 = r.read_buckets.iter().map(|b| b.1).sum();
    if total > 0.0 {
        lines.push(Line::from(Span::styled(
            format!(
                "socket read latency ({total:.0} reads, p99 {})",
                seconds(r.read_p99)
            ),
            bold,
        )));
        let max = r.read_buckets.iter().map(|b| b.1).fold(0.0, f64::max);
        for (le, n) in &r.read_buckets {
            if *n <= 0.0 {
                continue;
            }
            let bar = ((n / max) * 30.0).ceil() as usize;
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                seconds(Some(*le))
            };
            lines.push(Line::from(vec![
                Span::raw(format!("  <= {le:>7} ")),
                Span::styled("#".repeat(bar), st.style(Color::Green)),
                Span::raw(format!(" {n:.0}")),
            ]));
        }
    }
    let evs: Vec<&EventLine> = st
        .events
        .iter()
        .rev()
        .filter(|e| e.netns == r.key.netns)
        .take(8)
        .collect();
    lines.push(Line::from(Span::styled("last events:", bold)));
    if evs.is_empty() {
        lines.push(Line::from("  none"));
    }
    for e in evs {
        lines.push(Line::from(format!("  {}", e.text)));
    }
    let title = format!(
        " {} ({}, netns {}) ",
        r.key.display(),
        r.key.kind,
        r.key.netns
    );
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::sample::{compare, EntityKey, Snapshot};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn state(colour: bool) -> ViewState {
        let a = Snapshot::from_samples(
            &crate::top::expo::parse(include_str!("testdata/first.prom")).unwrap(),
        );
        let b = Snapshot::from_samples(
            &crate::top::expo::parse(include_str!("testdata/second.prom")).unwrap(),
        );
        ViewState {
            node: "node-1".into(),
            rows: compare(&a, &b, 2.0),
            colour,
            ..Default::default()
        }
    }

    fn screen(st: &ViewState, w: u16, h: u16) -> (String, ratatui::buffer::Buffer) {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, st)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut s = String::new();
        for y in 0..h {
            for x in 0..w {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        (s, buf)
    }

    #[test]
    fn narrow_terminals_drop_columns() {
        let all = columns_for(200);
        assert_eq!(all.len(), 14);
        let c80 = columns_for(80);
        assert!(c80.contains(&Column::Name) && c80.contains(&Column::Drops));
        assert!(c80.contains(&Column::TopReason) && c80.contains(&Column::Resets));
        assert!(!c80.contains(&Column::TxPackets) && !c80.contains(&Column::RxPackets));
        let w: u16 = c80.iter().map(|c| width(*c) + 1).sum();
        assert!(w <= 80, "{w}");
        assert_eq!(columns_for(10), vec![Column::Name]);

        let st = state(false);
        let (s, _) = screen(&st, 80, 24);
        let head = s.lines().nth(2).unwrap();
        assert!(head.contains("NAME") && head.contains("DROP/s"), "{s}");
        assert!(head.contains("TOP DROP REASON"), "{s}");
        assert!(!head.contains("TX pk/s"), "dropped at 80 columns: {s}");
        // No line wraps: the drop row of the test namespace is one line with its reason.
        let row = s
            .lines()
            .find(|l| l.contains("nsb"))
            .unwrap_or_else(|| panic!("{s}"));
        assert!(
            row.contains("NETFILTER_DROP") && row.contains(" 14 "),
            "{row}"
        );
        let (wide, _) = screen(&st, 200, 24);
        assert!(wide.lines().nth(2).unwrap().contains("TX pk/s"), "{wide}");
    }

    #[test]
    fn colours_only_when_enabled() {
        let coloured = |st: &ViewState| {
            let (_, buf) = screen(st, 160, 30);
            buf.content()
                .iter()
                .any(|c| c.fg != Color::Reset || c.bg != Color::Reset)
        };
        assert!(coloured(&state(true)));
        assert!(!coloured(&state(false)), "NO_COLOR: no colour anywhere");
    }

    #[test]
    fn detail_pane_and_filter() {
        let mut st = state(false);
        st.filter.any = Some(regex::Regex::new("^nsb").unwrap());
        assert_eq!(st.shown().len(), 1);
        st.detail = true;
        st.events.push_back(EventLine {
            netns: st.shown()[0].key.netns,
            text: "type=TCPRESET_NOSOCK sport=7777".into(),
        });
        let (s, _) = screen(&st, 120, 30);
        assert!(s.contains("NETFILTER_DROP 25"), "{s}");
        assert!(s.contains("NOSOCK 3"), "{s}");
        assert!(s.contains("type=TCPRESET_NOSOCK sport=7777"), "{s}");
        assert!(s.contains("devices"), "{s}");
    }

    #[test]
    fn plain_table_aligned() {
        let st = state(false);
        let shown = st.shown();
        let t = plain_table(&shown, &Column::ALL);
        let mut lines = t.lines();
        let head = lines.next().unwrap();
        assert!(head.starts_with("KIND"), "{head}");
        let names: Vec<&str> = Column::ALL.iter().map(|c| heading(*c)).collect();
        let mut at = 0;
        for n in names {
            let i = head[at..]
                .find(n)
                .unwrap_or_else(|| panic!("{n} in {head}"));
            at += i + n.len();
        }
        assert_eq!(t.lines().count(), shown.len() + 1);
        let k = EntityKey {
            k8s_namespace: "shop".into(),
            k8s_pod: "web-0".into(),
            ..Default::default()
        };
        assert_eq!(k.display(), "shop/web-0");
        assert_eq!(human(1234.0), "1.23K");
        assert_eq!(human(12.5), "12.5");
        assert_eq!(human(3.0), "3");
        assert_eq!(seconds(Some(0.0015)), "1.5ms");
    }
}
