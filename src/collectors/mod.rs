//! Metric probes. One module per probe (or per procfs file shared by several probes); each has
//! a pure parser (bytes in, values out) that is unit-tested and fuzzed, plus a small collector
//! that reads the bytes for one network namespace and emits samples.

use std::cell::RefCell;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::RwLock;

use regex::Regex;

use crate::model::Sink;

pub mod conntrack;
pub mod fd;
pub mod io;
pub mod ipvs;
pub mod names;
pub mod netdev;
pub mod netlink;
pub mod netstat;
pub mod parse;
pub mod qdisc;
pub mod rdma;
pub mod snmp;
pub mod sock;
pub mod softnet;
pub mod tcpsummary;
#[cfg(test)]
pub(crate) mod testutil;

/// Where a collector's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Node-global data (softnet): collected once per scrape, without entity labels.
    Node,
    /// Collected in every network namespace, with its entity labels.
    Netns,
}

/// Why a collection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectError {
    /// The data source does not exist on this node (module not loaded, file absent). Reported
    /// once as "not available"; not an error of the scrape.
    NotAvailable(String),
    /// Reading or parsing failed. The message names the file or request.
    Failed(String),
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::NotAvailable(m) => write!(f, "not available: {m}"),
            CollectError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CollectError {}

/// A cached file read.
type FileResult = Result<Rc<Vec<u8>>, CollectError>;

/// Everything a collector may use to read one network namespace.
///
/// File reads go through [`NetnsCtx::read_net`], which caches each file for the duration of
/// one namespace's collection, so probes sharing a file (ip/icmp/tcp/udp all read `snmp`) read
/// it once.
pub struct NetnsCtx<'a> {
    /// Network namespace inode.
    pub inode: u64,
    /// Directory with the namespace's `net` files: `/proc/<pid>/net`, or
    /// `/proc/thread-self/net` when the collecting thread has entered the namespace.
    pub net_dir: PathBuf,
    /// Root of procfs (normally `/proc`), for per-process files.
    pub proc_root: &'a Path,
    /// True when the calling thread is inside the namespace: netlink sockets it opens talk to
    /// that namespace's kernel state, and `/proc/sys/net` shows its sysctls.
    pub entered: bool,
    /// Thread-group ids of the processes in the namespace (sorted). Empty for a named netns
    /// with no process.
    pub pids: &'a [i32],
    /// True for the host (initial) namespace: node-global figures are exported only there.
    pub host: bool,
    /// Sockets and files kept open for this namespace (see [`NetnsHandles`]).
    handles: Option<std::sync::Arc<NetnsHandles>>,
    /// Files can only come from `handles` (a namespace without a process, not entered):
    /// `net_dir` names the namespace for messages but is not read.
    kept_only: bool,
    cache: RefCell<HashMap<&'static str, FileResult>>,
    /// `net_dir` opened once, so each file is one `openat` away: walking
    /// `/proc/thread-self/net/<file>` from the root for every file was a tenth of a scrape.
    dir: RefCell<Option<std::io::Result<std::os::fd::OwnedFd>>>,
    parsed: RefCell<HashMap<&'static str, ParsedResult>>,
}

type ParsedResult = Result<Rc<ParsedStats>, CollectError>;
type Span = (u32, u32);

/// A `Group Field value` file (snmp, snmp6, netstat) parsed once per namespace and kept as spans
/// into its bytes, so the probes sharing it (ip, icmp, tcp, udp; tcpext, ipext) do not each
/// parse it again.
pub struct ParsedStats {
    /// The file as text (made valid UTF-8 once, so spans need no re-validation per use). A
    /// `String`, not a `Box<str>`: shrinking the read buffer to fit copied every file again, and
    /// the parsed form lives only for one namespace's collection.
    text: String,
    /// (group span, field span, value); a span is (offset, length) in `text`.
    items: Vec<(Span, Span, crate::model::Value)>,
}

