//! The decoder on hand-built messages and a kernel capture, against `conntrack -E`.
use super::*;

/// One attribute (padded); `nested` sets NLA_F_NESTED as the kernel does.
fn nla(kind: u16, value: &[u8], nested: bool) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&(kind | if nested { 0x8000 } else { 0 }).to_ne_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn tuple4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut ip = nla(CTA_IP_V4_SRC, &src, false);
    ip.extend(nla(CTA_IP_V4_DST, &dst, false));
    let mut p = nla(CTA_PROTO_NUM, &[proto], false);
    p.extend(nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes(), false));
    p.extend(nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes(), false));
    let mut t = nla(CTA_TUPLE_IP, &ip, true);
    t.extend(nla(CTA_TUPLE_PROTO, &p, true));
    t
}

fn msg(ty: u16, flags: u16, family: u8, attrs: &[u8]) -> Vec<u8> {
    let mut payload = vec![family, 0, 0, 0];
    payload.extend_from_slice(attrs);
    let mut v = Vec::new();
    v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&payload);
    v
}

/// A TCP conntrack through SNAT, as the kernel announces a new one (SYN_SENT, zone 7).
fn new_tcp() -> Vec<u8> {
    let mut a = nla(
        CTA_TUPLE_ORIG,
        &tuple4([198, 18, 250, 2], [198, 18, 251, 2], 6, 51066, 8080),
        true,
    );
    a.extend(nla(
        CTA_TUPLE_REPLY,
        &tuple4([198, 18, 251, 2], [198, 18, 251, 1], 6, 8080, 51066),
        true,
    ));
    a.extend(nla(CTA_STATUS, &0x188u32.to_be_bytes(), false));
    a.extend(nla(CTA_TIMEOUT, &120u32.to_be_bytes(), false));
    let tcp = nla(CTA_PROTOINFO_TCP_STATE, &[1], false);
    a.extend(nla(
        CTA_PROTOINFO,
        &nla(CTA_PROTOINFO_TCP, &tcp, true),
        true,
    ));
    a.extend(nla(CTA_MARK, &0x2au32.to_be_bytes(), false));
    a.extend(nla(CTA_ID, &12345u32.to_be_bytes(), false));
    a.extend(nla(CTA_ZONE, &7u16.to_be_bytes(), false));
    msg(1 << 8, NLM_F_CREATE | 0x200, 2, &a)
}

fn parse(b: &[u8]) -> Result<Vec<CtEvent>, NlError> {
    let mut v = Vec::new();
    parse_datagram(b, &mut v).map(|()| v)
}

#[test]
fn new_tcp_conntrack_with_nat_reply() {
    let evs = parse(&new_tcp()).unwrap();
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(e.kind, CtKind::New);
    assert_eq!(e.tcp_state, Some(1));
    assert_eq!(e.reply.dst, Some("198.18.251.1".parse().unwrap()));
    let ev = to_event(e, EventEntity::unknown(4026532001));
    assert_eq!(
        ev.log_line(),
        "type=ConntrackNew pod= namespace= netns=4026532001 kind=unknown name= protocol=TCP \
         saddr=198.18.250.2 sport=51066 daddr=198.18.251.2 dport=8080 \
         reply_saddr=198.18.251.2 reply_sport=8080 reply_daddr=198.18.251.1 reply_dport=51066 \
         state=SYN_SENT status=CONFIRMED|SRC_NAT_DONE|DST_NAT_DONE replied=false mark=42 \
         zone=7 id=12345 timeout=120"
    );
}

/// `key=value` tokens of a `conntrack -E` line, in order.
fn kv(line: &str) -> Vec<(&str, &str)> {
    line.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .collect()
}

