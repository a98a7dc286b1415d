//! BPF maps: creation (BTF key/value where the kernel takes it, retried
//! without), element access, iteration (batched where available), per-CPU
//! values and stack traces. Every map is an `OwnedFd`: dropping the last
//! reference (ours and any program's) frees it.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::abi::{
    self, FdAttr, MapBatchAttr, MapCreateAttr, MapElemAttr, ObjPinAttr, BPF_ANY,
    MAP_LRU_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_PERCPU_HASH, MAP_PERF_EVENT_ARRAY, MAP_RINGBUF,
    MAP_STACK_TRACE,
};
use super::error::{KError, KResult};
use super::fs;
use super::object::MapDef;
use super::sys;

/// A created map.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    name: String,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    cpus: usize,
}

/// Shape of a map to create (what [`MapDef`] says, or built by hand).
#[derive(Clone, Debug, Default)]
pub struct MapSpec {
    /// Name (truncated to 15 characters for the kernel).
    pub name: String,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size.
    pub key_size: u32,
    /// Value size (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Max entries (0 for a perf event array means "possible CPUs").
    pub max_entries: u32,
    /// Flags.
    pub map_flags: u32,
    /// `map_extra`.
    pub map_extra: u64,
    /// Object BTF ids for key/value (0 = none).
    pub btf_key_type_id: u32,
    /// See `btf_key_type_id`.
    pub btf_value_type_id: u32,
}

impl From<&MapDef> for MapSpec {
    fn from(d: &MapDef) -> Self {
        MapSpec {
            name: d.name.clone(),
            map_type: d.map_type,
            key_size: d.key_size,
            value_size: d.value_size,
            max_entries: d.max_entries,
            map_flags: d.map_flags,
            map_extra: d.map_extra,
            btf_key_type_id: d.key_type_id,
            btf_value_type_id: d.value_type_id,
        }
    }
}

static NO_BATCH: AtomicBool = AtomicBool::new(false);

fn is_per_cpu(t: u32) -> bool {
    matches!(t, MAP_PERCPU_HASH | MAP_PERCPU_ARRAY | MAP_LRU_PERCPU_HASH)
}

fn map_err(name: &str, op: &str, e: std::io::Error) -> KError {
    KError::io(format!("map {name}: {op}"), e)
}

impl Map {
    /// Creates a map; with `btf` the key/value types are attached, and if the
    /// kernel refuses that the map is created again without them.
    pub fn create(spec: &MapSpec, btf: Option<BorrowedFd<'_>>) -> KResult<Map> {
        let cpus = fs::possible_cpus()?;
        let mut max_entries = spec.max_entries;
        if spec.map_type == MAP_PERF_EVENT_ARRAY && max_entries == 0 {
            max_entries = cpus as u32;
        }
        // Ring buffers, perf arrays and stack maps take no BTF key/value.
        let wants_btf = spec.btf_value_type_id != 0
            && !matches!(
                spec.map_type,
                MAP_RINGBUF | MAP_PERF_EVENT_ARRAY | MAP_STACK_TRACE
            );
        let mut a = MapCreateAttr {
            map_type: spec.map_type,
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries,
            map_flags: spec.map_flags,
            map_name: abi::obj_name(&spec.name),
            map_extra: spec.map_extra,
            ..Default::default()
        };
        let mut first = None;
        if let (Some(b), true) = (btf, wants_btf) {
            let mut with = a;
            with.btf_fd = std::os::fd::AsRawFd::as_raw_fd(&b) as u32;
            with.btf_key_type_id = spec.btf_key_type_id;
            with.btf_value_type_id = spec.btf_value_type_id;
            match sys::bpf_fd(abi::BPF_MAP_CREATE, &mut with) {
                Ok(fd) => first = Some(fd),
                Err(e) => log::debug!(
                    "map {}: create with BTF failed ({e}), retrying without",
                    spec.name
                ),
            }
        }
        let fd = match first {
            Some(fd) => fd,
            None => sys::bpf_fd(abi::BPF_MAP_CREATE, &mut a).map_err(|e| {
                let name = &spec.name;
                match e.raw_os_error() {
                    Some(libc::EINVAL) if spec.map_type == MAP_RINGBUF => KError::unsupported(
                        format!("ring buffer map {name}"),
                        format!("{e}: needs Linux 5.8+ and a power-of-2 page multiple size"),
                    ),
                    // Before 5.11 an EPERM may be RLIMIT_MEMLOCK, but only when the process
                    // may create maps at all; otherwise say what it lacks.
                    Some(libc::EPERM)
                        if !super::btf_load::features().memcg_account
                            && crate::caps::Caps::current().bpf_capable() =>
                    {
                        KError::Permission {
                            what: format!("map {name}: create"),
                            why: format!(
                                "{e}: this kernel charges BPF memory to RLIMIT_MEMLOCK; raise `ulimit -l`"
                            ),
                        }
                    }
                    _ => map_err(name, "create", e),
                }
            })?,
        };
        Ok(Map {
            fd,
            name: spec.name.clone(),
            map_type: spec.map_type,
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries,
            cpus,
        })
    }

