//! The metric families whose names are fixed in the code: the eBPF probes', the event
//! pipeline's and the exporter's own. (The procfs and netlink probes' families follow the
//! kernel's field names; `docs/metrics.md` lists them by running those probes over the
//! committed 6.18 fixtures.)
//!
//! `docs/metrics.md` is generated from this table and those probes
//! (`NETSLEUTH_UPDATE_DOCS=1 cargo test --test metrics_doc`); the same test fails when the
//! committed file differs, and a privileged test scrapes a real exporter running every probe and
//! fails on any family, type, label or help on the page that this reference does not list
//! exactly.
#![forbid(unsafe_code)]

use crate::model::MetricKind;

/// One metric family as documented.
#[derive(Debug, Clone, Copy)]
pub struct FamilyDoc {
    pub name: &'static str,
    pub kind: MetricKind,
    /// Who exports it: a probe name, or `exporter`, `events`.
    pub source: &'static str,
    /// True when each series carries the namespace's entity labels (`netns`, `kind`,
    /// `k8s_namespace`, `k8s_pod`, `name`, plus `k8s_node` and `additionalLabels`).
    pub per_namespace: bool,
    /// The family's own labels (histograms' `le` not included).
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn f(
    name: &'static str,
    kind: MetricKind,
    source: &'static str,
    per_namespace: bool,
    labels: &'static [&'static str],
    help: &'static str,
) -> FamilyDoc {
    FamilyDoc {
        name,
        kind,
        source,
        per_namespace,
        labels,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every fixed-name family, grouped by source.
#[rustfmt::skip]
pub const FAMILIES: &[FamilyDoc] = &[
    // eBPF probes.
    f("netsleuth_packetloss_total", Counter, "packetloss", true, &["protocol", "reason"],
      "Packets the kernel dropped (skb:kfree_skb), by drop reason and protocol; normal frees excluded (excludeReasons)."),
    f("netsleuth_tcpreset_total", Counter, "tcpreset", true, &["type"],
      "TCP resets by type: NOSOCK (sent, no socket matched), PROCESS (sent in answer to a segment on a socket), ACTIVE (sent aborting a connection), RECEIVE (received)."),
    f("netsleuth_tcpretrans_total", Counter, "tcpretrans", true, &[],
      "TCP segments retransmitted (as Tcp RetransSegs counts them), SYN-ACKs included."),
    f("netsleuth_netiftxlat_qdisc_seconds", Histogram, "netiftxlat", true, &["device"],
      "Time packets spent between net_dev_queue and the driver (qdisc), per device."),
    f("netsleuth_netiftxlat_device_seconds", Histogram, "netiftxlat", true, &["device"],
      "Time the driver's transmit took (net_dev_start_xmit to net_dev_xmit), per device."),
    f("netsleuth_softirq_sched_seconds", Histogram, "softirq", false, &["cpu", "type"],
      "Time from raising a softirq to its start on the CPU (irq:softirq_raise to softirq_entry)."),
    f("netsleuth_softirq_exec_seconds", Histogram, "softirq", false, &["cpu", "type"],
      "Time a softirq ran on the CPU (irq:softirq_entry to softirq_exit)."),
    f("netsleuth_socketlatency_read_seconds", Histogram, "socketlatency", true, &[],
      "Time data waited at a socket for the application to read it (sock:sk_data_ready to sock_recv_length)."),
    f("netsleuth_socketlatency_send_seconds", Histogram, "socketlatency", true, &[],
      "Time data a TCP write left unsent waited for transmission (sock:sock_send_length to net:net_dev_start_xmit)."),
    f("netsleuth_kernellatency_rx_seconds", Histogram, "kernellatency", true, &[],
      "Time a received TCP segment spent in the stack (net:netif_receive_skb to tcp:tcp_probe)."),
    f("netsleuth_kernellatency_forward_seconds", Histogram, "kernellatency", true, &[],
      "Time a forwarded packet spent in the namespace's stack (net:netif_receive_skb to net:net_dev_queue)."),
    f("netsleuth_kernellatency_tx_seconds", Histogram, "kernellatency", true, &[],
      "Time a TCP segment spent in the stack from the socket to the device layer (ip_queue_xmit/inet6_csk_xmit to net:net_dev_queue; where fentry or kprobes work)."),
    f("netsleuth_virtcmdlatency_seconds", Histogram, "virtcmdlatency", false, &[],
      "Time virtio-net control commands took (virtnet_send_command)."),
    f("netsleuth_biolatency_seconds", Histogram, "biolatency", false, &["device", "operation"],
      "Block I/O request latency from issue to the driver to completion (block:block_rq_issue to block_rq_complete), per device and operation."),
    f("netsleuth_flow_bytes_total", Counter, "flow", true, &["direction", "local_port", "peer_address", "peer_k8s_namespace", "peer_k8s_pod", "peer_kind", "peer_name", "peer_port", "protocol"],
      "IP bytes (every segment's headers included) the local entity sent (egress) or received (ingress), by protocol and remote side (flow probe: tc programs on the node's pod veths and uplinks)."),
    f("netsleuth_flow_packets_total", Counter, "flow", true, &["direction", "local_port", "peer_address", "peer_k8s_namespace", "peer_k8s_pod", "peer_kind", "peer_name", "peer_port", "protocol"],
      "IP packets (segments) the local entity sent (egress) or received (ingress), by protocol and remote side (flow probe)."),
    f("netsleuth_flow_series_overflowed_total", Counter, "flow", false, &[],
      "Flow series summed into the peer_address=\"overflow\" series because maxSeries series were already exported: each counted at the first scrape that put it there, again only if it left and came back."),
    f("netsleuth_flow_devices", Gauge, "flow", false, &[],
      "Devices the flow probe is attached to."),
    // Every eBPF probe.
    f("netsleuth_probe_up", Gauge, "ebpf", false, &["probe"],
      "Whether the configured eBPF probe is loaded and attached (1), or configured but not running (0; the log and `netsleuth probes` say why)."),
    f("netsleuth_probe_attach_info", Gauge, "ebpf", false, &["attach_point", "method", "probe"],
      "How each attach point of a running eBPF probe is attached (the method the kernel accepted)."),
    f("netsleuth_bpf_map_full_total", Counter, "ebpf", false, &["probe"],
      "Counter updates dropped because the probe's bounded kernel map was full."),
    f("netsleuth_bpf_map_entries_reaped_total", Counter, "ebpf", false, &["probe"],
      "Kernel-map entries deleted because their network namespace vanished (past the inventory's grace period)."),
    f("netsleuth_bpf_program_run_seconds_total", Counter, "ebpf", false, &["program"],
      "Time the kernel spent running the probe's BPF program (bpf_stats run_time_ns; counts only while run-time stats are on)."),
    f("netsleuth_bpf_program_runs_total", Counter, "ebpf", false, &["program"],
      "Times the kernel ran the probe's BPF program (bpf_stats run_cnt; counts only while run-time stats are on)."),
    f("netsleuth_events_total", Counter, "ebpf", false, &["type"],
      "Events read from the kernel, by type."),
    f("netsleuth_events_lost_total", Counter, "ebpf", false, &["probe"],
      "Events lost before netsleuth could read them: the probe's ring buffer was full (eBPF probes) or its netlink socket's receive buffer overflowed (conntrack)."),
    f("netsleuth_events_suppressed_total", Counter, "ebpf", false, &["type"],
      "Events not emitted because their type exceeded the probe's rateLimit (a token bucket per type: in the kernel for eBPF probes, per namespace in the reader for conntrack); the metrics still count them."),
    // Event delivery.
    f("netsleuth_events_published_total", Counter, "events", false, &[],
      "Events the kernel readers handed to the event pipeline."),
    f("netsleuth_events_dropped_total", Counter, "events", false, &["reason", "sink", "stage"],
      "Events not delivered to a sink, by pipeline stage and reason."),
    f("netsleuth_event_sink_sent_total", Counter, "events", false, &["sink"],
      "Events delivered by the sink."),
    f("netsleuth_event_sink_failed_total", Counter, "events", false, &["sink"],
      "Failed writes or push requests of the sink."),
    f("netsleuth_event_sink_retried_total", Counter, "events", false, &["sink"],
      "Push requests the sink retried (429, 5xx, connection errors)."),
    f("netsleuth_event_sink_backlog", Gauge, "events", false, &["sink"],
      "Events held by the sink and not yet delivered."),
    f("netsleuth_event_stream_clients", Gauge, "events", false, &[],
      "Clients connected to /events."),
    f("netsleuth_conntrack_event_listeners", Gauge, "events", false, &[],
      "Network namespaces the conntrack event probe listens in (one ctnetlink socket each)."),
    // The exporter itself.
    f("netsleuth_build_info", Gauge, "exporter", false, &["arch", "os", "version"],
      "A metric with a constant '1' value labeled by version and target of the netsleuth build."),
    f("netsleuth_config_last_reload_successful", Gauge, "exporter", false, &[],
      "Whether the last configuration reload succeeded."),
    f("netsleuth_http_requests_total", Counter, "exporter", false, &["code", "handler"],
      "HTTP requests answered, by handler and status code."),
    f("netsleuth_http_connections", Gauge, "exporter", false, &[],
      "Open HTTP connections (waiting for a request, being answered, or streaming /events)."),
    f("netsleuth_http_rejected_total", Counter, "exporter", false, &["reason"],
      "HTTP connections or requests refused or cut off, by reason (limit, timeout, auth, tls, bad_request)."),
    f("netsleuth_inventory_scan_duration_seconds", Gauge, "exporter", false, &[],
      "Time the namespace inventory scan behind this scrape took."),
    f("netsleuth_netns", Gauge, "exporter", false, &["kind"],
      "Network namespaces known to the exporter, by kind."),
    f("netsleuth_netns_enters_total", Counter, "exporter", false, &[],
      "Times collection entered a network namespace (setns): once per namespace to open its netlink sockets (and, without a process in it, its files), then only for the ipvs probe or past the kept-fd budget."),
    f("netsleuth_netns_kept_fds", Gauge, "exporter", false, &["kind"],
      "File descriptors kept open for collection, bound to their namespaces: netlink sockets (one per protocol) and procfs files."),
    f("netsleuth_netns_identity_changes_total", Counter, "exporter", false, &[],
      "Times a namespace inode was found reused by a new namespace at collection (its series were skipped and it is relabelled)."),
    f("netsleuth_netns_vanished_total", Counter, "exporter", false, &[],
      "Namespaces that disappeared while being collected and were skipped."),
    f("netsleuth_scrape_collector_duration_seconds", Gauge, "exporter", false, &["collector"],
      "Time the collector spent in this scrape, summed over namespaces."),
    f("netsleuth_scrape_collector_failed_namespaces", Gauge, "exporter", false, &["collector"],
      "Namespaces in which the collector failed this scrape (not counting unavailable data)."),
    f("netsleuth_scrape_collector_success", Gauge, "exporter", false, &["collector"],
      "Whether the collector succeeded in every namespace this scrape (1) or not (0)."),
    f("netsleuth_scrape_duration_seconds", Gauge, "exporter", false, &[],
      "Wall time of the last collection."),
    f("netsleuth_scrape_timeouts_total", Counter, "exporter", false, &[],
      "Namespaces left uncollected because a scrape's deadline passed."),
    f("process_cpu_seconds_total", Counter, "exporter", false, &[],
      "Total user and system CPU time spent in seconds."),
    f("process_max_fds", Gauge, "exporter", false, &[],
      "Maximum number of open file descriptors."),
    f("process_open_fds", Gauge, "exporter", false, &[],
      "Number of open file descriptors."),
    f("process_resident_memory_bytes", Gauge, "exporter", false, &[],
      "Resident memory size in bytes."),
    f("process_start_time_seconds", Gauge, "exporter", false, &[],
      "Start time of the process since unix epoch in seconds."),
    f("process_threads", Gauge, "exporter", false, &[],
      "Number of OS threads in the process."),
    f("process_virtual_memory_bytes", Gauge, "exporter", false, &[],
      "Virtual memory size in bytes."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_lint_clean() {
        let mut seen = std::collections::HashSet::new();
        for d in FAMILIES {
            assert!(seen.insert(d.name), "{} listed twice", d.name);
            assert!(
                d.help.ends_with('.'),
                "{}: help ends without a full stop",
                d.name
            );
            let counter = d.kind == Counter;
            assert_eq!(counter, d.name.ends_with("_total"), "{}", d.name);
            let mut sorted = d.labels.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, d.labels, "{}: labels not sorted", d.name);
        }
    }
}
