//! A bounded, read-only reader of bbolt (BoltDB) files: containerd's metadata store
//! (`io.containerd.metadata.v1.bolt/meta.db`, where the CRI plugin keeps each pod sandbox's
//! config, labels included) and libpod's `bolt_state.db`.
//!
//! The database belongs to a running daemon that holds an exclusive `flock` on it and commits
//! into it concurrently. So this reader never locks (a shared lock would wait for ever behind
//! the daemon's exclusive one) and never maps the file: it reads pages with `pread` into
//! buffers of its own and treats every byte as untrusted. Every offset, length, page id and
//! count is checked against the page and the file; trees are walked to a bounded depth over a
//! bounded number of pages. A garbage, truncated or hostile file gives an [`Error`], never a
//! panic.
//!
//! Consistency without a read transaction: bbolt writes a commit's data pages first and its
//! meta page last, and it only reuses a page freed by commit N+1 from commit N+2 on. A reader
//! that picks the newest valid meta page (txid N), walks the tree, and then finds the newest
//! valid meta still at N has read pages no later commit can have touched (commit N+2's data
//! writes start only after N+1's meta page is written). If the txid moved, the read is
//! repeated ([`view`] retries a few times) — the daemon's commits take milliseconds.
//!
//! On-disk format (bbolt v1.3/1.4, format version 2, little endian as on every platform
//! containerd runs on): page = header {id u64, flags u16, count u16, overflow u32} and
//! `count` 16-byte elements after it; a branch element is {pos u32, ksize u32, pgid u64}, a
//! leaf element {flags u32, pos u32, ksize u32, vsize u32}, `pos` counted from the element
//! itself. Pages 0 and 1 are the two meta pages {magic, version, pageSize, flags, root bucket
//! {root pgid, sequence}, freelist, pgid (high water), txid, checksum (FNV-1a 64 of the
//! preceding 56 bytes)}. A leaf element with flag 1 is a sub-bucket whose value is a bucket
//! header {root pgid, sequence}; root 0 means the bucket's one leaf page follows inline.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const HEADER: usize = 16;
const ELEM: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_LEAF: u32 = 0x01;
const META_LEN: usize = 64;

/// Pages one [`view`] may read (a lookup reads a handful; a bucket walk a few per bucket).
const MAX_PAGES: usize = 1 << 16;
/// Page visits of one [`view`] (a corrupt tree may point back at its own pages).
const MAX_VISITS: usize = 1 << 18;
/// Largest page run (a page plus its overflow pages) read at once.
const MAX_RUN: u64 = 32 << 20;
/// Tree depth: bbolt trees of any real database are a few levels deep.
const MAX_DEPTH: usize = 32;
/// Attempts of a [`view`] whose database was committed to while it read.
const ATTEMPTS: usize = 5;

/// What [`Tx::for_each`] calls with each key and its value or sub-bucket.
pub type Visitor<'f> = dyn FnMut(&[u8], Entry) -> Result<(), Error> + 'f;

/// Why a database could not be read.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// The bytes are not a valid bbolt database (what and where).
    Format(String),
    /// The database kept changing under every attempt to read it.
    Busy,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Format(s) => write!(f, "not a valid bbolt database: {s}"),
            Error::Busy => write!(
                f,
                "the database changed during each of {ATTEMPTS} reads (a busy writer)"
            ),
        }
    }
}

impl std::error::Error for Error {}

fn bad<T>(s: impl Into<String>) -> Result<T, Error> {
    Err(Error::Format(s.into()))
}

fn u16_at(d: &[u8], off: usize) -> Result<u16, Error> {
    match d.get(off..off.wrapping_add(2)) {
        Some(b) => Ok(u16::from_le_bytes([b[0], b[1]])),
        None => bad(format!("u16 at {off} past the end ({} bytes)", d.len())),
    }
}

fn u32_at(d: &[u8], off: usize) -> Result<u32, Error> {
    match d.get(off..off.wrapping_add(4)) {
        Some(b) => Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        None => bad(format!("u32 at {off} past the end ({} bytes)", d.len())),
    }
}

fn u64_at(d: &[u8], off: usize) -> Result<u64, Error> {
    match d.get(off..off.wrapping_add(8)) {
        Some(b) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(u64::from_le_bytes(a))
        }
        None => bad(format!("u64 at {off} past the end ({} bytes)", d.len())),
    }
}