    /// Another handle to the same map (a dup'd fd).
    pub fn reopen(&self) -> KResult<Map> {
        Ok(Map {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| map_err(&self.name, "dup", e))?,
            name: self.name.clone(),
            map_type: self.map_type,
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries: self.max_entries,
            cpus: self.cpus,
        })
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `enum bpf_map_type`.
    pub fn map_type(&self) -> u32 {
        self.map_type
    }

    /// Key size.
    pub fn key_size(&self) -> usize {
        self.key_size as usize
    }

    /// Max entries.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Number of possible CPUs (per-CPU values hold one slot each).
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Size of one value as user space reads it: per-CPU maps hold
    /// `round_up(value_size, 8)` bytes for each possible CPU.
    pub fn value_len(&self) -> usize {
        if is_per_cpu(self.map_type) {
            (self.value_size as usize).div_ceil(8) * 8 * self.cpus
        } else {
            self.value_size as usize
        }
    }

    fn check_key(&self, key: &[u8]) -> KResult<()> {
        if key.len() != self.key_size as usize {
            return Err(KError::Io {
                what: format!("map {}: key of {} bytes", self.name, key.len()),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("key size is {}", self.key_size),
                ),
            });
        }
        Ok(())
    }

    /// Looks `key` up; `None` if absent.
    pub fn lookup(&self, key: &[u8]) -> KResult<Option<Vec<u8>>> {
        let mut v = vec![0u8; self.value_len()];
        Ok(self.lookup_into(key, &mut v)?.then_some(v))
    }

    /// Looks `key` up into `out` (which must be [`Map::value_len`] bytes).
    pub fn lookup_into(&self, key: &[u8], out: &mut [u8]) -> KResult<bool> {
        self.check_key(key)?;
        assert_eq!(out.len(), self.value_len(), "lookup buffer size");
        let mut a = MapElemAttr {
            map_fd: raw(&self.fd),
            key: sys::addr(key),
            value: sys::addr_mut(out),
            ..Default::default()
        };
        match sys::bpf(abi::BPF_MAP_LOOKUP_ELEM, &mut a) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(map_err(&self.name, "lookup", e)),
        }
    }

    /// Per-CPU lookup: one value (of `value_size` bytes) per possible CPU.
    pub fn lookup_percpu(&self, key: &[u8]) -> KResult<Option<Vec<Vec<u8>>>> {
        let Some(v) = self.lookup(key)? else {
            return Ok(None);
        };
        Ok(Some(self.split_percpu(&v)))
    }

    /// Bytes between two CPUs' values in a per-CPU buffer (`round_up(value_size, 8)`); the
    /// whole value for other maps.
    pub fn cpu_stride(&self) -> usize {
        if is_per_cpu(self.map_type) {
            (self.value_size as usize).div_ceil(8) * 8
        } else {
            self.value_size as usize
        }
    }

    /// Splits a per-CPU value buffer into per-CPU values.
    pub fn split_percpu(&self, v: &[u8]) -> Vec<Vec<u8>> {
        let stride = (self.value_size as usize).div_ceil(8) * 8;
        v.chunks(stride)
            .map(|c| c[..self.value_size as usize].to_vec())
            .collect()
    }

    /// Inserts or replaces (`flags`: `BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> KResult<()> {
        self.check_key(key)?;
        if value.len() != self.value_len() {
            return Err(KError::Io {
                what: format!("map {}: value of {} bytes", self.name, value.len()),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("value size is {}", self.value_len()),
                ),
            });
        }
        let mut a = MapElemAttr {
            map_fd: raw(&self.fd),
            key: sys::addr(key),
            value: sys::addr(value),
            flags,
            ..Default::default()
        };
        sys::bpf(abi::BPF_MAP_UPDATE_ELEM, &mut a)
            .map(|_| ())
            .map_err(|e| map_err(&self.name, "update", e))
    }

    /// Deletes `key`; false if it was absent.
    pub fn delete(&self, key: &[u8]) -> KResult<bool> {
        self.check_key(key)?;
        let mut a = MapElemAttr {
            map_fd: raw(&self.fd),
            key: sys::addr(key),
            ..Default::default()
        };
        match sys::bpf(abi::BPF_MAP_DELETE_ELEM, &mut a) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(map_err(&self.name, "delete", e)),
        }
    }

    /// The key after `key` (the first key for `None`); `None` at the end.
    pub fn next_key(&self, key: Option<&[u8]>) -> KResult<Option<Vec<u8>>> {
        if let Some(k) = key {
            self.check_key(k)?;
        }
        let mut next = vec![0u8; self.key_size as usize];
        let mut a = MapElemAttr {
            map_fd: raw(&self.fd),
            key: key.map_or(0, sys::addr),
            value: sys::addr_mut(&mut next[..]),
            ..Default::default()
        };
        match sys::bpf(abi::BPF_MAP_GET_NEXT_KEY, &mut a) {
            Ok(_) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(map_err(&self.name, "get next key", e)),
        }
    }

    /// Every key (a snapshot; keys deleted meanwhile may restart the walk,
    /// as with any `GET_NEXT_KEY` iteration).
    pub fn keys(&self) -> KResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut cur: Option<Vec<u8>> = None;
        while let Some(k) = self.next_key(cur.as_deref())? {
            out.push(k.clone());
            cur = Some(k);
            if out.len() > self.max_entries as usize * 2 + 16 {
                break;
            }
        }
        Ok(out)
    }

    /// Every (key, value): `BPF_MAP_LOOKUP_BATCH` where the kernel has it,
    /// else `GET_NEXT_KEY` + `LOOKUP`.
    pub fn entries(&self) -> KResult<Vec<(Vec<u8>, Vec<u8>)>> {
        if !NO_BATCH.load(Ordering::Relaxed) {
            match self.entries_batch() {
                Ok(v) => return Ok(v),
                Err(e)
                    if matches!(
                        e.errno(),
                        Some(libc::EINVAL)
                            | Some(libc::ENOTSUP)
                            | Some(super::abi::ENOTSUPP)
                            | Some(libc::ENOSPC)
                    ) =>
                {
                    if e.errno() != Some(libc::ENOSPC) {
                        NO_BATCH.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.entries_iter()
    }

    /// `GET_NEXT_KEY` + `LOOKUP` iteration.
    pub fn entries_iter(&self) -> KResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for k in self.keys()? {
            if let Some(v) = self.lookup(&k)? {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// `BPF_MAP_LOOKUP_BATCH` iteration.
    pub fn entries_batch(&self) -> KResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let n = self.max_entries.clamp(1, 4096) as usize;
        let ks = self.key_size as usize;
        let vs = self.value_len();
        let mut keys = vec![0u8; n * ks];
        let mut vals = vec![0u8; n * vs];
        let tok_len = ks.max(8);
        let mut in_tok = vec![0u8; tok_len];
        let mut out_tok = vec![0u8; tok_len];
        let mut out = Vec::new();
        let mut first = true;
        loop {
            let mut a = MapBatchAttr {
                in_batch: if first { 0 } else { sys::addr(&in_tok[..]) },
                out_batch: sys::addr_mut(&mut out_tok[..]),
                keys: sys::addr_mut(&mut keys[..]),
                values: sys::addr_mut(&mut vals[..]),
                count: n as u32,
                map_fd: raw(&self.fd),
                ..Default::default()
            };
            let r = sys::bpf(abi::BPF_MAP_LOOKUP_BATCH, &mut a);
            let got = a.count as usize;
            let done = match r {
                Ok(_) => false,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
                Err(e) => return Err(map_err(&self.name, "lookup batch", e)),
            };
            for i in 0..got.min(n) {
                out.push((
                    keys[i * ks..(i + 1) * ks].to_vec(),
                    vals[i * vs..(i + 1) * vs].to_vec(),
                ));
            }
            if done || got == 0 {
                return Ok(out);
            }
            in_tok.copy_from_slice(&out_tok);
            first = false;
        }
    }

    /// Sum over CPUs of a per-CPU `u64` value (0 if absent); the plain `u64`
    /// for other maps.
    pub fn get_u64(&self, key: &[u8]) -> KResult<u64> {
        let Some(v) = self.lookup(key)? else {
            return Ok(0);
        };
        let vs = if is_per_cpu(self.map_type) {
            (self.value_size as usize).div_ceil(8) * 8
        } else {
            v.len()
        };
        Ok(v.chunks(vs)
            .filter_map(|c| c.get(..8))
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .sum())
    }

    /// Makes the map read-only to user space (`.rodata` after filling it).
    pub fn freeze(&self) -> KResult<()> {
        let mut a = FdAttr { fd: raw(&self.fd) };
        sys::bpf(abi::BPF_MAP_FREEZE, &mut a)
            .map(|_| ())
            .map_err(|e| map_err(&self.name, "freeze", e))
    }

    /// Writes `data` at key 0 (global-data maps).
    pub fn set_data(&self, data: &[u8]) -> KResult<()> {
        self.update(&0u32.to_ne_bytes(), data, BPF_ANY)
    }

    /// Instruction pointers of stack `id` in a stack-trace map (up to the first 0).
    pub fn stack(&self, id: u32) -> KResult<Option<Vec<u64>>> {
        if self.map_type != MAP_STACK_TRACE {
            return Err(KError::unsupported(
                format!("map {}", self.name),
                "not a stack trace map",
            ));
        }
        Ok(self.lookup(&id.to_ne_bytes())?.map(|v| {
            v.chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
                .take_while(|&ip| ip != 0)
                .collect()
        }))
    }

    /// Pins the map at `path` (on bpffs, mounted if needed). Nothing is pinned
    /// unless asked.
    pub fn pin(&self, path: &std::path::Path) -> KResult<()> {
        fs::bpffs()?;
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            KError::NotFound {
                what: "pin path",
                name: path.display().to_string(),
            }
        })?;
        let mut a = ObjPinAttr {
            pathname: sys::addr(c.as_bytes_with_nul()),
            bpf_fd: raw(&self.fd),
            ..Default::default()
        };
        sys::bpf(abi::BPF_OBJ_PIN, &mut a)
            .map(|_| ())
            .map_err(|e| map_err(&self.name, "pin", e))
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(crate) fn raw(fd: &impl AsFd) -> u32 {
    std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()) as u32
}

#[cfg(test)]
mod tests {
    use super::super::sys::{override_syscall, reset_syscall, Call};
    use super::*;

    /// The exact attributes of each `BPF_MAP_CREATE`, through the `cfg(test)` syscall hook: the
    /// retry drops every BTF field, a perf array gets one slot per possible CPU. What the kernel
    /// answers is not proven here: `map_create_retries_without_btf_the_kernel_rejects` in
    /// `tests/bpf_kernel.rs` makes the real kernel reject a map's BTF (EINVAL) and shows the
    /// retried map working.
    #[test]
    fn create_retries_without_btf_and_sizes_perf_arrays() {
        let calls = std::rc::Rc::new(std::cell::RefCell::new(Vec::<MapCreateAttr>::new()));
        let c2 = calls.clone();
        override_syscall(move |c| match c {
            Call::Bpf { cmd: 0, attr } => {
                let mut a = MapCreateAttr::default();
                let n = std::mem::size_of::<MapCreateAttr>();
                assert_eq!(attr.len(), n);
                // Decode the fields we check.
                a.map_type = u32::from_ne_bytes(attr[0..4].try_into().unwrap());
                a.max_entries = u32::from_ne_bytes(attr[12..16].try_into().unwrap());
                a.btf_fd = u32::from_ne_bytes(attr[48..52].try_into().unwrap());
                a.btf_value_type_id = u32::from_ne_bytes(attr[56..60].try_into().unwrap());
                c2.borrow_mut().push(a);
                if a.btf_fd != 0 {
                    Err(std::io::Error::from_raw_os_error(libc::EINVAL))
                } else {
                    // A real fd so OwnedFd's drop is harmless.
                    Ok(std::os::fd::IntoRawFd::into_raw_fd(
                        std::fs::File::open("/dev/null").unwrap(),
                    ) as i64)
                }
            }
            _ => panic!("unexpected"),
        });
        let null = std::fs::File::open("/dev/null").unwrap();
        let spec = MapSpec {
            name: "h".into(),
            map_type: 1,
            key_size: 4,
            value_size: 8,
            max_entries: 4,
            btf_key_type_id: 1,
            btf_value_type_id: 2,
            ..Default::default()
        };
        let m = Map::create(&spec, Some(null.as_fd())).unwrap();
        assert_eq!(m.value_len(), 8);
        let perf = MapSpec {
            name: "p".into(),
            map_type: MAP_PERF_EVENT_ARRAY,
            key_size: 4,
            value_size: 4,
            ..Default::default()
        };
        let p = Map::create(&perf, None).unwrap();
        reset_syscall();
        let calls = calls.borrow();
        assert_eq!(calls.len(), 3);
        assert_ne!(calls[0].btf_fd, 0);
        assert_eq!(calls[0].btf_value_type_id, 2);
        assert_eq!(calls[1].btf_fd, 0);
        assert_eq!(calls[2].max_entries as usize, fs::possible_cpus().unwrap());
        assert_eq!(p.max_entries() as usize, p.cpus());
    }
}
