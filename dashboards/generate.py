#!/usr/bin/env python3
"""Writes the Grafana dashboards in this folder (netsleuth-*.json) from one description.

Run `python3 dashboards/generate.py` after editing; the JSON files are what Grafana imports and
what `cargo test --test dashboards` checks and runs against a real Prometheus. Standard library
only.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki_datasource}"}

# Per-namespace series of the selected node(s), namespace(s) and pod(s).
E = 'k8s_node=~"$node", k8s_namespace=~"$k8s_namespace", k8s_pod=~"$k8s_pod"'
# Node-level series (softnet, softirq, the exporter's own) have no entity labels: the hidden
# `instance` variable holds the scrape targets of the selected nodes.
N = 'instance=~"$instance"'
# The entity of a per-namespace series, for `by` clauses and legends.
ENT = "k8s_node, kind, k8s_namespace, name"
LEG = "{{k8s_node}} {{kind}} {{k8s_namespace}}/{{name}}"
RI = "$__rate_interval"


def var_datasource(name, kind, label):
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": kind,
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def var_query(name, label, query, include_all=True, multi=True, hide=0, all_value=".*"):
    v = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "hide": hide,
        "includeAll": include_all,
        "multi": multi,
        "current": {},
        "options": [],
        "regex": "",
    }
    if include_all and all_value is not None:
        v["allValue"] = all_value
    return v


def variables(loki, pod_single=False):
    vs = [var_datasource("datasource", "prometheus", "Prometheus")]
    if loki:
        vs.append(var_datasource("loki_datasource", "loki", "Loki"))
    vs += [
        var_query("node", "Node",
                  "label_values(netsleuth_netdev_receive_packets_total, k8s_node)"),
        # No allValue: "All" is the alternation of the targets of the selected nodes.
        var_query("instance", "Exporter",
                  'label_values(netsleuth_netdev_receive_packets_total{k8s_node=~"$node"}, instance)',
                  hide=2, all_value=None),
        var_query("k8s_namespace", "Namespace",
                  'label_values(netsleuth_netdev_receive_packets_total{k8s_node=~"$node", kind="pod"}, k8s_namespace)'),
        var_query("k8s_pod", "Pod",
                  'label_values(netsleuth_netdev_receive_packets_total{k8s_node=~"$node", k8s_namespace=~"$k8s_namespace", kind="pod"}, k8s_pod)',
                  include_all=not pod_single, multi=not pod_single),
    ]
    return vs


class Board:
    def __init__(self):
        self.panels = []
        self.next_id = 1
        self.y = 0
        self.x = 0
        self.row_h = 0

    def row(self, title):
        self._newline()
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def add(self, ptype, title, desc, targets, w=12, h=8, unit=None, stack=False,
            ds=PROM, extra=None):
        if self.x + w > 24:
            self._newline()
        refs = "ABCDEFGH"
        tgts = []
        for i, t in enumerate(targets):
            t = dict(t)
            t["refId"] = refs[i]
            t["datasource"] = ds
            tgts.append(t)
        p = {
            "id": self._id(),
            "type": ptype,
            "title": title,
            "description": desc,
            "datasource": ds,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": tgts,
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {},
        }
        if unit:
            p["fieldConfig"]["defaults"]["unit"] = unit
        if ptype == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line", "fillOpacity": 30 if stack else 10,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            }
            p["options"] = {"legend": {"displayMode": "table", "placement": "right",
                                       "calcs": ["max", "lastNotNull"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        if ptype == "heatmap":
            p["options"] = {"calculate": False, "yAxis": {"unit": "s"},
                            "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"},
                            "rowsFrame": {"layout": "auto"}}
        if extra:
            p.update(extra)
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)
        return p


def ts(expr, legend="__auto"):
    return {"expr": expr, "legendFormat": legend, "range": True, "instant": False,
            "editorMode": "code"}


def inst(expr, legend="__auto"):
    return {"expr": expr, "legendFormat": legend, "range": False, "instant": True,
            "format": "table", "editorMode": "code"}


def hm(expr):
    return {"expr": expr, "legendFormat": "{{le}}", "range": True, "instant": False,
            "format": "heatmap", "editorMode": "code"}


def logq(expr):
    return {"expr": expr, "queryType": "range", "editorMode": "code"}


def rate(metric, sel, by=None, fn="rate", window=RI):
    inner = f"{fn}({metric}{{{sel}}}[{window}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def topk(expr_by_entity, k=10):
    return f"topk({k}, {expr_by_entity})"


def quantiles(b, title, desc, metric, sel, by, legend, w=12):
    b.add("timeseries", title, desc, [
        ts(f"histogram_quantile(0.50, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RI}])))",
           f"p50 {legend}"),
        ts(f"histogram_quantile(0.99, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RI}])))",
           f"p99 {legend}"),
    ], w=w, unit="s")


def heatmap(b, title, desc, metric, sel, w=12):
    b.add("heatmap", title, desc,
          [hm(f"sum by (le) (rate({metric}_bucket{{{sel}}}[{RI}]))")], w=w)


def dashboard(uid, title, desc, board, loki, pod_single=False, tags=()):
    return {
        "__inputs": [],
        "__requires": [],
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["netsleuth", "network"] + list(tags),
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "links": [
            {"type": "dashboards", "tags": ["netsleuth"], "asDropdown": True,
             "title": "netsleuth", "includeVars": True, "keepTime": True},
        ],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": variables(loki, pod_single)},
        "panels": board.panels,
    }


def node_overview():
    b = Board()
    b.row("Namespaces and traffic")
    b.add("stat", "Namespaces by kind",
          "Network namespaces the exporter knows on the selected nodes, by kind (pod, container, named, host, process).",
          [inst(f"sum by (kind) (netsleuth_netns{{{N}}})", "{{kind}}")], w=6, h=8)
    b.add("timeseries", "Receive bytes, top 10 entities",
          "Bytes received per namespace, all devices summed (/proc/net/dev).",
          [ts(topk(rate("netsleuth_netdev_receive_bytes_total", E, ENT)), LEG)], w=9, unit="Bps")
    b.add("timeseries", "Transmit bytes, top 10 entities",
          "Bytes transmitted per namespace, all devices summed (/proc/net/dev).",
          [ts(topk(rate("netsleuth_netdev_transmit_bytes_total", E, ENT)), LEG)], w=9, unit="Bps")
    b.add("timeseries", "Receive packets, top 10 entities", "Packets received per namespace.",
          [ts(topk(rate("netsleuth_netdev_receive_packets_total", E, ENT)), LEG)], unit="pps")
    b.add("timeseries", "Transmit packets, top 10 entities", "Packets transmitted per namespace.",
          [ts(topk(rate("netsleuth_netdev_transmit_packets_total", E, ENT)), LEG)], unit="pps")

    b.row("Drops, resets, retransmits")
    b.add("timeseries", "Drops by kernel reason",
          "Packets the kernel freed as dropped (skb:kfree_skb, eBPF probe packetloss), stacked by drop reason; normal frees are excluded in the kernel (excludeReasons).",
          [ts(rate("netsleuth_packetloss_total", E, "reason"), "{{reason}}")], stack=True,
          unit="pps")
    b.add("table", "Drops by pod and reason in the time range",
          "Drops per entity, reason and protocol over the dashboard's time range, largest first.",
          [inst(f"sort_desc(sum by ({ENT}, reason, protocol) (increase(netsleuth_packetloss_total{{{E}}}[$__range])) > 0)")])
    b.add("timeseries", "TCP resets by type",
          "Resets sent (NOSOCK: no socket matched; PROCESS: answer on a socket; ACTIVE: aborting) and received (RECEIVE), eBPF probe tcpreset.",
          [ts(rate("netsleuth_tcpreset_total", E, "type"), "{{type}}")], stack=True, unit="pps")
    b.add("timeseries", "TCP retransmits, top 10 entities",
          "Segments retransmitted per namespace (eBPF probe tcpretrans, SYN-ACKs included).",
          [ts(topk(rate("netsleuth_tcpretrans_total", E, ENT)), LEG)], unit="pps")
    b.add("timeseries", "TCP retransmit ratio, top 10 entities",
          "Retransmitted / sent segments over 5 minutes (recording rule netsleuth:tcp_retransmit:ratio_rate5m).",
          [ts(f"topk(10, netsleuth:tcp_retransmit:ratio_rate5m{{{E}}})", LEG)], unit="percentunit")
    b.add("timeseries", "Listen queue overflows, top 10 entities",
          "Connections dropped because a listener's accept queue was full (TcpExt ListenOverflows).",
          [ts(topk(rate("netsleuth_tcpext_listen_overflows_total", E, ENT)), LEG)], unit="ops")

    b.row("Connection tracking")
    b.add("timeseries", "Conntrack entries vs limit",
          "Connection tracking entries per namespace against nf_conntrack_max (the limit each namespace's table is checked against).",
          [ts(topk(f"max by ({ENT}) (netsleuth_conntrack_entries{{{E}}})"), LEG),
           ts(f"max(netsleuth_conntrack_entries_limit{{{E}}})", "limit")], w=8)
    b.add("timeseries", "Conntrack usage, top 10 entities",
          "Entries / limit per namespace (recording rule netsleuth:conntrack:usage_ratio); the alert fires above 75 %.",
          [ts(f"topk(10, netsleuth:conntrack:usage_ratio{{{E}}})", LEG)], w=8, unit="percentunit")
    b.add("timeseries", "Conntrack insert failures and drops",
          "insert_failed and drop per namespace: new connections that could not be tracked.",
          [ts(rate("netsleuth_conntrack_insert_failed_total", E, ENT), "insert_failed " + LEG),
           ts(rate("netsleuth_conntrack_drop_total", E, ENT), "drop " + LEG)], w=8, unit="ops")

    b.row("CPU: softnet and softirq")
    b.add("timeseries", "Softnet drops per CPU",
          "Packets dropped because the CPU's input backlog was full (/proc/net/softnet_stat).",
          [ts(rate("netsleuth_softnet_dropped_total", N, "instance, cpu"), "{{instance}} cpu {{cpu}}")],
          unit="pps")
    b.add("timeseries", "Softnet squeezes per CPU",
          "Times the network softirq ran out of budget with work left (time_squeeze).",
          [ts(rate("netsleuth_softnet_times_squeezed_total", N, "instance, cpu"), "{{instance}} cpu {{cpu}}")],
          unit="ops")
    heatmap(b, "Softirq scheduling delay", "Time from raising a softirq to its start (eBPF probe softirq), all CPUs and types.",
            "netsleuth_softirq_sched_seconds", N, w=8)
    heatmap(b, "Softirq run time", "Time a softirq ran (softirq_entry to softirq_exit).",
            "netsleuth_softirq_exec_seconds", N, w=8)
    b.add("timeseries", "Softirq scheduling delay p99 per CPU",
          "p99 over 5 minutes per CPU and softirq type (recording rule netsleuth:softirq_sched_seconds:p99_rate5m).",
          [ts(f"netsleuth:softirq_sched_seconds:p99_rate5m{{{N}}}", "{{instance}} cpu {{cpu}} {{type}}")],
          w=8, unit="s")

    b.row("Latency hot spots")
    b.add("timeseries", "Socket read latency p99, top 10 entities",
          "How long data waited at sockets for the application (recording rule netsleuth:socketlatency_read_seconds:p99_rate5m).",
          [ts(f"topk(10, netsleuth:socketlatency_read_seconds:p99_rate5m{{{E}}})", LEG)], unit="s")
    b.add("timeseries", "Qdisc latency p99 per device, top 10",
          "Time packets spent in the qdisc before the driver (eBPF probe netiftxlat).",
          [ts(f"topk(10, histogram_quantile(0.99, sum by ({ENT}, device, le) (rate(netsleuth_netiftxlat_qdisc_seconds_bucket{{{E}}}[{RI}]))))",
              LEG + " {{device}}")], unit="s")
    quantiles(b, "virtio-net control command latency",
              "virtnet_send_command (eBPF probe virtcmdlatency; needs fentry or kprobes).",
              "netsleuth_virtcmdlatency_seconds", N, "instance", "{{instance}}", w=24)

    b.row("Exporter health")
    b.add("stat", "Targets up", "Prometheus's own `up` for the selected exporters.",
          [inst(f"up{{{N}}}", "{{instance}}")], w=4, h=6)
    b.add("table", "Collectors failing",
          "Collectors that failed in some namespace in the last scrape (0) and in how many namespaces.",
          [inst(f"min by (instance, collector) (netsleuth_scrape_collector_success{{{N}}}) == 0"),
           inst(f"max by (instance, collector) (netsleuth_scrape_collector_failed_namespaces{{{N}}}) > 0")],
          w=10, h=6)
    b.add("table", "eBPF probes not attached",
          "Configured eBPF probes that are not running (the log and `netsleuth probes` say why).",
          [inst(f"netsleuth_probe_up{{{N}}} == 0")], w=10, h=6)
    b.add("timeseries", "Collector duration",
          "Time each collector spent in the scrape, summed over namespaces.",
          [ts(f"max by (collector) (netsleuth_scrape_collector_duration_seconds{{{N}}})", "{{collector}}")],
          w=8, unit="s")
    b.add("timeseries", "Scrape duration",
          "The exporter's collection wall time and Prometheus's view of the scrape.",
          [ts(f"max by (instance) (netsleuth_scrape_duration_seconds{{{N}}})", "collection {{instance}}"),
           ts(f"max by (instance) (scrape_duration_seconds{{{N}}})", "scrape {{instance}}")], w=8, unit="s")
    b.add("timeseries", "Events dropped, lost, map full",
          "Events not delivered to a sink (by stage and reason), lost in the kernel (ring buffer full), and counter updates a full BPF map refused.",
          [ts(rate("netsleuth_events_dropped_total", N, "sink, stage, reason"), "dropped {{sink}} {{stage}}/{{reason}}"),
           ts(rate("netsleuth_events_lost_total", N, "probe"), "lost {{probe}}"),
           ts(rate("netsleuth_bpf_map_full_total", N, "probe"), "map full {{probe}}")], w=8, unit="ops")
    return dashboard("netsleuth-node", "netsleuth / Node overview",
                     "Per node: which namespaces move traffic, drop, reset and retransmit, conntrack, softnet and softirq, and the exporter's own health.",
                     b, loki=False, tags=["node"])


def pod_drilldown():
    P = 'k8s_node=~"$node", k8s_namespace=~"$k8s_namespace", k8s_pod=~"$k8s_pod"'
    b = Board()
    b.row("Traffic")
    b.add("timeseries", "Receive / transmit bytes per device", "The pod's devices (/proc/net/dev).",
          [ts(rate("netsleuth_netdev_receive_bytes_total", P, "device"), "rx {{device}}"),
           ts(rate("netsleuth_netdev_transmit_bytes_total", P, "device"), "tx {{device}}")], unit="Bps")
    b.add("timeseries", "Receive / transmit packets per device", "The pod's devices (/proc/net/dev).",
          [ts(rate("netsleuth_netdev_receive_packets_total", P, "device"), "rx {{device}}"),
           ts(rate("netsleuth_netdev_transmit_packets_total", P, "device"), "tx {{device}}")], unit="pps")
    b.add("timeseries", "Device drops and errors", "Drops and errors the pod's devices counted.",
          [ts(rate("netsleuth_netdev_receive_drop_total", P, "device"), "rx drop {{device}}"),
           ts(rate("netsleuth_netdev_transmit_drop_total", P, "device"), "tx drop {{device}}"),
           ts(rate("netsleuth_netdev_receive_errs_total", P, "device"), "rx errs {{device}}"),
           ts(rate("netsleuth_netdev_transmit_errs_total", P, "device"), "tx errs {{device}}")], unit="pps")
    b.add("timeseries", "Qdisc drops and backlog", "Per qdisc of the pod's devices (rtnetlink).",
          [ts(rate("netsleuth_qdisc_drops_total", P, "device, qdisc_kind, handle"), "drops {{device}} {{qdisc_kind}} {{handle}}"),
           ts(f"sum by (device, qdisc_kind, handle) (netsleuth_qdisc_backlog_bytes{{{P}}})", "backlog bytes {{device}} {{qdisc_kind}} {{handle}}")])

    b.row("TCP")
    b.add("timeseries", "TCP sockets by state", "sock_diag, IPv4 and IPv6 (tcpsummary).",
          [ts(f"sum by (state) (netsleuth_tcpsummary_sockets{{{P}}})", "{{state}}")], w=8, stack=True)
    b.add("timeseries", "TCP queues", "Bytes received but unread, and sent but unacknowledged, over the pod's sockets.",
          [ts(f"sum(netsleuth_tcpsummary_rx_queue_bytes{{{P}}})", "receive queue"),
           ts(f"sum(netsleuth_tcpsummary_tx_queue_bytes{{{P}}})", "send queue")], w=8, unit="bytes")
    b.add("timeseries", "Accept queues", "Connections waiting in each listener's accept queue, and its limit.",
          [ts(f"max by (address, port) (netsleuth_tcpsummary_listen_backlog{{{P}}})", "{{address}}:{{port}}"),
           ts(f"max by (address, port) (netsleuth_tcpsummary_listen_backlog_max{{{P}}})", "limit {{address}}:{{port}}")], w=8)
    b.add("timeseries", "Listen overflows and drops", "TcpExt ListenOverflows (accept queue full) and ListenDrops (every SYN dropped at a listener).",
          [ts(rate("netsleuth_tcpext_listen_overflows_total", P), "overflows"),
           ts(rate("netsleuth_tcpext_listen_drops_total", P), "drops")], w=8, unit="ops")
    b.add("timeseries", "Resets by type and retransmits", "eBPF probes tcpreset and tcpretrans.",
          [ts(rate("netsleuth_tcpreset_total", P, "type"), "reset {{type}}"),
           ts(rate("netsleuth_tcpretrans_total", P), "retransmits")], w=8, unit="pps")
    b.add("timeseries", "Retransmit ratio", "Retransmitted / sent segments.",
          [ts(f"{rate('netsleuth_tcpretrans_total', P)} / {rate('netsleuth_tcp_out_segs_total', P)}", "ratio")],
          w=8, unit="percentunit")

    b.row("Drops")
    b.add("timeseries", "Drops by kernel reason", "Packets the kernel dropped in the pod's namespace, stacked by reason (packetloss).",
          [ts(rate("netsleuth_packetloss_total", P, "reason"), "{{reason}}")], stack=True, unit="pps")
    b.add("table", "Drops by reason and protocol, since the exporter started",
          "The kernel-map counters as they are: the exact number of drops per reason since the probe attached.",
          [inst(f"sum by (reason, protocol) (netsleuth_packetloss_total{{{P}}})")])

    b.row("Latency")
    heatmap(b, "Socket read latency", "Time data waited at the pod's sockets for the application to read it (socketlatency).",
            "netsleuth_socketlatency_read_seconds", P)
    quantiles(b, "Socket read latency p50 / p99", "From the histogram buckets.",
              "netsleuth_socketlatency_read_seconds", P, "k8s_pod", "")
    heatmap(b, "Socket send latency", "Time data a TCP write left unsent waited for transmission.",
            "netsleuth_socketlatency_send_seconds", P)
    quantiles(b, "Socket send latency p50 / p99", "From the histogram buckets.",
              "netsleuth_socketlatency_send_seconds", P, "k8s_pod", "")
    quantiles(b, "Qdisc latency per device", "net_dev_queue to the driver (netiftxlat).",
              "netsleuth_netiftxlat_qdisc_seconds", P, "device", "{{device}}", w=8)
    quantiles(b, "Driver transmit latency per device", "net_dev_start_xmit to net_dev_xmit (netiftxlat).",
              "netsleuth_netiftxlat_device_seconds", P, "device", "{{device}}", w=8)
    heatmap(b, "Qdisc latency", "All the pod's devices.", "netsleuth_netiftxlat_qdisc_seconds", P, w=8)
    quantiles(b, "Kernel receive latency", "netif_receive_skb to the TCP socket (kernellatency rx).",
              "netsleuth_kernellatency_rx_seconds", P, "k8s_pod", "")
    quantiles(b, "Kernel transmit latency", "ip_queue_xmit to net_dev_queue (kernellatency tx; needs fentry or kprobes).",
              "netsleuth_kernellatency_tx_seconds", P, "k8s_pod", "")
    quantiles(b, "Kernel forward latency", "netif_receive_skb to net_dev_queue of a forwarded packet (kernellatency forward).",
              "netsleuth_kernellatency_forward_seconds", P, "k8s_pod", "")

    b.row("Processes")
    b.add("timeseries", "Storage I/O", "read_bytes / write_bytes of the pod's processes (/proc/<pid>/io).",
          [ts(rate("netsleuth_io_read_bytes_total", P), "read"),
           ts(rate("netsleuth_io_write_bytes_total", P), "write")], w=8, unit="Bps")
    b.add("timeseries", "I/O system calls", "syscr / syscw of the pod's processes.",
          [ts(rate("netsleuth_io_read_syscalls_total", P), "read"),
           ts(rate("netsleuth_io_write_syscalls_total", P), "write")], w=8, unit="ops")
    b.add("timeseries", "Open file descriptors and sockets", "/proc/<pid>/fd of the pod's processes.",
          [ts(f"sum(netsleuth_fd_open_fds{{{P}}})", "fds"),
           ts(f"sum(netsleuth_fd_open_sockets{{{P}}})", "sockets")], w=8)

    b.row("Events")
    b.add("logs", "The pod's events", "Events netsleuth pushed to Loki for this pod (the pod is in the logfmt line, not a stream label).",
          [logq('{job="netsleuth", node=~"$node"} | logfmt | pod=~"$k8s_pod"')], w=24, h=10, ds=LOKI,
          extra={"options": {"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending"}})
    return dashboard("netsleuth-pod", "netsleuth / Pod drill-down",
                     "One pod: traffic, TCP states and queues, listen overflows, drops by reason, resets, retransmits, latencies, I/O and its events.",
                     b, loki=True, pod_single=True, tags=["pod"])


def events():
    b = Board()
    sel = '{job="netsleuth", node=~"$node", k8s_namespace=~"$k8s_namespace"}'
    b.add("timeseries", "Events by type (Loki)", "Events stored in Loki per type.",
          [logq(f'sum by (type) (count_over_time({sel} | logfmt | pod=~"$k8s_pod" [$__interval]))')],
          ds=LOKI, stack=True)
    b.add("timeseries", "Events by pod (Loki)", "Events stored in Loki per pod (from the logfmt line).",
          [logq(f'topk(10, sum by (pod) (count_over_time({sel} | logfmt | pod=~"$k8s_pod" [$__interval])))')],
          ds=LOKI, stack=True)
    b.add("timeseries", "Events read from the kernel by type (Prometheus)",
          "Every event the probes produced, before rate limiting (netsleuth_events_total), and those over rateLimit.",
          [ts(rate("netsleuth_events_total", N, "type"), "{{type}}"),
           ts(rate("netsleuth_events_suppressed_total", N, "type"), "suppressed {{type}}")], unit="ops")
    b.add("timeseries", "Delivery per sink (Prometheus)", "Events delivered, and failed pushes, per sink.",
          [ts(rate("netsleuth_event_sink_sent_total", N, "sink"), "sent {{sink}}"),
           ts(rate("netsleuth_event_sink_failed_total", N, "sink"), "failed {{sink}}"),
           ts(rate("netsleuth_events_dropped_total", N, "sink, reason"), "dropped {{sink}} {{reason}}")], unit="ops")
    b.add("logs", "Event lines", "The events themselves, newest first.",
          [logq(f'{sel} | logfmt | pod=~"$k8s_pod"')], w=24, h=14, ds=LOKI,
          extra={"options": {"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending"}})
    return dashboard("netsleuth-events", "netsleuth / Events",
                     "The event stream (drops, resets, retransmits, slow operations) from Loki, and its delivery from Prometheus.",
                     b, loki=True, tags=["events"])


def main(out=HERE):
    for name, d in [("netsleuth-node.json", node_overview()),
                    ("netsleuth-pod.json", pod_drilldown()),
                    ("netsleuth-events.json", events())]:
        with open(os.path.join(out, name), "w") as f:
            json.dump(d, f, indent=2, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    # An optional folder to write to instead (the test compares its output with these files).
    main(*sys.argv[1:2])
