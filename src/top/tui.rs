//! The full-screen `netsleuth top`: a sampler thread fetches a page every interval, an events
//! thread follows `/events` for the detail pane, and the main thread owns the terminal (raw
//! mode, alternate screen; restored on exit and on panic) and the keys.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::client::FetchError;
use super::follow::WireEvent;
use super::sample::{compare, Column, Filter, Snapshot};
use super::view::{self, EventLine, ViewState};
use super::Source;

/// Events kept for the detail pane.
const EVENTS_KEPT: usize = 500;

/// Whether to use colours: not when `NO_COLOR` is set (https://no-color.org), not on a dumb
/// terminal or without a `TERM`.
pub fn colour_wanted(no_color: Option<&str>, term: Option<&str>) -> bool {
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    !matches!(term, None | Some("") | Some("dumb"))
}

enum Msg {
    Sample(Result<Snapshot, FetchError>, Instant),
}

fn sampler(source: Arc<Source>, interval: Duration) -> Receiver<Msg> {
    let (tx, rx) = bounded(2);
    std::thread::Builder::new()
        .name("top-sampler".into())
        .spawn(move || loop {
            // The first sample was taken before the view started.
            std::thread::sleep(interval);
            let r = source.sample();
            if tx.send(Msg::Sample(r, Instant::now())).is_err() {
                return;
            }
        })
        .expect("spawn the sampler thread");
    rx
}

/// Follows `/events` into `store` (the last [`EVENTS_KEPT`]); silent: the view shows metrics
/// even where the event stream is not reachable.
fn events_thread(source: Arc<Source>, store: Arc<Mutex<VecDeque<EventLine>>>) {
    let _ = std::thread::Builder::new()
        .name("top-events".into())
        .spawn(move || {
            let Some(client) = source.client() else {
                return;
            };
            let mut fails = 0;
            loop {
                if let Ok(r) = client.events("") {
                    fails = 0;
                    for line in BufReader::new(r).lines() {
                        let Ok(line) = line else { break };
                        let Ok(ev) = serde_json::from_str::<WireEvent>(&line) else {
                            continue;
                        };
                        let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                        if s.len() >= EVENTS_KEPT {
                            s.pop_front();
                        }
                        s.push_back(EventLine {
                            netns: ev.netns,
                            text: ev.log_line(),
                        });
                    }
                }
                std::thread::sleep(super::follow::backoff(fails));
                fails += 1;
            }
        });
}

