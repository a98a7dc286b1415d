//! The status page at `/` in a real browser: headless Chromium loads it from the real exporter
//! (with the eBPF packetloss probe and a file sink) while our own namespaces exist, one of them
//! named with HTML in it, and drops are induced in another (iptables DROP, 198.18.0.0/15, IPv6
//! off). The rendered DOM (`--dump-dom`) is compared with `/status`, `stat` of the namespaces
//! and the exporter's own counters; a screenshot is saved in `target/test-artifacts/`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{events_of, unique, wait_for, write_config, Exporter, Netns, Pair};

/// `chromium --headless` with its own profile and home (a root-owned HOME may be unwritable,
/// and parallel runs must not share a profile).
fn chromium(home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!(
            "--user-data-dir={}",
            home.join("profile").display()
        ))
        .args(args)
        .env("HOME", home)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The text of an element as Chromium serialises it, back to the characters.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Every `<tr ATTR="…">…</tr>` of the table with id `table`, as (the attribute's value, row
/// text).
fn rows<'a>(dom: &'a str, table: &str, attr: &str) -> Vec<(String, &'a str)> {
    let start = dom
        .find(&format!("<table id=\"{table}\">"))
        .unwrap_or_else(|| panic!("no table #{table} in the DOM:\n{dom}"));
    let end = start + dom[start..].find("</table>").unwrap();
    let body = &dom[start..end];
    let key = format!(" {attr}=\"");
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("<tr") {
        let tr_end = i + rest[i..].find("</tr>").unwrap();
        let tr = &rest[i..tr_end];
        let open_end = tr.find('>').unwrap();
        if let Some(k) = tr[..open_end].find(&key) {
            let v = &tr[k + key.len()..];
            let v = &v[..v.find('"').unwrap()];
            out.push((unescape(v), tr));
        }
        rest = &rest[tr_end + 5..];
    }
    out
}

/// The text and `title` of the `<td>` whose class list holds `class`.
fn cell(row: &str, class: &str) -> (String, String) {
    for td in row.split("<td").skip(1) {
        let open = &td[..td.find('>').unwrap()];
        let classes = open
            .split("class=\"")
            .nth(1)
            .map(|c| &c[..c.find('"').unwrap()])
            .unwrap_or("");
        if !classes.split(' ').any(|c| c == class) {
            continue;
        }
        let title = open
            .split("title=\"")
            .nth(1)
            .map(|t| unescape(&t[..t.find('"').unwrap()]))
            .unwrap_or_default();
        let text = &td[open.len() + 1..td.find("</td>").unwrap()];
        return (unescape(text), title);
    }
    panic!("no cell .{class} in {row}");
}

