//! The eBPF probe registry: one descriptor per probe ([`EbpfProbe`], a `PROBE` static in the
//! probe's module: data and function pointers), listed in [`REGISTRY`] in [`ProbeKind`] order — as the procfs
//! collectors are listed in [`crate::collectors::registry`]. Everything that differs between
//! probes (name, description, object, attach plan, maps, args, `.rodata`, metrics, event
//! decoding, event types) is asked of the descriptor; the shared machinery ([`super::plan`],
//! [`super::set`], [`super::reader`]) never matches on the probe.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::event::{DecodeCtx, RawEvent};
use super::plan::{Alternative, OptionalGroup, RunningProbe};
use super::{
    biolatency, flow, kernellatency, netiftxlat, packetloss, socketlatency, softirq, tcpreset,
    tcpretrans, virtcmdlatency, BpfProbeConfig, ProbeKind,
};
use crate::bpf::kallsyms::Kallsyms;
use crate::bpf::target_btf::BtfSources;
use crate::bpf::Loaded;
use crate::collectors::ProbeArgs;
use crate::events::{Event, EventEntity};
use crate::inventory::Inventory;
use crate::model::Families;

/// What a probe sets before its object loads, besides the globals every probe has
/// (`emit_events`, `enable_stack`, the rate limit, `threshold_ns` for latency probes).
#[derive(Default)]
pub struct Setup {
    /// `.rodata` values of the probe's own globals.
    pub globals: Vec<(String, Vec<u8>)>,
    /// Only [`Setup::globals`]: the object has none of the common ones (flow: no events).
    pub own_globals_only: bool,
    /// Map sizes set from the args.
    pub max_entries: Vec<(String, u32)>,
    /// Value → name table from the kernel's BTF (packetloss: drop reasons; biolatency:
    /// operations), kept in [`RunningProbe::reasons`].
    pub names: BTreeMap<u64, String>,
}

/// What a probe's metrics reader gets.
pub struct CollectCtx<'a> {
    /// The label prefix of a namespace inode (its entity's labels).
    pub prefix: &'a mut dyn FnMut(u64) -> String,
    pub out: &'a mut Families,
    /// The set's kernel symbols (loaded on first need).
    pub kallsyms: &'a Mutex<Option<Kallsyms>>,
    pub inventory: &'a Inventory,
}

/// How a probe takes its own args (after the common ones).
pub type TakeArgs = fn(&mut BpfProbeConfig, &mut ProbeArgs) -> Result<(), String>;
/// How a probe computes its own `.rodata`, map sizes and BTF name table.
pub type SetupFn = fn(&BpfProbeConfig, &BtfSources) -> Result<Setup, String>;
/// How a probe attached per device (flow) attaches: the plan alternative chosen and its
/// device state.
pub type PerDevice =
    fn(&BpfProbeConfig, &Loaded) -> Result<(Alternative, Arc<flow::State>), String>;
/// How a probe reads its maps into families (once per scrape).
pub type CollectFn = fn(&RunningProbe, &mut CollectCtx<'_>) -> Result<(), String>;
/// How a probe decodes one record of its ring buffer.
pub type DecodeFn = fn(&DecodeCtx<'_>, &RawEvent, Arc<EventEntity>) -> Option<Event>;

/// One eBPF probe: everything the shared machinery needs to know of it. Each probe module
/// has one `pub static PROBE: EbpfProbe`, written with `..EbpfProbe::DEFAULT` for what it
/// does not have.
pub struct EbpfProbe {
    pub kind: ProbeKind,
    /// The name in `metrics.probes`/`event.probes`, the metric names and `probe` labels.
    pub name: &'static str,
    /// One line for `netsleuth probes`.
    pub description: &'static str,
    /// The embedded object's name (`bpf-asm/<object>.bpf.o`); `None`: the probe's name.
    pub object: Option<&'static str>,
    /// For each attach point, the alternatives in order of preference.
    pub plan: &'static [&'static [Alternative]],
    /// Attach point groups used where they attach.
    pub optional: &'static [OptionalGroup],
    /// The counting maps whose keys start with the namespace inode (u32): the reaper deletes
    /// dead namespaces' keys.
    pub netns_maps: &'static [&'static str],
    /// Event type name per record subtype (`ns_event.type`).
    pub event_types: &'static [(u8, &'static str)],
    /// Latency probes (histograms, `threshold`): the default `threshold`.
    pub default_threshold_ns: Option<u64>,
    /// Its series name peers on this node by address (the inventory learns addresses).
    pub learns_addresses: bool,
    /// The event reader symbolizes kernel addresses even without stacks (packetloss).
    pub symbolizes: bool,
    /// The probe's own args (its args schema beyond the common ones).
    pub take_args: Option<TakeArgs>,
    pub setup: Option<SetupFn>,
    /// Attached per device by a thread of its own (flow) instead of through the plan.
    pub attach_per_device: Option<PerDevice>,
    pub collect: CollectFn,
    pub decode: Option<DecodeFn>,
}