/// What a key does to the view; `false` to quit.
pub fn key(st: &mut ViewState, code: KeyCode, mods: KeyModifiers) -> bool {
    if let Some(text) = &mut st.editing {
        match code {
            KeyCode::Enter => {
                let t = text.clone();
                if t.is_empty() {
                    st.filter.any = None;
                    st.filter_text.clear();
                    st.error = None;
                } else {
                    match regex::Regex::new(&t) {
                        Ok(r) => {
                            st.filter.any = Some(r);
                            st.filter_text = t;
                            st.error = None;
                        }
                        // Named; the text stays open for fixing.
                        Err(e) => {
                            st.error = Some(format!("filter: {e}"));
                            return true;
                        }
                    }
                }
                st.editing = None;
                st.selected = 0;
            }
            KeyCode::Esc => st.editing = None,
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        return true;
    }
    let n = st.shown().len();
    match code {
        KeyCode::Char('q') => return false,
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return false,
        KeyCode::Esc if st.detail => st.detail = false,
        KeyCode::Esc => return false,
        KeyCode::Down | KeyCode::Char('j') => {
            st.selected = (st.selected + 1).min(n.saturating_sub(1))
        }
        KeyCode::Up | KeyCode::Char('k') => st.selected = st.selected.saturating_sub(1),
        KeyCode::PageDown => st.selected = (st.selected + 10).min(n.saturating_sub(1)),
        KeyCode::PageUp => st.selected = st.selected.saturating_sub(10),
        KeyCode::Home => st.selected = 0,
        KeyCode::Enter => st.detail = !st.detail,
        KeyCode::Char('>') | KeyCode::Right => st.sort = step(st.sort, 1),
        KeyCode::Char('<') | KeyCode::Left => st.sort = step(st.sort, -1),
        KeyCode::Char('r') => st.reverse = !st.reverse,
        KeyCode::Char('/') => st.editing = Some(st.filter_text.clone()),
        KeyCode::Char('p') | KeyCode::Char(' ') => st.paused = !st.paused,
        _ => {}
    }
    true
}

fn step(c: Column, by: isize) -> Column {
    let all = Column::ALL;
    let i = all.iter().position(|x| *x == c).unwrap_or(0) as isize;
    all[(i + by).rem_euclid(all.len() as isize) as usize]
}

/// Runs the view until `q`; returns the exit code.
pub fn run(source: Source, node: String, interval: Duration, filter: Filter, sort: Column) -> i32 {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        eprintln!(
            "netsleuth top: standard output is not a terminal; use --once for a table or JSON"
        );
        return 1;
    }
    // Fail before taking the terminal when the exporter does not answer at all.
    let source = Arc::new(source);
    let first = match source.sample() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netsleuth top: {e}");
            return e.exit_code();
        }
    };
    let mut prev = (first, Instant::now());
    let events = Arc::new(Mutex::new(VecDeque::new()));
    events_thread(source.clone(), events.clone());
    let mut st = ViewState {
        node,
        sort,
        filter,
        colour: colour_wanted(
            std::env::var("NO_COLOR").ok().as_deref(),
            std::env::var("TERM").ok().as_deref(),
        ),
        waiting: true,
        ..Default::default()
    };
    st.rows = compare(&prev.0, &prev.0, 0.0);
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("netsleuth top: cannot set up the terminal: {e}");
            return 1;
        }
    };
    let rx = sampler(source.clone(), interval);
    let mut rc = 0;
    let mut dirty = true;
    loop {
        if dirty {
            st.events = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Err(e) = terminal.draw(|f| view::draw(f, &st)) {
                eprintln!("netsleuth top: drawing: {e}");
                rc = 1;
                break;
            }
            dirty = false;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Sample(Ok(snap), at)) => {
                if !st.paused {
                    let secs = at.duration_since(prev.1).as_secs_f64();
                    st.rows = compare(&prev.0, &snap, secs);
                    st.waiting = false;
                    st.error = None;
                    prev = (snap, at);
                    dirty = true;
                }
            }
            Ok(Msg::Sample(Err(e), _)) => {
                st.error = Some(e.to_string());
                dirty = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                st.error = Some("the sampler stopped".into());
                dirty = true;
            }
        }
        match event::poll(Duration::from_millis(50)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                    dirty = true;
                    if !key(&mut st, k.code, k.modifiers) {
                        break;
                    }
                    let n = st.shown().len();
                    st.selected = st.selected.min(n.saturating_sub(1));
                }
                Ok(Event::Resize(..)) => dirty = true,
                Ok(_) => {}
                Err(e) => {
                    st.error = Some(format!("terminal: {e}"));
                    rc = 1;
                    break;
                }
            },
            Ok(false) => {}
            Err(e) => {
                st.error = Some(format!("terminal: {e}"));
                rc = 1;
                break;
            }
        }
    }
    ratatui::restore();
    if rc != 0 {
        if let Some(e) = &st.error {
            eprintln!("netsleuth top: {e}");
        }
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_and_dumb_terminals() {
        assert!(colour_wanted(None, Some("xterm-256color")));
        assert!(!colour_wanted(Some("1"), Some("xterm-256color")));
        assert!(
            colour_wanted(Some(""), Some("xterm")),
            "empty NO_COLOR: ignored"
        );
        assert!(!colour_wanted(None, Some("dumb")));
        assert!(!colour_wanted(None, None));
    }

    #[test]
    fn keys_sort_filter_pause_quit() {
        let mut st = ViewState::default();
        assert!(key(&mut st, KeyCode::Char('>'), KeyModifiers::NONE));
        assert_eq!(st.sort, Column::TopReason);
        key(&mut st, KeyCode::Char('<'), KeyModifiers::NONE);
        key(&mut st, KeyCode::Char('<'), KeyModifiers::NONE);
        assert_eq!(st.sort, Column::TxPackets);
        key(&mut st, KeyCode::Char('/'), KeyModifiers::NONE);
        for c in "ns(".chars() {
            key(&mut st, KeyCode::Char(c), KeyModifiers::NONE);
        }
        key(&mut st, KeyCode::Enter, KeyModifiers::NONE);
        assert!(
            st.error.as_deref().unwrap().starts_with("filter:"),
            "bad regex named"
        );
        assert_eq!(st.editing.as_deref(), Some("ns("), "still editing");
        key(&mut st, KeyCode::Backspace, KeyModifiers::NONE);
        key(&mut st, KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(st.filter_text, "ns");
        assert!(st.filter.any.is_some());
        key(&mut st, KeyCode::Char('p'), KeyModifiers::NONE);
        assert!(st.paused);
        key(&mut st, KeyCode::Enter, KeyModifiers::NONE);
        assert!(st.detail);
        assert!(
            key(&mut st, KeyCode::Esc, KeyModifiers::NONE),
            "Esc closes the detail first"
        );
        assert!(!st.detail);
        assert!(!key(&mut st, KeyCode::Char('q'), KeyModifiers::NONE));
    }
}
