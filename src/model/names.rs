//! Kernel field names to metric-name words.

/// Convert a kernel field name (`ActiveOpens`, `TCPSynRetrans`, `DelayedACKs`, `InCEPkts`,
/// `Icmp6InMLDv2Reports`) to snake_case (`active_opens`, `tcp_syn_retrans`, `delayed_acks`,
/// `in_ce_pkts`, `icmp6_in_mldv2_reports`).
///
/// Rules: a word starts at an upper-case letter that follows a lower-case letter or digit, and
/// at the last capital of an acronym when a lower-case word of two or more letters follows it
/// (`TCPSyn` → `tcp_syn`); a lone lower-case letter after an acronym is a suffix (`ACKs`,
/// `MLDv2`). Existing underscores are kept; anything outside `[A-Za-z0-9_]` becomes `_`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    // Split points inside all-capital runs made only of known acronyms (`TCPOFO` → TCP|OFO).
    let mut acronym_split = vec![false; chars.len() + 1];
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_uppercase() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_uppercase() {
            i += 1;
        }
        // The run's last capital begins the next word when a lower-case word follows.
        let lower_run = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_lowercase())
            .count();
        let end = if lower_run >= 2 { i - 1 } else { i };
        if let Some(cuts) = segment_acronyms(&chars[start..end]) {
            for c in cuts {
                acronym_split[start + c] = true;
            }
        }
    }
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let split = if prev.is_ascii_lowercase() || prev.is_ascii_digit() {
                true
            } else if prev.is_ascii_uppercase() {
                // Acronym followed by a word: split before the word's capital when the word
                // has at least two lower-case letters.
                let lower_run = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_lowercase())
                    .count();
                lower_run >= 2 || acronym_split[i]
            } else {
                false
            };
            if split && !out.ends_with('_') {
                out.push('_');
            }
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('_');
        }
    }
    out
}

/// Acronyms the kernel glues together in counter names (`TCPOFOQueue`, `TCPMTUPFail`).
const ACRONYMS: &[&str] = &[
    "TCP", "UDP", "IP", "ICMP", "OFO", "MTUP", "MTU", "PMTU", "DSACK", "SACK", "ACK", "HP", "AO",
    "ECT", "CE", "ECN", "TW", "PAWS", "RTO", "SYN", "FIN", "RST", "TS", "MLD", "RPS", "GRO", "MD",
    "MP", "LRO", "URG", "RCV", "SND", "TLP", "FRTO", "ABC", "RFC",
];

/// Cut positions (relative) if `run` is a concatenation of two or more known acronyms.
fn segment_acronyms(run: &[char]) -> Option<Vec<usize>> {
    if run.len() < 4 {
        return None;
    }
    let mut cuts = Vec::new();
    let mut pos = 0;
    while pos < run.len() {
        let best = ACRONYMS
            .iter()
            .filter(|a| {
                a.len() <= run.len() - pos && a.chars().zip(&run[pos..]).all(|(x, y)| x == *y)
            })
            .map(|a| a.len())
            .max()?;
        pos += best;
        if pos < run.len() {
            cuts.push(pos);
        }
    }
    if cuts.is_empty() {
        None
    } else {
        Some(cuts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_kernel_names() {
        let cases = [
            ("ActiveOpens", "active_opens"),
            ("TCPSynRetrans", "tcp_syn_retrans"),
            ("DelayedACKs", "delayed_acks"),
            ("InCEPkts", "in_ce_pkts"),
            ("InMLDv2Reports", "in_mldv2_reports"),
            ("RcvbufErrors", "rcvbuf_errors"),
            ("TCPOFOQueue", "tcp_ofo_queue"),
            ("PAWSEstab", "paws_estab"),
            ("TW", "tw"),
            ("TWRecycled", "tw_recycled"),
            ("InECT1Pkts", "in_ect1_pkts"),
            ("TCPMTUPFail", "tcp_mtup_fail"),
            ("TCPHPAcks", "tcp_hp_acks"),
            ("InType3", "in_type3"),
            ("TCPDSACKOldSent", "tcp_dsack_old_sent"),
            ("CurrEstab", "curr_estab"),
            ("DefaultTTL", "default_ttl"),
            ("TCPAOKeyNotFound", "tcp_ao_key_not_found"),
            ("receive_bytes", "receive_bytes"),
            ("TCPDeliveredCE", "tcp_delivered_ce"),
            ("TCPACKSkippedSynRecv", "tcp_ack_skipped_syn_recv"),
            ("TCPSACKReorder", "tcp_sack_reorder"),
            ("IPReversePathFilter", "ip_reverse_path_filter"),
        ];
        for (k, want) in cases {
            assert_eq!(snake_case(k), want, "{k}");
        }
    }
}
