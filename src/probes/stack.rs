//! Event stacks start at the kernel function that acted on the packet: the leading frames
//! that belong to the probe itself (the BPF program, the tracepoint's BPF glue, a fentry
//! trampoline) are cut. Only leading frames: a frame further down that matches is the kernel
//! really running BPF (an XDP or tc program that dropped the packet) and stays.
#![forbid(unsafe_code)]

/// True for a symbolized frame (`sym+0xoff` or `sym+0xoff [module]`, as
/// [`crate::bpf::kallsyms::Kallsyms::symbolize`] prints it) that is part of the BPF
/// machinery that ran the probe:
/// - anything in BPF JIT memory: `[bpf]` symbols (`bpf_prog_<tag>_<name>`,
///   `bpf_trampoline_<key>`) and addresses with no symbol at all (`0x…`: JIT images whose
///   symbols the kernel hides, `net.core.bpf_jit_kallsyms=0` or `bpf_jit_harden`);
/// - ftrace trampolines (`[__builtin__ftrace]`: the pseudo-module of ftrace's trampoline
///   pages; on 5.10 a fentry BPF trampoline without a symbol of its own is named after the
///   nearest one, `ftrace_trampoline+0xc022 [__builtin__ftrace]`);
/// - the raw tracepoint glue: `bpf_trace_run1`..`bpf_trace_run12`, `__bpf_trace_<tp>`,
///   `__traceiter_<tp>`;
/// - the perf tracepoint path: `perf_trace_<tp>`, `perf_trace_run_bpf_submit`,
///   `trace_call_bpf`, `trace_event_raw_event_<tp>`.
pub fn is_probe_frame(frame: &str) -> bool {
    if frame.starts_with("0x") {
        return true;
    }
    let (sym, module) = match frame.split_once(' ') {
        Some((s, m)) => (s, Some(m)),
        None => (frame, None),
    };
    if matches!(module, Some("[bpf]" | "[__builtin__ftrace]")) {
        return true;
    }
    let name = sym.split_once('+').map_or(sym, |(n, _)| n);
    if let Some(n) = name.strip_prefix("bpf_trace_run") {
        return matches!(n.parse::<u8>(), Ok(1..=12));
    }
    if let Some(key) = name.strip_prefix("bpf_trampoline_") {
        // `bpf_trampoline_<key>` (6.x), `bpf_trampoline_<key>_<n>` (5.10).
        return key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    }
    if let Some(rest) = name.strip_prefix("bpf_prog_") {
        // JIT images are named `bpf_prog_<16 hex digit tag>[_<name>]`; kernel functions
        // such as `bpf_prog_put` are not.
        let tag = rest.get(..16).unwrap_or("");
        return tag.len() == 16
            && tag.bytes().all(|b| b.is_ascii_hexdigit())
            && (rest.len() == 16 || rest.as_bytes()[16] == b'_');
    }
    name.starts_with("__bpf_trace_")
        || name.starts_with("__traceiter_")
        || name.starts_with("perf_trace_")
        || name.starts_with("trace_event_raw_event_")
        || name == "trace_call_bpf"
}

/// How many leading frames of `frames` are the probe's own ([`is_probe_frame`]). A stack
/// made of nothing else is left whole (never an empty stack for a frame we misjudged).
pub fn probe_prefix(frames: &[String]) -> usize {
    let n = frames.iter().take_while(|f| is_probe_frame(f)).count();
    if n == frames.len() {
        0
    } else {
        n
    }
}