/// `/proc/net/dev` of one device in a namespace: rx bytes, rx packets.
fn rx(ns: &Netns, device: &str) -> (u64, u64) {
    let m = common::proc_net_dev(&ns.cat("/proc/net/dev"));
    (m[device][0], m[device][1])
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn status_page_in_headless_chromium() {
    if !common::privileged_with(
        "status_page_in_headless_chromium",
        &["chromium", "iptables"],
    ) {
        return;
    }
    let tmp = std::env::temp_dir().join(unique("nslpage"));
    std::fs::create_dir_all(&tmp).unwrap();
    let evp = tmp.join("events.json");
    let cfg = write_config(&format!(
        "metrics:\n  probes: [netdev, tcp, udp, packetloss]\nevent:\n  probes: [packetloss]\n  sinks: [{{name: file, args: {{path: {}}}}}]\n",
        evp.display()
    ));
    let e = Exporter::start(&[&format!("--config.file={}", cfg.display())]);
    wait_for("the eBPF probe attached", Duration::from_secs(15), || {
        (!e.scrape()
            .find("netsleuth_bpf_map_full_total", &[])
            .is_empty())
        .then_some(())
    });

    let p = Pair::dropping(9999);
    // A name with HTML in it (`ip netns` allows anything but `/`): shown as text, no element.
    let odd = Netns::new("sp<script>&\"'<i>");
    let (a_ino, b_ino, odd_ino) = (p.a.inode(), p.b.inode(), odd.inode());
    let stat = |ns: &Netns| -> u64 {
        let out = Command::new("stat")
            .args(["-L", "-c", "%i", &format!("/run/netns/{}", ns.name)])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(stat(&p.b), b_ino);
    wait_for(
        "the inventory knows our namespaces",
        Duration::from_secs(10),
        || {
            let s = e.scrape();
            [a_ino, b_ino, odd_ino]
                .iter()
                .all(|i| !s.of_netns(*i).is_empty())
                .then_some(())
        },
    );

    // The first load has no sample to compare with: it takes two, 1 s apart, and from now on
    // the page is watched, so the next /metrics scrape is the sample the next load compares
    // with.
    let (code, hdrs, first) = e.get("/", &[]);
    assert_eq!(code, 200);
    assert!(hdrs
        .iter()
        .any(|(k, v)| k == "content-type" && v == "text/html; charset=utf-8"));
    let first = String::from_utf8(first).unwrap();
    assert!(first.contains("Rates over the "), "{first}");
    let bs = b_ino.to_string();
    let loss = |s: &common::Scrape| {
        s.sum("netsleuth_packetloss_total", &[("netns", &bs)])
            .unwrap_or(0.0)
    };
    let rx0 = rx(&p.b, &p.dev_b);
    let before = e.scrape();
    let loss0 = loss(&before);

    // Inside the interval: 25 one-byte datagrams into the DROP rule.
    const N: u64 = 25;
    p.send_udp_to_b(9999, N as usize);
    wait_for(
        "the file sink wrote the drops",
        Duration::from_secs(10),
        || {
            let st: serde_json::Value = serde_json::from_slice(&e.get("/status", &[]).2).ok()?;
            let sent = st["sinks"][0]["sent"].as_u64()?;
            (events_of(&evp, "PACKETLOSS", b_ino).len() as u64 >= N && sent >= N).then_some(())
        },
    );

    let home = tmp.join("chromium");
    std::fs::create_dir_all(&home).unwrap();
    let url = format!("http://{}/", e.addr);
    let out = chromium(&home, &["--dump-dom", &url]);
    let dom = String::from_utf8(out.stdout).unwrap();
    let status_after: serde_json::Value = serde_json::from_slice(&e.get("/status", &[]).2).unwrap();
    let after = e.scrape();
    let rx1 = rx(&p.b, &p.dev_b);
    std::fs::write(artifacts().join("status_page.html"), &dom).unwrap();

    // No element came from a name: the page has no script at all, and no <i>.
    assert!(!dom.contains("<script"), "an injected script element");
    assert!(!dom.contains("<i>"), "an injected element");
    assert!(dom.contains(&format!(
        "<span id=\"version\">{}</span>",
        env!("CARGO_PKG_VERSION")
    )));
    for link in ["metrics", "events", "status"] {
        assert!(
            dom.contains(&format!("<a href=\"{link}\">/{link}</a>")),
            "{link}"
        );
    }

    // The probe table: one row per probe /status reports, in its order, with its columns.
    let probes = rows(&dom, "probes", "data-probe");
    let listed = status_after["probes"].as_array().unwrap();
    let names: Vec<&str> = probes.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, want);
    for ((name, row), j) in probes.iter().zip(listed) {
        assert_eq!(cell(row, "name").0, *name);
        assert_eq!(
            cell(row, "enabled").0,
            j["enabled"].as_str().unwrap(),
            "{name}"
        );
        let running = if j["running"] == true { "yes" } else { "no" };
        assert_eq!(cell(row, "running").0, running, "{name}");
        let avail = match j["available"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not tried",
        };
        assert_eq!(cell(row, "available").0, avail, "{name}");
        let details = cell(row, "details").0;
        match j["attach"].as_array() {
            Some(methods) => {
                let m: Vec<&str> = methods.iter().map(|m| m.as_str().unwrap()).collect();
                assert!(
                    details.starts_with(&format!("attach: {}", m.join(", "))),
                    "{name}: {details}"
                );
            }
            None => assert_eq!(details, j["details"].as_str().unwrap(), "{name}"),
        }
    }
    let pl = listed.iter().find(|p| p["name"] == "packetloss").unwrap();
    assert_eq!(
        (pl["enabled"].as_str(), pl["running"].as_bool()),
        (Some("yes"), Some(true))
    );
    let running = listed.iter().filter(|p| p["running"] == true).count();
    assert!(dom.contains(&format!(
        "<small>{running} running of {}</small>",
        listed.len()
    )));

    // The sink: as /status reports it; what it had sent at the load lies between the events
    // our drops made and what /status counts after.
    let sinks = rows(&dom, "sinks", "data-sink");
    let js = status_after["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), js.len());
    assert_eq!(sinks[0].0, js[0]["name"].as_str().unwrap());
    assert_eq!(cell(sinks[0].1, "type").0, "file");
    assert_eq!(
        cell(sinks[0].1, "state").0,
        js[0]["state"].as_str().unwrap()
    );
    let sent: u64 = cell(sinks[0].1, "sent").0.parse().unwrap();
    assert!(
        (N..=js[0]["sent"].as_u64().unwrap()).contains(&sent),
        "sent {sent}"
    );

    // The namespaces: ours, kind `named`, their inodes as `stat` reports them.
    let ents = rows(&dom, "entities", "data-netns");
    let row_of = |ino: u64| {
        ents.iter()
            .find(|(i, _)| *i == ino.to_string())
            .map(|(_, r)| *r)
            .unwrap_or_else(|| panic!("no row for netns {ino}"))
    };
    for (ns, ino) in [(&p.a, a_ino), (&p.b, b_ino), (&odd, odd_ino)] {
        let r = row_of(ino);
        assert_eq!(cell(r, "kind").0, "named");
        assert_eq!(cell(r, "name").0, ns.name, "the name literally");
        assert_eq!(cell(r, "netns").0, stat(ns).to_string());
    }
    assert!(odd.name.contains("<script>&\"'<i>"));
    let named_rows = ents
        .iter()
        .filter(|(_, r)| r.contains("data-kind=\"named\""))
        .count();
    assert!(dom.contains(&format!(
        "<li data-kind=\"named\">named <b>{named_rows}</b></li>"
    )));

    // The rates: from the /metrics scrape before the datagrams to this load.
    let interval = &dom[dom.find("<p class=\"note\" id=\"interval\"").unwrap()..];
    let interval = &interval[..interval.find("</p>").unwrap()];
    assert!(
        interval.contains("from a /metrics scrape to a page load"),
        "{interval}"
    );
    assert!(interval.contains("the packetloss probe"), "{interval}");
    let secs: f64 = interval
        .split("data-seconds=\"")
        .nth(1)
        .and_then(|s| s[..s.find('"')?].parse().ok())
        .unwrap();
    assert!(secs > 0.0 && secs < 30.0, "{secs}");
    let b = row_of(b_ino);
    // Drops: exactly ours, as the exporter's own counter moved between the scrapes around it.
    assert_eq!(loss(&after) - loss0, N as f64);
    assert_eq!(cell(b, "drops"), (N.to_string(), "from packetloss".into()));
    assert_eq!(cell(b, "reason").0, "NETFILTER_DROP");
    assert_eq!(cell(b, "reason").1, format!("NETFILTER_DROP: {N}"));
    let rate: f64 = cell(b, "drop-rate").1.parse().unwrap();
    let expect = N as f64 / secs;
    assert!(
        (rate - expect).abs() <= 1e-9 * expect,
        "drops/s {rate} = {N}/{secs}"
    );
    assert!(b.contains("class=\"dropping\""));
    // Received: at least the 25 datagrams (sent inside the interval), at most what the kernel
    // counted around it (the same when nothing else arrived, as on a quiet link).
    let (pk, by) = (rx1.1 - rx0.1, rx1.0 - rx0.0);
    let packets: f64 = cell(b, "rx-packets")
        .1
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let bytes: f64 = cell(b, "rx-bytes")
        .1
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (N as f64..=pk as f64).contains(&packets),
        "{packets} of {pk}"
    );
    assert!(
        (N as f64 * 43.0..=by as f64).contains(&bytes),
        "{bytes} of {by}"
    );
    let a = row_of(a_ino);
    assert_eq!(cell(a, "drops").0, "0");
    assert_eq!(cell(a, "reason").0, "—");
    eprintln!(
        "status page: {} probes ({running} running), {} namespaces; over {secs:.3} s netns {b_ino} dropped {N} (NETFILTER_DROP, {rate:.3}/s), received {packets} packets / {bytes} bytes (kernel around it: {pk} / {by})",
        probes.len(),
        ents.len()
    );

    // The screenshot, with drops in its interval too.
    p.send_udp_to_b(9999, 40);
    let shot = artifacts().join("status_page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &home,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
            &url,
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    // Width and height from the IHDR chunk.
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), (1280, 900));
    eprintln!("screenshot: {}", shot.display());
    let _ = std::fs::remove_dir_all(&tmp);
}