impl EbpfProbe {
    /// What a probe without the feature has.
    pub const DEFAULT: EbpfProbe = EbpfProbe {
        kind: ProbeKind::PacketLoss,
        name: "",
        description: "",
        object: None,
        plan: &[],
        optional: &[],
        netns_maps: &[],
        event_types: &[],
        default_threshold_ns: None,
        learns_addresses: false,
        symbolizes: false,
        take_args: None,
        setup: None,
        attach_per_device: None,
        collect: |_, _| Ok(()),
        decode: None,
    };

    pub fn kind(&self) -> ProbeKind {
        self.kind
    }
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn description(&self) -> &'static str {
        self.description
    }
    pub fn object(&self) -> &'static str {
        self.object.unwrap_or(self.name)
    }
    pub fn plan(&self) -> &'static [&'static [Alternative]] {
        self.plan
    }
    pub fn optional(&self) -> &'static [OptionalGroup] {
        self.optional
    }
    pub fn netns_maps(&self) -> &'static [&'static str] {
        self.netns_maps
    }
    pub fn event_types(&self) -> &'static [(u8, &'static str)] {
        self.event_types
    }
    pub fn default_threshold_ns(&self) -> Option<u64> {
        self.default_threshold_ns
    }
    pub fn learns_addresses(&self) -> bool {
        self.learns_addresses
    }
    pub fn symbolizes(&self) -> bool {
        self.symbolizes
    }
    pub fn take_args(&self, cfg: &mut BpfProbeConfig, a: &mut ProbeArgs) -> Result<(), String> {
        self.take_args.map_or(Ok(()), |f| f(cfg, a))
    }
    pub fn setup(&self, cfg: &BpfProbeConfig, btf: &BtfSources) -> Result<Setup, String> {
        self.setup
            .map_or_else(|| Ok(Setup::default()), |f| f(cfg, btf))
    }
    #[allow(clippy::type_complexity)]
    pub fn attach_per_device(
        &self,
        cfg: &BpfProbeConfig,
        loaded: &Loaded,
    ) -> Option<Result<(Alternative, Arc<flow::State>), String>> {
        self.attach_per_device.map(|f| f(cfg, loaded))
    }
    pub fn collect(&self, p: &RunningProbe, cx: &mut CollectCtx<'_>) -> Result<(), String> {
        (self.collect)(p, cx)
    }
    pub fn decode(
        &self,
        cx: &DecodeCtx<'_>,
        r: &RawEvent,
        entity: Arc<EventEntity>,
    ) -> Option<Event> {
        self.decode.and_then(|f| f(cx, r, entity))
    }
}

/// Every eBPF probe, in [`ProbeKind::ALL`] order (display order).
pub static REGISTRY: [&EbpfProbe; 10] = [
    &packetloss::PROBE,
    &tcpreset::PROBE,
    &tcpretrans::PROBE,
    &netiftxlat::PROBE,
    &softirq::PROBE,
    &socketlatency::PROBE,
    &kernellatency::PROBE,
    &virtcmdlatency::PROBE,
    &biolatency::PROBE,
    &flow::PROBE,
];