impl ParsedStats {
    fn new(data: Vec<u8>, parse: StatsParser) -> Result<ParsedStats, String> {
        // Valid UTF-8 (always, from a kernel) becomes the text without a copy.
        let text = match String::from_utf8(data) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let stats = parse(text.as_bytes())?;
        let base = text.as_ptr() as usize;
        // Parsers return slices of their input; anything else (never seen) is left out.
        let span = |s: &str| {
            let off = (s.as_ptr() as usize).checked_sub(base)?;
            (off + s.len() <= text.len()).then_some((off as u32, s.len() as u32))
        };
        let mut items = Vec::with_capacity(stats.len());
        items.extend(
            stats
                .iter()
                .filter_map(|st| Some((span(st.group)?, span(st.field)?, st.value))),
        );
        drop(stats);
        Ok(ParsedStats { text, items })
    }

    fn at(&self, (off, len): Span) -> &str {
        self.text
            .get(off as usize..(off + len) as usize)
            .unwrap_or("")
    }

    pub fn iter(&self) -> impl Iterator<Item = parse::Stat<'_>> {
        self.items.iter().map(|&(g, f, value)| parse::Stat {
            group: self.at(g),
            field: self.at(f),
            value,
        })
    }
}

/// A parser of a stats file.
pub type StatsParser = for<'d> fn(&'d [u8]) -> Result<Vec<parse::Stat<'d>>, String>;

impl<'a> NetnsCtx<'a> {
    pub fn new(
        inode: u64,
        net_dir: PathBuf,
        proc_root: &'a Path,
        entered: bool,
        pids: &'a [i32],
    ) -> Self {
        NetnsCtx {
            inode,
            net_dir,
            proc_root,
            entered,
            pids,
            host: false,
            handles: None,
            kept_only: false,
            cache: RefCell::new(HashMap::default()),
            dir: RefCell::new(None),
            parsed: RefCell::new(HashMap::default()),
        }
    }

    /// Mark this as the host namespace.
    pub fn with_host(mut self, host: bool) -> Self {
        self.host = host;
        self
    }

    /// Give the collectors the sockets and files kept open for this namespace.
    pub fn with_handles(mut self, handles: Option<std::sync::Arc<NetnsHandles>>) -> Self {
        self.handles = handles;
        self
    }

    /// Read files only from the kept handles (see [`NetnsCtx::kept_only`]).
    pub fn kept_only(mut self) -> Self {
        self.kept_only = true;
        self
    }

    /// Run `f` with a netlink socket of `protocol` in this namespace: the one kept for it, or,
    /// when the calling thread is inside the namespace and none is kept, a new one (closed
    /// afterwards). Neither: [`netlink::NlError::NoSocket`].
    pub fn netlink<T>(
        &self,
        protocol: isize,
        f: impl FnOnce(&mut netlink::DumpSocket) -> Result<T, netlink::NlError>,
    ) -> Result<T, netlink::NlError> {
        if let Some(h) = &self.handles {
            if h.sockets.has_all(&[protocol]) {
                return h.sockets.with(protocol, f);
            }
        }
        if self.entered {
            return f(&mut netlink::DumpSocket::open(protocol)?);
        }
        Err(netlink::NlError::NoSocket)
    }

    /// Whether [`NetnsCtx::netlink`] can reach this namespace with each of `protocols`.
    pub fn reaches(&self, protocols: &[isize]) -> bool {
        protocols.is_empty()
            || self.entered
            || self
                .handles
                .as_ref()
                .is_some_and(|h| h.sockets.has_all(protocols))
    }

    /// Read `<net_dir>/<rel>` (e.g. `snmp`, `stat/nf_conntrack`), cached per namespace. A
    /// missing file is [`CollectError::NotAvailable`].
    pub fn read_net(&self, rel: &'static str) -> Result<Rc<Vec<u8>>, CollectError> {
        if let Some(r) = self.cache.borrow().get(rel) {
            return r.clone();
        }
        let r = self.read_net_uncached(rel).map(Rc::new);
        self.cache.borrow_mut().insert(rel, r.clone());
        r
    }

    /// `<net_dir>/<rel>` parsed with `parse`, once per namespace whichever probe asks first.
    pub fn stats(
        &self,
        rel: &'static str,
        parse: StatsParser,
    ) -> Result<Rc<ParsedStats>, CollectError> {
        if let Some(r) = self.parsed.borrow().get(rel) {
            return r.clone();
        }
        // Not through the file cache: the parsed form is what is shared, and owning the bytes
        // saves copying them.
        let r = self.read_net_uncached(rel).and_then(|data| {
            ParsedStats::new(data, parse).map(Rc::new).map_err(|e| {
                CollectError::Failed(format!("parsing {}: {e}", self.net_dir.join(rel).display()))
            })
        });
        self.parsed.borrow_mut().insert(rel, r.clone());
        r
    }