fn fnv1a64(d: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in d {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A meta page's fields that matter to a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub root: u64,
    /// First page id past the end of the database's pages.
    pub high_water: u64,
    pub txid: u64,
}

/// Parse and validate the meta at the start of `m` (the bytes after a page header).
fn parse_meta(m: &[u8]) -> Result<Meta, Error> {
    if m.len() < META_LEN {
        return bad("meta page truncated");
    }
    if u32_at(m, 0)? != MAGIC {
        return bad("no bbolt magic");
    }
    let version = u32_at(m, 4)?;
    if version != VERSION {
        return bad(format!("format version {version}, expected {VERSION}"));
    }
    if u64_at(m, 56)? != fnv1a64(&m[..56]) {
        return bad("meta checksum mismatch");
    }
    let page_size = u32_at(m, 8)?;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return bad(format!("page size {page_size}"));
    }
    Ok(Meta {
        page_size,
        root: u64_at(m, 16)?,
        high_water: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

/// Read at most `len` bytes at `off` (fewer at the end of the file).
fn read_at(f: &File, off: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The newest valid meta page of the file: meta 0 is at offset 0; meta 1 at one page size,
/// which meta 0 names (or, if meta 0 is torn, each possible size is tried).
pub fn newest_meta(f: &File) -> Result<Meta, Error> {
    let first = read_at(f, 0, 4096)?;
    let m0 = first
        .get(HEADER..)
        .ok_or(())
        .map_err(|_| Error::Format("file shorter than a page header".into()))
        .and_then(|m| {
            if u16_at(&first, 8)? & META == 0 {
                return bad("page 0 is not a meta page");
            }
            parse_meta(m)
        });
    let sizes: Vec<u64> = match &m0 {
        Ok(m) => vec![u64::from(m.page_size)],
        Err(_) => (9..=16).map(|s| 1u64 << s).collect(),
    };
    let mut m1 = Err(Error::Format("no meta page 1".into()));
    for ps in sizes {
        let p = read_at(f, ps, HEADER + META_LEN)?;
        if p.len() < HEADER + META_LEN || u64_at(&p, 0)? != 1 || u16_at(&p, 8)? & META == 0 {
            continue;
        }
        let m = parse_meta(&p[HEADER..]);
        if let Ok(m) = &m {
            if u64::from(m.page_size) != ps {
                continue;
            }
        }
        m1 = m;
        if m1.is_ok() {
            break;
        }
    }
    match (m0, m1) {
        (Ok(a), Ok(b)) => {
            if a.page_size != b.page_size {
                return bad("the two meta pages disagree on the page size");
            }
            Ok(if b.txid > a.txid { b } else { a })
        }
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(e), Err(_)) => Err(e),
    }
}

/// Where a bucket's tree starts.
#[derive(Clone, Debug)]
pub struct Bucket(Node);

/// A page: a run read from the file, or an inline bucket's leaf inside a parent's page.
#[derive(Clone, Debug)]
struct Node {
    data: Rc<[u8]>,
    /// Offset of the page header in `data`.
    off: usize,
    /// End of this page's bytes in `data`.
    end: usize,
}

/// A value in a bucket.
#[derive(Clone, Debug)]
pub enum Entry {
    Value(Vec<u8>),
    Bucket(Bucket),
}

/// One consistent read of a database (see the module docs).
pub struct Tx {
    file: File,
    meta: Meta,
    file_len: u64,
    pages: std::cell::RefCell<HashMap<u64, Rc<[u8]>>>,
    /// Pages visited (cache hits too): bounds the work on a tree whose pages loop.
    visits: std::cell::Cell<usize>,
}

impl Tx {
    fn open(path: &Path) -> Result<Tx, Error> {
        // O_RDONLY, no flock, no mmap: the owner's exclusive lock is none of our business.
        let file = File::open(path).map_err(Error::Io)?;
        let file_len = file.metadata().map_err(Error::Io)?.len();
        let meta = newest_meta(&file)?;
        Ok(Tx {
            file,
            meta,
            file_len,
            pages: Default::default(),
            visits: Default::default(),
        })
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The root bucket (holding the top-level buckets).
    pub fn root(&self) -> Result<Bucket, Error> {
        Ok(Bucket(self.page(self.meta.root)?))
    }

    fn page(&self, id: u64) -> Result<Node, Error> {
        if id < 2 || id >= self.meta.high_water {
            return bad(format!(
                "page id {id} outside 2..{} of this database",
                self.meta.high_water
            ));
        }
        let visits = self.visits.get() + 1;
        if visits > MAX_VISITS {
            return bad(format!(
                "more than {MAX_VISITS} page visits in one read (a loop?)"
            ));
        }
        self.visits.set(visits);
        if let Some(d) = self.pages.borrow().get(&id) {
            return Ok(Node {
                data: d.clone(),
                off: 0,
                end: d.len(),
            });
        }
        if self.pages.borrow().len() >= MAX_PAGES {
            return bad(format!("more than {MAX_PAGES} pages in one read"));
        }
        let ps = u64::from(self.meta.page_size);
        let off = id
            .checked_mul(ps)
            .filter(|o| o + ps <= self.file_len)
            .ok_or_else(|| Error::Format(format!("page {id} past the end of the file")))?;
        let head = read_at(&self.file, off, HEADER)?;
        if head.len() < HEADER {
            return bad(format!("page {id} truncated"));
        }
        if u64_at(&head, 0)? != id {
            return bad(format!("page {id} says it is page {}", u64_at(&head, 0)?));
        }
        let overflow = u64::from(u32_at(&head, 12)?);
        let run = (overflow + 1) * ps;
        if run > MAX_RUN || off + run > self.file_len || id + overflow >= self.meta.high_water {
            return bad(format!(
                "page {id} with {overflow} overflow pages runs past the end"
            ));
        }
        let data: Rc<[u8]> = read_at(&self.file, off, run as usize)?.into();
        if data.len() as u64 != run {
            return bad(format!("page {id} truncated"));
        }
        self.pages.borrow_mut().insert(id, data.clone());
        Ok(Node {
            end: data.len(),
            data,
            off: 0,
        })
    }

    /// `(flags, count)` of a node, with its element array checked to fit.
    fn header(n: &Node) -> Result<(u16, usize), Error> {
        let d = &n.data[..n.end];
        let flags = u16_at(d, n.off + 8)?;
        let count = usize::from(u16_at(d, n.off + 10)?);
        if n.off + HEADER + count * ELEM > n.end {
            return bad(format!("{count} elements do not fit their page"));
        }
        Ok((flags, count))
    }

    /// Key range of element `i` of a branch node, and its child page id.
    fn branch_elem(n: &Node, i: usize) -> Result<(&[u8], u64), Error> {
        let d = &n.data[..n.end];
        let e = n.off + HEADER + i * ELEM;
        let pos = u32_at(d, e)? as usize;
        let ksize = u32_at(d, e + 4)? as usize;
        let child = u64_at(d, e + 8)?;
        let k = e
            .checked_add(pos)
            .and_then(|s| Some(s..s.checked_add(ksize)?))
            .and_then(|r| d.get(r))
            .ok_or_else(|| Error::Format("branch key outside its page".into()))?;
        Ok((k, child))
    }

    /// `(flags, key, value)` of element `i` of a leaf node; the value's offset in `data`.
    fn leaf_elem(n: &Node, i: usize) -> Result<(u32, &[u8], usize, usize), Error> {
        let d = &n.data[..n.end];
        let e = n.off + HEADER + i * ELEM;
        let flags = u32_at(d, e)?;
        let pos = u32_at(d, e + 4)? as usize;
        let ksize = u32_at(d, e + 8)? as usize;
        let vsize = u32_at(d, e + 12)? as usize;
        let ks = e
            .checked_add(pos)
            .ok_or_else(|| Error::Format("leaf key offset overflows".into()))?;
        let vs = ks
            .checked_add(ksize)
            .ok_or_else(|| Error::Format("leaf key size overflows".into()))?;
        let ve = vs
            .checked_add(vsize)
            .filter(|&ve| ve <= d.len())
            .ok_or_else(|| Error::Format("leaf element outside its page".into()))?;
        Ok((flags, &d[ks..vs], vs, ve))
    }

    fn entry(&self, n: &Node, flags: u32, vs: usize, ve: usize) -> Result<Entry, Error> {
        if flags & BUCKET_LEAF == 0 {
            return Ok(Entry::Value(n.data[vs..ve].to_vec()));
        }
        let v = &n.data[vs..ve];
        if v.len() < 16 {
            return bad("bucket header truncated");
        }
        let root = u64_at(v, 0)?;
        if root != 0 {
            return Ok(Entry::Bucket(Bucket(self.page(root)?)));
        }
        // Inline bucket: its leaf page follows the header, inside this value.
        if v.len() < 16 + HEADER {
            return bad("inline bucket truncated");
        }
        Ok(Entry::Bucket(Bucket(Node {
            data: n.data.clone(),
            off: vs + 16,
            end: ve,
        })))
    }

    /// The value or sub-bucket under `key` in bucket `b`.
    pub fn get(&self, b: &Bucket, key: &[u8]) -> Result<Option<Entry>, Error> {
        let mut n = b.0.clone();
        for _ in 0..MAX_DEPTH {
            let (flags, count) = Self::header(&n)?;
            if flags & BRANCH != 0 {
                // The last child whose first key is <= key.
                let mut child = None;
                for i in 0..count {
                    let (k, c) = Self::branch_elem(&n, i)?;
                    if k > key && child.is_some() {
                        break;
                    }
                    child = Some(c);
                }
                match child {
                    Some(c) => n = self.page(c)?,
                    None => return Ok(None),
                }
                continue;
            }
            if flags & LEAF == 0 {
                return bad(format!("page flags {flags:#x} in a bucket tree"));
            }
            for i in 0..count {
                let (f, k, vs, ve) = Self::leaf_elem(&n, i)?;
                if k == key {
                    return self.entry(&n, f, vs, ve).map(Some);
                }
            }
            return Ok(None);
        }
        bad(format!("bucket tree deeper than {MAX_DEPTH}"))
    }

    /// The sub-bucket `key` of `b` (`None` if absent or a plain value).
    pub fn bucket(&self, b: &Bucket, key: &[u8]) -> Result<Option<Bucket>, Error> {
        Ok(match self.get(b, key)? {
            Some(Entry::Bucket(b)) => Some(b),
            _ => None,
        })
    }

    /// Follow a path of bucket names from the root.
    pub fn path(&self, names: &[&[u8]]) -> Result<Option<Bucket>, Error> {
        let mut b = self.root()?;
        for n in names {
            match self.bucket(&b, n)? {
                Some(x) => b = x,
                None => return Ok(None),
            }
        }
        Ok(Some(b))
    }

    /// Every key of bucket `b` with its value or sub-bucket, in tree order.
    pub fn for_each(&self, b: &Bucket, f: &mut Visitor<'_>) -> Result<(), Error> {
        self.walk(&b.0, 0, f)
    }

    fn walk(&self, n: &Node, depth: usize, f: &mut Visitor<'_>) -> Result<(), Error> {
        if depth >= MAX_DEPTH {
            return bad(format!("bucket tree deeper than {MAX_DEPTH}"));
        }
        let (flags, count) = Self::header(n)?;
        if flags & BRANCH != 0 {
            for i in 0..count {
                let (_, c) = Self::branch_elem(n, i)?;
                let child = self.page(c)?;
                self.walk(&child, depth + 1, f)?;
            }
            return Ok(());
        }
        if flags & LEAF == 0 {
            return bad(format!("page flags {flags:#x} in a bucket tree"));
        }
        for i in 0..count {
            let (fl, k, vs, ve) = Self::leaf_elem(n, i)?;
            let k = k.to_vec();
            let e = self.entry(n, fl, vs, ve)?;
            f(&k, e)?;
        }
        Ok(())
    }
}

/// Run `f` on a consistent view of the database at `path` (see the module docs): retried
/// while the daemon commits under it, [`Error::Busy`] if it never holds still. A format error
/// seen while the database changed is retried too (a torn read); one seen on a database that
/// held still is reported.
pub fn view<T>(path: &Path, mut f: impl FnMut(&Tx) -> Result<T, Error>) -> Result<T, Error> {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(5 << attempt));
        }
        // Never both meta pages are being written at once: a failure here is the file's.
        let tx = Tx::open(path)?;
        let r = f(&tx);
        let after = newest_meta(&tx.file).map(|m| m.txid).ok();
        if after == Some(tx.meta.txid) {
            return r;
        }
    }
    Err(Error::Busy)
}

/// Build a bbolt file in memory from a tree of buckets (tests and fuzzing): every bucket a
/// single leaf page (inline when `inline` and small), format version 2, page size 4096.
#[cfg(test)]
pub mod build {
    use super::*;

    pub enum Item {
        Value(Vec<u8>),
        Bucket(Vec<(Vec<u8>, Item)>),
    }

    pub struct Builder {
        pages: Vec<Vec<u8>>,
        inline: bool,
    }

    const PS: usize = 4096;

    fn leaf(items: &[(Vec<u8>, Vec<u8>, u32)], id: u64, overflow: &mut u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&LEAF.to_le_bytes());
        p.extend_from_slice(&(items.len() as u16).to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        let mut data = Vec::new();
        let base = HEADER + items.len() * ELEM;
        for (i, (k, v, fl)) in items.iter().enumerate() {
            let e = HEADER + i * ELEM;
            let pos = (base + data.len() - e) as u32;
            p.extend_from_slice(&fl.to_le_bytes());
            p.extend_from_slice(&pos.to_le_bytes());
            p.extend_from_slice(&(k.len() as u32).to_le_bytes());
            p.extend_from_slice(&(v.len() as u32).to_le_bytes());
            data.extend_from_slice(k);
            data.extend_from_slice(v);
        }
        p.extend_from_slice(&data);
        *overflow = (p.len().div_ceil(PS) as u32).saturating_sub(1);
        p[12..16].copy_from_slice(&overflow.to_le_bytes());
        p
    }

    impl Builder {
        /// Write the bucket's page(s); returns the bucket header+inline page value.
        fn bucket(&mut self, items: &[(Vec<u8>, Item)]) -> Vec<u8> {
            let mut sorted: Vec<&(Vec<u8>, Item)> = items.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let elems: Vec<(Vec<u8>, Vec<u8>, u32)> = sorted
                .iter()
                .map(|(k, it)| match it {
                    Item::Value(v) => (k.clone(), v.clone(), 0),
                    Item::Bucket(b) => (k.clone(), self.bucket(b), BUCKET_LEAF),
                })
                .collect();
            let mut ov = 0;
            let inline = leaf(&elems, 0, &mut ov);
            if self.inline && inline.len() < PS / 4 {
                let mut v = vec![0u8; 16];
                v.extend_from_slice(&inline);
                return v;
            }
            let id = self.next_id();
            let p = leaf(&elems, id, &mut ov);
            self.place(id, p, ov);
            let mut v = id.to_le_bytes().to_vec();
            v.extend_from_slice(&0u64.to_le_bytes());
            v
        }

        fn next_id(&self) -> u64 {
            // Pages 0,1 meta, 2 freelist; then ours, each possibly with overflow.
            3 + self.pages.iter().map(|p| p.len() / PS).sum::<usize>() as u64
        }

        fn place(&mut self, _id: u64, mut p: Vec<u8>, ov: u32) {
            p.resize((ov as usize + 1) * PS, 0);
            self.pages.push(p);
        }
    }

    fn meta_page(id: u64, root: u64, hw: u64, txid: u64) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&META.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        let mut m = Vec::new();
        m.extend_from_slice(&MAGIC.to_le_bytes());
        m.extend_from_slice(&VERSION.to_le_bytes());
        m.extend_from_slice(&(PS as u32).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&root.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&2u64.to_le_bytes());
        m.extend_from_slice(&hw.to_le_bytes());
        m.extend_from_slice(&txid.to_le_bytes());
        let sum = fnv1a64(&m);
        m.extend_from_slice(&sum.to_le_bytes());
        p.extend_from_slice(&m);
        p.resize(PS, 0);
        p
    }

    /// The file's bytes: the root bucket holds `top`.
    pub fn file(top: &[(Vec<u8>, Item)], inline: bool) -> Vec<u8> {
        let mut b = Builder {
            pages: Vec::new(),
            inline: false,
        };
        // The root bucket is never inline; nested ones may be.
        let mut sorted: Vec<&(Vec<u8>, Item)> = top.iter().collect();
        sorted.sort_by(|a, c| a.0.cmp(&c.0));
        b.inline = inline;
        let elems: Vec<(Vec<u8>, Vec<u8>, u32)> = sorted
            .iter()
            .map(|(k, it)| match it {
                Item::Value(v) => (k.clone(), v.clone(), 0),
                Item::Bucket(x) => (k.clone(), b.bucket(x), BUCKET_LEAF),
            })
            .collect();
        let root = b.next_id();
        let mut ov = 0;
        let p = leaf(&elems, root, &mut ov);
        b.place(root, p, ov);
        let hw = b.next_id();
        let mut out = meta_page(0, root, hw, 4);
        out.extend(meta_page(1, root, hw, 3));
        let mut free = vec![0u8; PS];
        free[..8].copy_from_slice(&2u64.to_le_bytes());
        free[8..10].copy_from_slice(&0x10u16.to_le_bytes());
        out.extend(free);
        for p in b.pages {
            out.extend(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::{file, Item};
    use super::*;

    fn v(s: &str) -> Item {
        Item::Value(s.as_bytes().to_vec())
    }

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn sample() -> Vec<(Vec<u8>, Item)> {
        vec![(
            k("v1"),
            Item::Bucket(vec![(
                k("k8s.io"),
                Item::Bucket(vec![
                    (
                        k("containers"),
                        Item::Bucket(vec![(
                            k("abc"),
                            Item::Bucket(vec![
                                (k("labels"), Item::Bucket(vec![(k("app"), v("web"))])),
                                (k("image"), v("localhost/x")),
                            ]),
                        )]),
                    ),
                    (k("big"), v(&"x".repeat(9000))),
                ]),
            )]),
        )]
    }

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nsl-bbolt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn app_label(path: &Path) -> Result<Option<Vec<u8>>, Error> {
        view(path, |tx| {
            let Some(b) = tx.path(&[b"v1", b"k8s.io", b"containers", b"abc", b"labels"])? else {
                return Ok(None);
            };
            Ok(match tx.get(&b, b"app")? {
                Some(Entry::Value(v)) => Some(v),
                _ => None,
            })
        })
    }

    #[test]
    fn built_files_read_back_inline_and_paged() {
        for inline in [false, true] {
            let p = write(&format!("s{inline}.db"), &file(&sample(), inline));
            assert_eq!(app_label(&p).unwrap().as_deref(), Some(&b"web"[..]));
            let big = view(&p, |tx| {
                let b = tx.path(&[b"v1", b"k8s.io"])?.unwrap();
                let mut keys = Vec::new();
                tx.for_each(&b, &mut |key, e| {
                    keys.push((key.to_vec(), matches!(e, Entry::Bucket(_))));
                    Ok(())
                })?;
                assert_eq!(keys, vec![(k("big"), false), (k("containers"), true)]);
                Ok(match tx.get(&b, b"big")? {
                    Some(Entry::Value(v)) => v.len(),
                    _ => 0,
                })
            })
            .unwrap();
            assert_eq!(big, 9000, "overflow pages");
        }
    }

    #[test]
    fn not_a_database() {
        for (name, bytes) in [
            ("empty", Vec::new()),
            ("zeros", vec![0u8; 16384]),
            ("text", b"hello world".repeat(1000)),
        ] {
            let p = write(name, &bytes);
            let e = app_label(&p).unwrap_err();
            assert!(matches!(e, Error::Format(_)), "{name}: {e}");
        }
        let e = app_label(Path::new("/nonexistent/meta.db")).unwrap_err();
        assert!(matches!(e, Error::Io(_)));
    }

    /// Every single-byte corruption and every truncation of a real-shaped file: an error or
    /// an answer, never a panic or a hang.
    #[test]
    fn corrupted_and_truncated_never_panic() {
        let good = file(&sample(), true);
        let p = write("fuzz.db", &good);
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..3000 {
            let mut b = good.clone();
            for _ in 0..(1 + next() % 8) {
                // Half the hits on page headers and element tables, where the offsets are.
                let page = (next() as usize) % (b.len() / 4096);
                let i = if next() % 2 == 0 {
                    page * 4096 + (next() as usize) % 128
                } else {
                    (next() as usize) % b.len()
                };
                b[i] = next() as u8;
            }
            std::fs::write(&p, &b).unwrap();
            let _ = app_label(&p);
        }
        for n in (0..good.len()).step_by(97) {
            std::fs::write(&p, &good[..n]).unwrap();
            let _ = app_label(&p);
        }
    }
}