/// `frames` without the probe's leading frames.
pub fn trim(mut frames: Vec<String>) -> Vec<String> {
    let n = probe_prefix(&frames);
    frames.drain(..n);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// Linux 6.18, packetloss via tp_btf (raw_tp identical but for the program's name): an
    /// nftables drop of UDP in the receiving namespace.
    #[test]
    fn kernel_6_18_packetloss_tp_btf_starts_at_the_drop_function() {
        let s = v(&[
            "bpf_prog_96229d6fa3bca298_kfree_skb_btf+0x32e [bpf]",
            "bpf_trace_run4+0x10d",
            "sk_skb_reason_drop+0x90",
            "nft_do_chain+0x46f",
            "nft_do_chain_ipv4+0x70",
            "nf_hook_slow+0x43",
            "ip_local_deliver+0x119",
            "__netif_receive_skb_one_core+0x8d",
        ]);
        let t = trim(s);
        assert_eq!(t[0], "sk_skb_reason_drop+0x90");
        assert_eq!(t.len(), 6);
    }

    /// Linux 6.18, tcpreset via raw_tp: the RST for a closed port, and the received RST.
    #[test]
    fn kernel_6_18_tcpreset_starts_at_the_reset_function() {
        let s = v(&[
            "bpf_prog_a12b6f3c9a935190_send_reset_raw+0x4e1 [bpf]",
            "bpf_trace_run3+0x108",
            "tcp_v4_send_reset+0x733",
            "tcp_v4_rcv+0x8ca",
            "ip_protocol_deliver_rcu+0x2c",
        ]);
        assert_eq!(probe_prefix(&s), 2);
        assert_eq!(trim(s)[0], "tcp_v4_send_reset+0x733");
        let r = v(&[
            "bpf_prog_8e29d7790de76b96_receive_reset_btf+0x259 [bpf]",
            "bpf_trace_run1+0xfe",
            "tcp_reset+0x87",
            "tcp_rcv_state_process+0xba3",
        ]);
        assert_eq!(trim(r)[0], "tcp_reset+0x87");
    }

    /// Older kernels keep the per-tracepoint glue and the iterator; fentry has a trampoline;
    /// hidden JIT symbols leave bare addresses.
    #[test]
    fn glue_trampolines_and_bare_jit_addresses_are_cut() {
        let s = v(&[
            "bpf_prog_96229d6fa3bca298_kfree_skb_raw+0x2f1",
            "bpf_trace_run4+0x6e",
            "__bpf_trace_kfree_skb+0xe",
            "__traceiter_kfree_skb+0x2d",
            "kfree_skb_reason+0xa4",
            "tcp_v4_rcv+0x99",
        ]);
        assert_eq!(trim(s)[0], "kfree_skb_reason+0xa4");
        let f = v(&[
            "0xffffffffc0344a1c",
            "0xffffffffc02a505e",
            "sk_skb_reason_drop+0x9",
            "tcp_v4_rcv+0x99",
        ]);
        assert_eq!(trim(f)[0], "sk_skb_reason_drop+0x9");
        let t = v(&[
            "bpf_prog_0123456789abcdef_x+0x10 [bpf]",
            "bpf_trampoline_6442506753+0x47 [bpf]",
            "tcp_v4_send_reset+0x9",
        ]);
        assert_eq!(trim(t)[0], "tcp_v4_send_reset+0x9");
        let p = v(&[
            "bpf_prog_0123456789abcdef_t+0x1",
            "trace_call_bpf+0x5c",
            "perf_trace_run_bpf_submit+0x4c",
            "perf_trace_block_rq_complete+0xf1",
            "trace_event_raw_event_block_rq+0x1",
            "blk_update_request+0x1f2",
        ]);
        assert_eq!(trim(p)[0], "blk_update_request+0x1f2");
    }

    /// Captured in the kernel-matrix guests (`NETSLEUTH_SELFTEST_CAPTURE`, `stacks/`): each
    /// attach method of packetloss and tcpreset on Debian's 5.10, 6.1 and 6.12, with the
    /// kernel symbols read before the programs loaded (so their JIT images have none).
    #[test]
    fn debian_kernels_every_attach_method() {
        let cases: &[(&[&str], &str)] = &[
            // 5.10 tp_btf (kfree_skb, no drop reasons yet): tracepoint glue.
            (
                &[
                    "0xffffffffc0205909",
                    "bpf_trace_run2+0x37",
                    "kfree_skb+0x75",
                    "__udp4_lib_rcv+0x9a3",
                ],
                "kfree_skb+0x75",
            ),
            // 5.10 fentry: the BPF trampoline named after ftrace's pseudo-module's last symbol.
            (
                &[
                    "0xffffffffc020f55b",
                    "ftrace_trampoline+0xc022 [__builtin__ftrace]",
                    "tcp_v4_send_reset+0x5",
                    "tcp_v4_rcv+0x7e3",
                ],
                "tcp_v4_send_reset+0x5",
            ),
            // 5.10 fentry, the trampoline without any symbol.
            (
                &[
                    "0xffffffffc02055df",
                    "0xffffffffc020d022",
                    "tcp_v4_send_reset+0x5",
                    "tcp_v4_rcv+0x7e3",
                ],
                "tcp_v4_send_reset+0x5",
            ),
            // 5.10 fentry with the symbols read after the programs loaded (as the exporter
            // does): the program and the trampoline named `[bpf]`.
            (
                &[
                    "bpf_prog_5219ec750cea1ed6_send_reset_v4_fentry+0x53b [bpf]",
                    "bpf_trampoline_77863_0+0x22 [bpf]",
                    "tcp_v4_send_reset+0x5",
                    "tcp_v4_rcv+0x7e3",
                ],
                "tcp_v4_send_reset+0x5",
            ),
            // 5.10 kprobe: the stack starts at the probed function itself; nothing to cut.
            (
                &["tcp_reset+0x1", "tcp_rcv_state_process+0xa06"],
                "tcp_reset+0x1",
            ),
            // 6.1 tp_btf and fentry.
            (
                &[
                    "0xffffffffc000096b",
                    "bpf_trace_run3+0x4f",
                    "kfree_skb_reason+0x7b",
                    "__udp4_lib_rcv+0x9a2",
                ],
                "kfree_skb_reason+0x7b",
            ),
            (
                &[
                    "0xffffffffc0000937",
                    "0xffffffffc021d044",
                    "kfree_skb_reason+0x5",
                    "__udp4_lib_rcv+0x9a2",
                ],
                "kfree_skb_reason+0x5",
            ),
            // 6.12 tp_btf, fentry, kprobe.
            (
                &[
                    "0xffffffffc0000961",
                    "bpf_trace_run4+0x93",
                    "sk_skb_reason_drop+0x94",
                    "__udp4_lib_rcv+0x545",
                ],
                "sk_skb_reason_drop+0x94",
            ),
            (
                &[
                    "0xffffffffc0002775",
                    "0xffffffffc0002c87",
                    "tcp_reset+0x9",
                    "tcp_rcv_state_process+0x85a",
                ],
                "tcp_reset+0x9",
            ),
            (
                &["sk_skb_reason_drop+0x5", "__udp4_lib_rcv+0x545"],
                "sk_skb_reason_drop+0x5",
            ),
        ];
        for (s, first) in cases {
            let t = trim(v(s));
            assert_eq!(t[0], *first, "{s:?}");
            assert_eq!(t.len(), s.len() - probe_prefix(&v(s)));
            assert!(!t.iter().any(|f| is_probe_frame(f)), "{t:?}");
        }
    }

    #[test]
    fn only_leading_frames_and_never_everything() {
        // An XDP program that dropped the packet, further down: kept.
        let s = v(&[
            "bpf_prog_96229d6fa3bca298_kfree_skb_btf+0x32e [bpf]",
            "bpf_trace_run4+0x10d",
            "sk_skb_reason_drop+0x90",
            "bpf_prog_0000000000000001_xdp_drop+0x20 [bpf]",
            "0xffffffffc0001234",
            "netif_receive_skb+0x1",
        ]);
        let t = trim(s);
        assert_eq!(t.len(), 4);
        assert_eq!(t[1], "bpf_prog_0000000000000001_xdp_drop+0x20 [bpf]");
        assert_eq!(t[2], "0xffffffffc0001234");
        // Nothing but machinery (or nothing symbolized): left whole.
        let all = v(&["0x1", "0x2"]);
        assert_eq!(trim(all.clone()), all);
        assert!(trim(Vec::new()).is_empty());
    }

    #[test]
    fn kernel_functions_with_similar_names_stay() {
        for f in [
            "sk_skb_reason_drop+0x90",
            "bpf_trace_run13+0x1",
            "bpf_trace_run+0x1",
            "bpf_trace_printk+0x1",
            "bpf_trampoline_link_prog+0x1",
            "bpf_trampoline_+0x1",
            "trace_kfree_skb+0x1",
            "bpf_prog_put+0x1",
            "bpf_prog_test_run_skb+0x1",
            "bpf_prog_96229d6fa3bca29+0x1",
            "nft_do_chain+0x46f [nf_tables]",
        ] {
            assert!(!is_probe_frame(f), "{f}");
        }
        assert!(is_probe_frame("bpf_prog_96229d6fa3bca298+0x1"));
        assert!(is_probe_frame("bpf_prog_96229d6fa3bca298_f+0x1"));
        assert!(is_probe_frame("bpf_trampoline_77863_0+0x22"));
        assert!(is_probe_frame("bpf_trampoline_6442546540+0x4b"));
    }
}
