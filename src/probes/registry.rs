//! The eBPF probe registry: one descriptor per probe ([`EbpfProbe`], implemented by a unit
//! struct in the probe's module), listed in [`REGISTRY`] in [`ProbeKind`] order — as the procfs
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

/// One eBPF probe: everything the shared machinery needs to know of it.
pub trait EbpfProbe: Sync {
    fn kind(&self) -> ProbeKind;
    /// The name in `metrics.probes`/`event.probes`, the metric names and `probe` labels.
    fn name(&self) -> &'static str;
    /// One line for `netsleuth probes`.
    fn description(&self) -> &'static str;
    /// The embedded object's name (`bpf-asm/<object>.bpf.o`).
    fn object(&self) -> &'static str {
        self.name()
    }
    /// For each attach point, the alternatives in order of preference.
    fn plan(&self) -> &'static [&'static [Alternative]];
    /// Attach point groups used where they attach.
    fn optional(&self) -> &'static [OptionalGroup] {
        &[]
    }
    /// The counting maps whose keys start with the namespace inode (u32): the reaper deletes
    /// dead namespaces' keys.
    fn netns_maps(&self) -> &'static [&'static str] {
        &[]
    }
    /// Event type name per record subtype (`ns_event.type`).
    fn event_types(&self) -> &'static [(u8, &'static str)] {
        &[]
    }
    /// Latency probes (histograms, `threshold`): the default `threshold`.
    fn default_threshold_ns(&self) -> Option<u64> {
        None
    }
    /// Its series name peers on this node by address (the inventory learns addresses).
    fn learns_addresses(&self) -> bool {
        false
    }
    /// The event reader symbolizes kernel addresses even without stacks (packetloss locations).
    fn symbolizes(&self) -> bool {
        false
    }
    /// Takes the probe's own args (after the common ones).
    fn take_args(&self, _cfg: &mut BpfProbeConfig, _a: &mut ProbeArgs) -> Result<(), String> {
        Ok(())
    }
    /// The probe's own `.rodata`, map sizes and BTF name table.
    fn setup(&self, _cfg: &BpfProbeConfig, _btf: &BtfSources) -> Result<Setup, String> {
        Ok(Setup::default())
    }
    /// Probes attached per device by a thread of their own (flow) instead of through the plan:
    /// the plan alternative chosen and the device state. `None`: attach the plan.
    #[allow(clippy::type_complexity)]
    fn attach_per_device(
        &self,
        _cfg: &BpfProbeConfig,
        _loaded: &Loaded,
    ) -> Option<Result<(Alternative, Arc<flow::State>), String>> {
        None
    }
    /// Reads the probe's maps into families (once per scrape).
    fn collect(&self, p: &RunningProbe, cx: &mut CollectCtx<'_>) -> Result<(), String>;
    /// Decodes one record of its ring buffer.
    fn decode(&self, _cx: &DecodeCtx<'_>, _r: &RawEvent, _entity: EventEntity) -> Option<Event> {
        None
    }
}

/// Every eBPF probe, in [`ProbeKind::ALL`] order (display order).
pub static REGISTRY: [&dyn EbpfProbe; 10] = [
    &packetloss::Probe,
    &tcpreset::Probe,
    &tcpretrans::Probe,
    &netiftxlat::Probe,
    &softirq::Probe,
    &socketlatency::Probe,
    &kernellatency::Probe,
    &virtcmdlatency::Probe,
    &biolatency::Probe,
    &flow::Probe,
];