    fn read_net_uncached(&self, rel: &'static str) -> Result<Vec<u8>, CollectError> {
        let path = || self.net_dir.join(rel);
        if let Some(h) = &self.handles {
            if let Some(r) = h.read_kept(rel, expected_size(rel)) {
                let data = r.map_err(|e| io_error(&path(), e))?;
                SIZES.with(|s| s.borrow_mut().insert(rel, data.len()));
                return Ok(data);
            }
            if self.kept_only {
                if h.is_missing(rel) {
                    return Err(io_error(
                        &path(),
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                // Only a thread inside can open it: the next collection enters.
                h.mark_incomplete();
                return Err(CollectError::Failed(format!(
                    "{}: not open yet in this namespace without a process; read from inside it at the next scrape",
                    path().display()
                )));
            }
        }
        let opened = if self.entered && self.net_dir == Path::new(THREAD_NET) {
            SELF_NET.with(|d| match d {
                Ok(d) => Some(open_in(d, rel)),
                Err(_) => None,
            })
        } else {
            None
        };
        let opened = match opened {
            Some(r) => r,
            None => {
                let mut dir = self.dir.borrow_mut();
                let dir = dir.get_or_insert_with(|| {
                    std::fs::File::open(&self.net_dir).map(std::os::fd::OwnedFd::from)
                });
                match dir {
                    Ok(d) => open_in(d, rel),
                    // The directory itself is gone (the process exited): report it for the
                    // file.
                    Err(e) => return Err(io_error(&path(), std::io::Error::from(e.kind()))),
                }
            }
        };
        match opened {
            Ok(f) => {
                let data = read_sized(&f, &path(), expected_size(rel))?;
                SIZES.with(|s| s.borrow_mut().insert(rel, data.len()));
                if let Some(h) = &self.handles {
                    h.keep_file(rel, f);
                }
                Ok(data)
            }
            Err(e) => {
                if let Some(h) = &self.handles {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        h.note_missing(rel);
                    }
                }
                Err(io_error(&path(), e))
            }
        }
    }
}

/// What collection keeps open for one network namespace, so that a scrape neither enters it
/// nor opens anything in it: its netlink sockets, and the procfs `net` files it read. Both
/// stay bound to the namespace they were opened in, wherever the thread using them is (a
/// procfs net file is tied to its namespace at open; reading it again from offset 0
/// regenerates it), so a namespace without any process is read without `setns` too.
///
/// Each one holds a reference on the namespace, so the namespace (and its inode number)
/// lives on while they are open: the inventory closes them at the scan that no longer finds
/// the namespace, and collection the moment it finds the namespace gone.
pub struct NetnsHandles {
    /// The namespace's cookie when they were opened (`None` without `SO_NETNS_COOKIE`).
    pub cookie: Option<u64>,
    pub sockets: netlink::KeptSockets,
    files: std::sync::Mutex<KeptFiles>,
    /// A file was asked for that is not kept, in a namespace only a thread inside can open
    /// files in: the next collection enters it.
    incomplete: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct KeptFiles {
    open: Vec<(&'static str, std::fs::File)>,
    /// Files that did not exist in the namespace when asked for.
    missing: Vec<&'static str>,
}

impl NetnsHandles {
    pub fn new(cookie: Option<u64>) -> Self {
        NetnsHandles {
            cookie,
            sockets: netlink::KeptSockets::default(),
            files: std::sync::Mutex::new(KeptFiles::default()),
            incomplete: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn files(&self) -> std::sync::MutexGuard<'_, KeptFiles> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `rel` read again from its start, if it is kept. A read that fails closes it.
    fn read_kept(&self, rel: &str, expect: usize) -> Option<std::io::Result<Vec<u8>>> {
        let mut files = self.files();
        let i = files.open.iter().position(|(r, _)| *r == rel)?;
        let r = pread_all(&files.open[i].1, expect);
        if r.is_err() {
            files.open.swap_remove(i);
        }
        Some(r)
    }

    fn keep_file(&self, rel: &'static str, f: std::fs::File) {
        let mut files = self.files();
        files.missing.retain(|m| *m != rel);
        if !files.open.iter().any(|(r, _)| *r == rel) {
            files.open.push((rel, f));
        }
    }

    fn note_missing(&self, rel: &'static str) {
        let mut files = self.files();
        if !files.missing.contains(&rel) {
            files.missing.push(rel);
        }
    }

    fn is_missing(&self, rel: &str) -> bool {
        self.files().missing.contains(&rel)
    }

    fn mark_incomplete(&self) {
        self.incomplete
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forget a file found not kept: called before a collection from inside the namespace,
    /// which opens and keeps whatever is asked for.
    pub fn reset_incomplete(&self) {
        self.incomplete
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a collection from outside can read everything asked for so far.
    pub fn is_complete(&self) -> bool {
        !self.incomplete.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Kept netlink sockets and kept files.
    pub fn counts(&self) -> (usize, usize) {
        (self.sockets.len(), self.files().open.len())
    }
}

/// Read a whole procfs file from offset 0 (`pread`, so a kept file needs no seek): at offset
/// 0 a seq_file starts over, showing the kernel's figures now.
fn pread_all(f: &std::fs::File, expect: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expect.max(1024));
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let at = out.len() as u64;
        match crate::sys::pread_append(f, &mut out, at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The `net` directory of the calling thread's network namespace.
const THREAD_NET: &str = "/proc/thread-self/net";

thread_local! {
    /// This thread's `/proc/thread-self/net`, opened once. Names looked up under it resolve in
    /// the thread's network namespace at lookup time (procfs never caches a net dentry across
    /// lookups), so after each setns it shows the namespace just entered: one fewer path walk,
    /// open and close per namespace. Tests check every namespace's figures against its own
    /// files.
    static SELF_NET: std::io::Result<std::os::fd::OwnedFd> =
        std::fs::File::open(THREAD_NET).map(std::os::fd::OwnedFd::from);
}

/// Open `rel` under the directory `dir`.
fn open_in(dir: &std::os::fd::OwnedFd, rel: &str) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    openat(dir, rel, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map(std::fs::File::from)
        .map_err(std::io::Error::from)
}

/// A missing file is `NotAvailable`, other errors `Failed`, both naming the path.
fn io_error(path: &Path, e: std::io::Error) -> CollectError {
    if e.kind() == std::io::ErrorKind::NotFound {
        CollectError::NotAvailable(format!("{} does not exist", path.display()))
    } else {
        CollectError::Failed(format!("reading {}: {e}", path.display()))
    }
}

/// Read a whole file; a missing file is `NotAvailable`, other errors `Failed`, both naming the path.
pub fn read_file(path: &Path) -> Result<Vec<u8>, CollectError> {
    let f = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    read_all(f, path)
}

fn read_all(f: std::fs::File, path: &Path) -> Result<Vec<u8>, CollectError> {
    read_sized(&f, path, 4096)
}

/// Read a whole file into a buffer of `expect` bytes (grown if the file is larger). procfs
/// reports size 0, so `fs::read` would probe with 32-byte reads and grow from there (ten
/// syscalls for snmp6), and `File::read_to_end` would stat and seek first: reading through
/// `take` into a buffer already big enough is one read() for the data and one for the end.
fn read_sized(f: &std::fs::File, path: &Path, expect: usize) -> Result<Vec<u8>, CollectError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(expect);
    match f.take(u64::MAX).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => Err(io_error(path, e)),
    }
}

thread_local! {
    /// Size of each namespace file this thread last read (namespaces' files are alike).
    static SIZES: RefCell<HashMap<&'static str, usize>> = RefCell::new(HashMap::default());
}

/// A buffer size that fits `rel` as last read here, with room for growth.
fn expected_size(rel: &'static str) -> usize {
    SIZES
        .with(|s| s.borrow().get(rel).copied())
        .unwrap_or(0)
        .max(2048)
        * 9
        / 8
        + 256
}

/// `available()` of probes that only need a file: `Err` names the missing file.
pub fn require_file(path: &str) -> Result<(), String> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("{path} does not exist"))
    }
}

/// A metric probe.
pub trait Collector: Send + Sync {
    /// The probe name (`netdev`, `tcpext`...).
    fn name(&self) -> &'static str;
    fn scope(&self) -> Scope {
        Scope::Netns
    }
    /// The netlink protocols (`netlink_sys::protocols::NETLINK_ROUTE`...) the probe dumps
    /// through [`NetnsCtx::netlink`]. The engine keeps a socket of each open per namespace,
    /// entering a namespace once to open them, and not at all after that.
    fn netlink_protocols(&self) -> &'static [isize] {
        &[]
    }
    /// True if the probe must run inside the namespace (ipvs's generic netlink, whose socket
    /// is not kept): the engine then enters the namespace before calling it, every scrape.
    fn needs_entered(&self) -> bool {
        false
    }
    /// True if the probe's figures are sums over processes: the engine then also runs it for a
    /// process group (processes of a namespace reported apart), and runs no other probe there.
    fn per_process(&self) -> bool {
        false
    }
    /// Collect one namespace (or, for [`Scope::Node`], the node).
    fn collect(&self, ctx: &NetnsCtx, out: &mut dyn Sink) -> Result<(), CollectError>;
}

/// A probe's YAML `args`, with KubeSkoop's case-insensitive keys. Every key must be consumed by
/// the probe; [`ProbeArgs::finish`] rejects the rest by name.
#[derive(Debug, Default, Clone)]
pub struct ProbeArgs {
    probe: String,
    map: BTreeMap<String, (String, serde_norway::Value)>,
}

impl ProbeArgs {
    pub fn new(probe: &str) -> Self {
        ProbeArgs {
            probe: probe.to_string(),
            map: BTreeMap::new(),
        }
    }

    /// Build from a YAML mapping. Keys are matched case-insensitively.
    pub fn from_yaml(probe: &str, v: &serde_norway::Value) -> Result<Self, String> {
        let mut a = ProbeArgs::new(probe);
        match v {
            serde_norway::Value::Null => {}
            serde_norway::Value::Mapping(m) => {
                for (k, v) in m {
                    let key = k
                        .as_str()
                        .ok_or_else(|| format!("probe {probe}: args keys must be strings"))?;
                    if a.map
                        .insert(key.to_ascii_lowercase(), (key.to_string(), v.clone()))
                        .is_some()
                    {
                        return Err(format!("probe {probe}: arg `{key}` given twice"));
                    }
                }
            }
            _ => return Err(format!("probe {probe}: args must be a mapping")),
        }
        Ok(a)
    }

    /// Take a string arg.
    pub fn take_str(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.map.remove(&key.to_ascii_lowercase()) {
            None => Ok(None),
            Some((orig, serde_norway::Value::String(s))) => {
                let _ = orig;
                Ok(Some(s))
            }
            Some((orig, _)) => Err(format!(
                "probe {}: arg `{orig}` must be a string",
                self.probe
            )),
        }
    }

    /// Take a string or number arg as text (`maxSize: 10M` or `maxSize: 1048576`).
    pub fn take_scalar(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.map.get(&key.to_ascii_lowercase()) {
            Some((_, serde_norway::Value::Number(n))) => {
                let n = n.to_string();
                self.map.remove(&key.to_ascii_lowercase());
                Ok(Some(n))
            }
            _ => self.take_str(key),
        }
    }

    /// Take a regex arg, compiled and anchored (`^(?:...)$`) like node_exporter's field filters.
    pub fn take_regex(&mut self, key: &str) -> Result<Option<Regex>, String> {
        match self.take_str(key)? {
            None => Ok(None),
            Some(s) => Regex::new(&format!("^(?:{s})$")).map(Some).map_err(|e| {
                format!(
                    "probe {}: arg `{key}` is not a valid regex: {e}",
                    self.probe
                )
            }),
        }
    }

    /// Take a boolean arg.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        match self.map.remove(&key.to_ascii_lowercase()) {
            None => Ok(None),
            Some((_, serde_norway::Value::Bool(b))) => Ok(Some(b)),
            Some((orig, _)) => Err(format!(
                "probe {}: arg `{orig}` must be true or false",
                self.probe
            )),
        }
    }

    /// Take a list-of-strings arg.
    pub fn take_str_list(&mut self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.map.remove(&key.to_ascii_lowercase()) {
            None => Ok(None),
            Some((orig, serde_norway::Value::Sequence(v))) => v
                .into_iter()
                .map(|x| match x {
                    serde_norway::Value::String(s) => Ok(s),
                    _ => Err(format!(
                        "probe {}: arg `{orig}` must be a list of strings",
                        self.probe
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some((orig, _)) => Err(format!(
                "probe {}: arg `{orig}` must be a list of strings",
                self.probe
            )),
        }
    }

    /// Fail if any arg was not consumed.
    pub fn finish(self) -> Result<(), String> {
        if let Some((_, (orig, _))) = self.map.into_iter().next() {
            return Err(format!("probe {}: unknown arg `{orig}`", self.probe));
        }
        Ok(())
    }
}

/// Selects kernel fields by an anchored regex, memoizing the answer per field name (the same
/// few hundred names recur in every namespace, and a regex match per field per namespace would
/// cost more than parsing).
#[derive(Debug)]
pub struct FieldFilter {
    re: Regex,
    memo: RwLock<HashMap<String, bool>>,
}

impl FieldFilter {
    pub fn new(re: Regex) -> Self {
        FieldFilter {
            re,
            memo: RwLock::new(HashMap::default()),
        }
    }

    /// Build from the probe's `fields` arg, falling back to `default` (a regex source).
    pub fn from_args(args: &mut ProbeArgs, default: &str) -> Result<Self, String> {
        let re = match args.take_regex("fields")? {
            Some(r) => r,
            None => {
                Regex::new(&format!("^(?:{default})$")).expect("built-in default regex is valid")
            }
        };
        Ok(Self::new(re))
    }

    pub fn pattern(&self) -> &str {
        self.re.as_str()
    }

    pub fn matches(&self, field: &str) -> bool {
        if let Some(&b) = self
            .memo
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(field)
        {
            return b;
        }
        let b = self.re.is_match(field);
        let mut m = self.memo.write().unwrap_or_else(|e| e.into_inner());
        // Bound the memo: kernels print a few hundred names; garbage input must not grow it.
        if m.len() < 4096 {
            m.insert(field.to_string(), b);
        }
        b
    }
}

/// Static description of a probe, for the registry and `netsleuth probes`.
pub struct ProbeSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// The default `fields` regex, if the probe filters fields.
    pub default_fields: Option<&'static str>,
    /// Whether the probe is in the default set (no config file).
    pub default_enabled: bool,
    pub build: fn(&mut ProbeArgs) -> Result<Box<dyn Collector>, String>,
    /// Checks, on this host, whether the probe can run; `Err` says why not.
    pub available: fn() -> Result<(), String>,
}

impl ProbeSpec {
    /// A probe in the default set, with its module's `build` and `available`.
    pub fn new(
        name: &'static str,
        description: &'static str,
        default_fields: Option<&'static str>,
        build: fn(&mut ProbeArgs) -> Result<Box<dyn Collector>, String>,
        available: fn() -> Result<(), String>,
    ) -> ProbeSpec {
        ProbeSpec {
            name,
            description,
            default_fields,
            default_enabled: true,
            build,
            available,
        }
    }

    /// The same probe, left out of the default set (enabled only by configuration).
    pub fn off_by_default(self) -> ProbeSpec {
        ProbeSpec {
            default_enabled: false,
            ..self
        }
    }
}

/// Every metric probe this build knows, in display order.
pub fn registry() -> Vec<ProbeSpec> {
    let mut v = Vec::new();
    v.extend(netdev::specs());
    v.extend(snmp::specs());
    v.extend(netstat::specs());
    v.extend(sock::specs());
    v.extend(softnet::specs());
    v.extend(tcpsummary::specs());
    v.extend(io::specs());
    v.extend(fd::specs());
    v.extend(conntrack::specs());
    v.extend(qdisc::specs());
    v.extend(ipvs::specs());
    v.extend(rdma::specs());
    v
}

/// Find a probe by name.
pub fn find(name: &str) -> Option<ProbeSpec> {
    registry().into_iter().find(|s| s.name == name)
}

/// A probe whose data is aggregated in kernel maps keyed by network namespace inode (the eBPF
/// probes): collected once per scrape, not once per namespace. `labels(inode)` is the entity
/// label prefix of that namespace (an unknown one is labelled by its inode with
/// `kind="unknown"`, same label names), to be passed to [`crate::model::Families::sink`].
pub trait MapCollector: Send + Sync {
    fn name(&self) -> &'static str;
    fn collect(
        &self,
        labels: &dyn Fn(u64) -> String,
        out: &mut crate::model::Families,
    ) -> Result<(), CollectError>;
}

/// Names of probes that exist in KubeSkoop but are eBPF probes or not built yet: a KubeSkoop
/// config naming them must still load.
pub const NOT_YET_AVAILABLE: &[&str] = &[];

/// Parse a decimal integer field as found in procfs (optionally negative).
pub fn parse_int(s: &[u8]) -> Option<crate::model::Value> {
    use crate::model::Value;
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some(Value::I64((v as i128).wrapping_neg() as i64))
    } else {
        Some(Value::U64(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    /// A kept file is read whole from offset 0 whatever the first guess of its size, again
    /// after it changed, and an empty one reads as empty; procfs files too.
    #[test]
    fn pread_all_reads_whole_files_from_the_start() {
        let path = std::env::temp_dir().join(format!("netsleuth-pread-{}", std::process::id()));
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &big).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        for expect in [0, 1024, 70_000, 200_000] {
            assert_eq!(pread_all(&f, expect).unwrap(), big, "expect {expect}");
        }
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(pread_all(&f, 1024).unwrap(), b"short");
        std::fs::write(&path, b"").unwrap();
        assert!(pread_all(&f, 1024).unwrap().is_empty());
        std::fs::remove_file(&path).unwrap();
        let f = std::fs::File::open("/proc/self/net/snmp").unwrap();
        let want = std::fs::read("/proc/self/net/snmp").unwrap();
        let got = pread_all(&f, 0).unwrap();
        // The counters move between the two reads; the lines and the header lines do not.
        let lines = |b: &[u8]| b.split(|&c| c == b'\n').count();
        assert_eq!(lines(&got), lines(&want));
        let headers = |b: &[u8]| -> Vec<Vec<u8>> {
            b.split(|&c| c == b'\n')
                .step_by(2)
                .map(<[u8]>::to_vec)
                .collect()
        };
        assert_eq!(headers(&got), headers(&want));
        assert!(got.starts_with(b"Ip: Forwarding DefaultTTL"), "{got:?}");
    }

    #[test]
    fn parse_int_edges() {
        assert_eq!(parse_int(b"0"), Some(Value::U64(0)));
        assert_eq!(parse_int(b"-1"), Some(Value::I64(-1)));
        assert_eq!(
            parse_int(b"18446744073709551615"),
            Some(Value::U64(u64::MAX))
        );
        assert_eq!(parse_int(b"18446744073709551616"), None);
        assert_eq!(
            parse_int(b"-9223372036854775808"),
            Some(Value::I64(i64::MIN))
        );
        assert_eq!(parse_int(b"-9223372036854775809"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"12a"), None);
    }

    #[test]
    fn args_case_insensitive_and_unknown_rejected() {
        let y: serde_norway::Value = serde_norway::from_str("{Fields: 'a|b', bogus: 1}").unwrap();
        let mut a = ProbeArgs::from_yaml("tcpext", &y).unwrap();
        let f = FieldFilter::from_args(&mut a, "x").unwrap();
        assert!(f.matches("a") && f.matches("b") && !f.matches("ab"));
        assert_eq!(a.finish().unwrap_err(), "probe tcpext: unknown arg `bogus`");
    }

    #[test]
    fn bad_regex_named() {
        let y: serde_norway::Value = serde_norway::from_str("{fields: '('}").unwrap();
        let mut a = ProbeArgs::from_yaml("tcp", &y).unwrap();
        let e = FieldFilter::from_args(&mut a, "x").unwrap_err();
        assert!(
            e.starts_with("probe tcp: arg `fields` is not a valid regex"),
            "{e}"
        );
    }
}
