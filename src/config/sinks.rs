//! `event.sinks`: `stderr`, `file` and `loki`, their args checked (a Loki URL, header or TLS
//! file that cannot work is a config error, not a failure at the first push).

use std::time::Duration;

use super::probes::probe_entry;
use super::{err, ConfigError};
use crate::collectors::ProbeArgs;
use crate::events::SinkConfig;

/// `event.sinks`, in order. A Loki sink without a `node` arg takes `node_name`
/// (`inventory.nodeName`) when that is set.
pub(super) fn event_sinks(
    list: &[serde_norway::Value],
    node_name: Option<&String>,
) -> Result<Vec<SinkConfig>, ConfigError> {
    let mut event_sinks = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("event.sinks[{i}]");
        let (name, args) = probe_entry(&at, entry)?;
        let mut a = ProbeArgs::from_yaml(&format!("sink {name}"), &args)
            .map_err(|e| ConfigError(format!("{at}: {e}")))?;
        if !["stderr", "file", "loki"].contains(&name.as_str()) {
            return err(format!(
                "{at}: unknown sink `{name}` (known: stderr, file, loki)"
            ));
        }
        let mut sink = sink_config(&name, &mut a).map_err(|e| ConfigError(format!("{at}: {e}")))?;
        // The Loki stream's `node` follows `inventory.nodeName` when that is set and
        // the sink names none, so the events' node and the series' k8s_node agree.
        if let SinkConfig::Loki(l) = &mut sink {
            let node_arg = args.as_mapping().is_some_and(|m| {
                m.keys()
                    .any(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case("node")))
            });
            if let Some(n) = node_name.filter(|n| !n.is_empty()) {
                if !node_arg {
                    l.node = n.clone();
                }
            }
        }
        event_sinks.push(sink);
        a.finish().map_err(|e| ConfigError(format!("{at}: {e}")))?;
    }
    Ok(event_sinks)
}

/// One `event.sinks` entry's args: `stderr`; `file` (`path`, `maxSize`, `maxBackups`); `loki`
/// (`url` or KubeSkoop's `addr`, `tenant`, `username`/`password` or `bearerToken`, `job`,
/// `node`, `batchSize`, `batchWait`, `maxBacklog`, `minBackoff`, `maxBackoff`, `maxRetries`,
/// `timeout`, `caFile`, `certFile`/`keyFile`, `insecureSkipVerify`, `format` (json or
/// protobuf), `structuredMetadata`).
fn sink_config(name: &str, a: &mut ProbeArgs) -> Result<SinkConfig, String> {
    use crate::events::{file, loki};
    let dur = |a: &mut ProbeArgs, k: &str| -> Result<Option<Duration>, String> {
        match a.take_str(k)? {
            Some(s) => super::parse_duration(k, &s).map(Some).map_err(|e| e.0),
            None => Ok(None),
        }
    };
    let num = |a: &mut ProbeArgs, k: &str| -> Result<Option<u64>, String> {
        match a.take_scalar(k)? {
            Some(s) => s
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("`{k}` must be a whole number, not `{s}`")),
            None => Ok(None),
        }
    };
    let size = |a: &mut ProbeArgs, k: &str| -> Result<Option<u64>, String> {
        match a.take_scalar(k)? {
            Some(s) => file::parse_size(&s)
                .map(Some)
                .map_err(|e| format!("`{k}`: {e}")),
            None => Ok(None),
        }
    };
    Ok(match name {
        "stderr" => SinkConfig::Stderr,
        "file" => {
            let path = a
                .take_str("path")?
                .filter(|p| !p.is_empty())
                .ok_or("sink `file` needs args.path")?;
            let mut f = file::FileConfig::new(path);
            if let Some(v) = size(a, "maxSize")? {
                f.max_size = v;
            }
            if let Some(v) = num(a, "maxBackups")? {
                f.max_backups = u32::try_from(v).map_err(|_| "`maxBackups` is too large")?;
            }
            SinkConfig::File(f)
        }
        _ => {
            let url = match (a.take_str("url")?, a.take_str("addr")?) {
                (Some(u), None) => u,
                (None, Some(addr)) => loki::LokiConfig::url_from_addr(&addr),
                (Some(_), Some(_)) => {
                    return Err("sink `loki`: give `url` or `addr`, not both".into())
                }
                (None, None) => {
                    return Err("sink `loki` needs args.url (or KubeSkoop's addr)".into())
                }
            };
            let mut l = loki::LokiConfig::new(url);
            l.tenant = a.take_str("tenant")?.filter(|t| !t.is_empty());
            match (a.take_str("username")?, a.take_str("password")?) {
                (Some(u), p) => l.basic_auth = Some((u, p.unwrap_or_default())),
                (None, Some(_)) => return Err("`password` without `username`".into()),
                (None, None) => {}
            }
            l.bearer_token = a.take_str("bearerToken")?;
            if l.basic_auth.is_some() && l.bearer_token.is_some() {
                return Err("give basic auth or `bearerToken`, not both".into());
            }
            if let Some(j) = a.take_str("job")? {
                l.job = j;
            }
            if let Some(n) = a.take_str("node")? {
                l.node = n;
            }
            if let Some(v) = size(a, "batchSize")? {
                l.batch_size = v as usize;
            }
            if let Some(v) = dur(a, "batchWait")? {
                l.batch_wait = v;
            }
            if let Some(v) = num(a, "maxBacklog")? {
                l.max_backlog = (v as usize).max(1);
            }
            if let Some(v) = dur(a, "minBackoff")? {
                l.min_backoff = v;
            }
            if let Some(v) = dur(a, "maxBackoff")? {
                l.max_backoff = v;
            }
            if l.min_backoff > l.max_backoff {
                return Err("`minBackoff` exceeds `maxBackoff`".into());
            }
            if let Some(v) = num(a, "maxRetries")? {
                l.max_retries = u32::try_from(v).map_err(|_| "`maxRetries` is too large")?;
            }
            if let Some(v) = dur(a, "timeout")? {
                l.timeout = v;
            }
            l.ca_file = a.take_str("caFile")?.map(Into::into);
            l.cert_file = a.take_str("certFile")?.map(Into::into);
            l.key_file = a.take_str("keyFile")?.map(Into::into);
            l.insecure_skip_verify = a.take_bool("insecureSkipVerify")?.unwrap_or(false);
            if l.insecure_skip_verify {
                log::warn!(
                    "sink `loki`: insecureSkipVerify: Loki's certificate is not checked; \
                     anyone on the path can read and forge the pushes"
                );
            }
            if let Some(f) = a.take_str("format")? {
                l.format = loki::LokiFormat::parse(&f)?;
            }
            l.structured_metadata = a.take_bool("structuredMetadata")?.unwrap_or(false);
            // The URL, headers and TLS files checked now: a bad one is a config error.
            loki::LokiClient::new(&l)?;
            SinkConfig::Loki(Box::new(l))
        }
    })
}