/// Datagrams captured from a 6.18 kernel (`tests/fixtures/netlink/ct_events.sh`) decode to
/// exactly what `conntrack -E` printed for the same events, line for line.
#[test]
fn kernel_capture_matches_conntrack_tool() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/netlink");
    let evs = parse(&std::fs::read(dir.join("ct_events.bin")).unwrap()).unwrap();
    let (exp, ct): (Vec<&CtEvent>, Vec<&CtEvent>) = evs
        .iter()
        .partition(|e| matches!(e.kind, CtKind::ExpNew | CtKind::ExpDestroy));
    let text = std::fs::read_to_string(dir.join("ct_events_conntrack.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(ct.len(), lines.len());
    let count = |k: CtKind| ct.iter().filter(|e| e.kind == k).count();
    assert_eq!(
        (
            count(CtKind::New),
            count(CtKind::Update),
            count(CtKind::Destroy)
        ),
        (5, 20, 5)
    );
    for (e, l) in ct.iter().zip(&lines) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let kind = match w[0].trim_matches(['[', ']']) {
            "NEW" => CtKind::New,
            "UPDATE" => CtKind::Update,
            "DESTROY" => CtKind::Destroy,
            k => panic!("{k}"),
        };
        assert_eq!(e.kind, kind, "{l}");
        assert_eq!(e.orig.proto, w[2].parse().ok(), "{l}");
        let state = w[3..]
            .iter()
            .take_while(|t| !t.contains('='))
            .find(|t| t.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        assert_eq!(e.tcp_state.map(tcp_state_name), state.copied(), "{l}");
        if e.kind != CtKind::Destroy {
            assert_eq!(e.timeout, w[3].parse().ok(), "{l}");
        }
        // Original tuple first, then the reply (after NAT), as the tool prints them.
        let kv = kv(l);
        let half = kv.iter().position(|(k, _)| *k == "src").unwrap();
        let second = kv[half + 1..]
            .iter()
            .position(|(k, _)| *k == "src")
            .unwrap()
            + half
            + 1;
        for (t, part) in [(&e.orig, &kv[half..second]), (&e.reply, &kv[second..])] {
            let get = |k: &str| part.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
            assert_eq!(t.src.map(|a| a.to_string()).as_deref(), get("src"), "{l}");
            assert_eq!(t.dst.map(|a| a.to_string()).as_deref(), get("dst"), "{l}");
            let num = |k: &str| get(k).map(|v| v.parse::<u64>().unwrap());
            assert_eq!(t.sport.map(u64::from), num("sport"), "{l}");
            assert_eq!(t.dport.map(u64::from), num("dport"), "{l}");
            assert_eq!(t.icmp_type.map(u64::from), num("type"), "{l}");
            assert_eq!(t.icmp_code.map(u64::from), num("code"), "{l}");
            assert_eq!(t.icmp_id.map(u64::from), num("id"), "{l}");
        }
        let status = e.status.unwrap();
        assert_eq!(status & 4 != 0, l.contains("[ASSURED]"), "{l}");
        assert_eq!(status & 2 == 0, l.contains("[UNREPLIED]"), "{l}");
        assert_eq!(
            e.helper.as_deref(),
            l.contains("helper=ftp").then_some("ftp"),
            "{l}"
        );
        // MASQUERADE: the reply goes to the router's outer address.
        assert_ne!(status & (1 << 4), 0, "SRC_NAT: {l}");
    }
    let text = std::fs::read_to_string(dir.join("ct_events_expect.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(exp.len(), 2);
    assert_eq!(
        (exp[0].kind, exp[1].kind),
        (CtKind::ExpNew, CtKind::ExpDestroy)
    );
    for (e, l) in exp.iter().zip(&lines) {
        let kv = kv(l);
        let get = |k: &str| kv.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
        let m = e.master.as_ref().unwrap();
        assert_eq!(e.orig.dport, Some(50000), "{l}");
        assert_eq!(
            e.orig.src.map(|a| a.to_string()).as_deref(),
            get("src"),
            "{l}"
        );
        assert_eq!(
            m.dst.map(|a| a.to_string()).as_deref(),
            get("master-dst"),
            "{l}"
        );
        let master_sport = kv.iter().filter(|(k, _)| *k == "sport").nth(2).unwrap().1;
        assert_eq!(
            m.sport.map(|p| p.to_string()).as_deref(),
            Some(master_sport),
            "{l}"
        );
        assert_eq!(m.dport, Some(21));
        assert_eq!(e.helper.as_deref(), Some("ftp"));
        assert_eq!(
            e.timeout.map(|t| t.to_string()).as_deref(),
            l.split_whitespace().nth(1)
        );
    }
}

#[test]
fn kinds_from_type_and_flags() {
    let t = tuple4([198, 18, 0, 1], [198, 18, 0, 2], 17, 1, 2);
    let a = nla(CTA_TUPLE_ORIG, &t, true);
    let kind = |ty: u16, flags: u16| parse(&msg(ty, flags, 2, &a)).unwrap()[0].kind;
    assert_eq!(kind(1 << 8, NLM_F_CREATE), CtKind::New);
    assert_eq!(kind(1 << 8, 0), CtKind::Update);
    assert_eq!(kind(1 << 8 | 2, 0), CtKind::Destroy);
    // Other nfnetlink messages (a dump's IPCTNL_MSG_CT_GET, another subsystem) are no events.
    assert!(parse(&msg(1 << 8 | 1, 0, 2, &a)).unwrap().is_empty());
    assert!(parse(&msg(3 << 8, 0, 2, &a)).unwrap().is_empty());
    // Destroy without state or mark still says mark 0 and zone 0 (the defaults).
    let ev = to_event(
        &parse(&msg(1 << 8 | 2, 0, 2, &a)).unwrap()[0],
        EventEntity::unknown(1),
    );
    assert_eq!(ev.field("mark"), Some(&FieldValue::UInt(0)));
    assert_eq!(ev.field("zone"), Some(&FieldValue::UInt(0)));
    assert_eq!(ev.field("state"), None);
}

#[test]
fn ipv6_and_icmp_tuples() {
    let s: Ipv6Addr = "2001:2::1".parse().unwrap();
    let d: Ipv6Addr = "2001:2:0:1::2".parse().unwrap();
    let mut ip = nla(CTA_IP_V6_SRC, &s.octets(), false);
    ip.extend(nla(CTA_IP_V6_DST, &d.octets(), false));
    let mut p = nla(CTA_PROTO_NUM, &[58], false);
    p.extend(nla(CTA_PROTO_ICMPV6_ID, &777u16.to_be_bytes(), false));
    p.extend(nla(CTA_PROTO_ICMPV6_TYPE, &[128], false));
    p.extend(nla(CTA_PROTO_ICMPV6_CODE, &[0], false));
    let mut t = nla(CTA_TUPLE_IP, &ip, true);
    t.extend(nla(CTA_TUPLE_PROTO, &p, true));
    let e = &parse(&msg(
        1 << 8,
        NLM_F_CREATE,
        10,
        &nla(CTA_TUPLE_ORIG, &t, true),
    ))
    .unwrap()[0];
    assert_eq!(e.orig.src, Some(IpAddr::V6(s)));
    assert_eq!((e.orig.icmp_id, e.orig.icmp_type), (Some(777), Some(128)));
    let ev = to_event(e, EventEntity::unknown(1));
    assert_eq!(
        ev.field("protocol"),
        Some(&FieldValue::Str("ICMPv6".into()))
    );
    assert_eq!(ev.field("icmp_id"), Some(&FieldValue::UInt(777)));
    assert_eq!(ev.field("sport"), None);
}

#[test]
fn expectation_events() {
    let mut a = nla(
        CTA_EXPECT_MASTER,
        &tuple4([198, 18, 250, 2], [198, 18, 251, 2], 6, 40000, 21),
        true,
    );
    a.extend(nla(
        CTA_EXPECT_TUPLE,
        &tuple4([198, 18, 250, 2], [198, 18, 251, 2], 6, 0, 50000),
        true,
    ));
    a.extend(nla(CTA_EXPECT_TIMEOUT, &300u32.to_be_bytes(), false));
    a.extend(nla(CTA_EXPECT_ID, &9u32.to_be_bytes(), false));
    a.extend(nla(CTA_EXPECT_HELP_NAME, b"ftp\0", false));
    a.extend(nla(CTA_EXPECT_FLAGS, &0u32.to_be_bytes(), false));
    let e = &parse(&msg(2 << 8, NLM_F_CREATE, 2, &a)).unwrap()[0];
    assert_eq!(e.kind, CtKind::ExpNew);
    assert_eq!(e.helper.as_deref(), Some("ftp"));
    assert_eq!(e.master.as_ref().unwrap().dport, Some(21));
    let ev = to_event(e, EventEntity::unknown(1));
    assert_eq!(ev.kind, EXP_NEW);
    assert_eq!(ev.field("dport"), Some(&FieldValue::UInt(50000)));
    assert_eq!(ev.field("master_dport"), Some(&FieldValue::UInt(21)));
    assert_eq!(ev.field("mark"), None);
    let e = &parse(&msg(2 << 8 | 2, 0, 2, &a)).unwrap()[0];
    assert_eq!(e.kind, CtKind::ExpDestroy);
}

#[test]
fn several_messages_in_one_datagram_and_malformed_ones() {
    let mut two = new_tcp();
    two.extend(new_tcp());
    assert_eq!(parse(&two).unwrap().len(), 2);
    // A wrong-sized value names the attribute; the events before it are kept.
    let bad_status = {
        let mut a = nla(CTA_STATUS, &[1, 2, 3], false);
        a.extend(nla(CTA_MARK, &1u32.to_be_bytes(), false));
        msg(1 << 8, 0, 2, &a)
    };
    let mut b = new_tcp();
    b.extend(&bad_status);
    let mut out = Vec::new();
    let e = parse_datagram(&b, &mut out).unwrap_err();
    assert!(e.to_string().contains("CTA_STATUS: 3 bytes, want 4"), "{e}");
    assert_eq!(out.len(), 1);
    // No nfgenmsg.
    assert!(parse(&msg(1 << 8, 0, 2, &[])[..17]).is_err());
}

/// Every truncation and every single-byte corruption of a real-shaped message gives events
/// or an error, never a panic (the fuzz target does the same with arbitrary bytes).
#[test]
fn truncated_and_corrupted_never_panic() {
    let good = new_tcp();
    for cut in 0..good.len() {
        let _ = parse(&good[..cut]);
    }
    for i in 0..good.len() {
        for v in [0u8, 1, 3, 4, 0x7f, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] = v;
            if let Ok(evs) = parse(&b) {
                for e in &evs {
                    let _ = to_event(e, EventEntity::unknown(1)).log_line();
                }
            }
        }
    }
    // The same over the real kernel capture: every cut, and each byte set to 0 or 0xff.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/netlink");
    let real = std::fs::read(dir.join("ct_events.bin")).unwrap();
    for cut in (0..real.len()).step_by(3) {
        let _ = parse(&real[..cut]);
    }
    for i in 0..real.len() {
        for v in [0u8, 0xff] {
            let mut b = real.clone();
            b[i] = v;
            let _ = parse(&b);
        }
    }
    // Pseudo-random garbage after a valid header.
    let mut x: u32 = 0x1234_5678;
    for len in 0..300 {
        let body: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = parse(&msg(1 << 8, 0, 2, &body));
        let _ = parse(&msg(2 << 8 | 2, 0, 10, &body));
    }
}

#[test]
fn status_and_states() {
    assert_eq!(status_names(0), "");
    assert_eq!(status_names(0xe), "SEEN_REPLY|ASSURED|CONFIRMED");
    assert_eq!(status_names(1 << 20), "BIT20");
    assert_eq!(tcp_state_name(3), "ESTABLISHED");
    assert_eq!(tcp_state_name(7), "TIME_WAIT");
    assert_eq!(tcp_state_name(200), "UNKNOWN");
}
