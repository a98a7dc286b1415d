//! A scrape's page: the per-namespace pieces grouped by family, rendered by streaming.

use std::sync::{Arc, Mutex};

use super::{escape_help, registry, Families, MetricKind};

/// Text buffers of dropped pages, for the next scrape's namespaces: the buffers of a large
/// node's page are megabytes that would otherwise go back to the system after each scrape and
/// be page-faulted in again by the next one.
pub(super) static TEXT_POOL: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Most buffers kept (a node's namespaces, with room to spare).
const POOL_MAX_BUFFERS: usize = 8192;

/// A family on a page: name, help, kind, and (part, run) of each stretch of its samples.
type IndexEntry = (Box<str>, Box<str>, MetricKind, Vec<(u32, u32)>);

/// Every family of one scrape, kept as the per-namespace pieces the workers produced, and
/// rendered by streaming ([`PageReader`]) so the whole text page never exists in memory at once:
/// with 500 namespaces the page is over 10 MB, the pieces are needed anyway, and gzip can
/// compress while reading.
#[derive(Debug, Default)]
pub struct Page {
    parts: Vec<Families>,
    /// Families sorted by name: name, help, kind, and (part, run) of each piece.
    index: Vec<IndexEntry>,
}

impl Page {
    /// Build from per-namespace pieces, in the order their samples should appear.
    pub fn new(mut parts: Vec<Families>) -> Page {
        let descs: Vec<(Box<str>, Box<str>, MetricKind)> = registry()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .descs
            .clone();
        let mut pieces: Vec<Vec<(u32, u32)>> = vec![Vec::new(); descs.len()];
        for (pi, part) in parts.iter_mut().enumerate() {
            // Stable: a family's runs keep their emission order.
            part.runs.sort_by_key(|r| r.0);
            part.runs.shrink_to_fit();
            for (i, &(id, _, _)) in part.runs.iter().enumerate() {
                if let Some(v) = pieces.get_mut(id as usize) {
                    v.push((pi as u32, i as u32));
                }
            }
        }
        let mut index: Vec<IndexEntry> = descs
            .into_iter()
            .zip(pieces)
            .filter(|(_, p)| !p.is_empty())
            .map(|((n, h, k), p)| (n, h, k, p))
            .collect();
        index.sort_by(|a, b| a.0.cmp(&b.0));
        Page { parts, index }
    }

    /// Hand the text buffers to the pool (called when the page is dropped). The pool never
    /// holds much more than this page's text: when scrapes overlap, the older page's buffers
    /// are freed rather than hoarded, and a buffer far larger than what it held (the host's,
    /// say) is freed rather than handed to a small namespace.
    fn recycle(&mut self) {
        let used: usize = self.parts.iter().map(|p| p.text.len()).sum();
        let limit = used + used / 4;
        let mut pool = TEXT_POOL.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: usize = pool.iter().map(|t| t.capacity()).sum();
        for p in &mut self.parts {
            let mut t = std::mem::take(&mut p.text);
            let cap = t.capacity();
            if cap == 0 || cap > 2 * t.len() + 4096 {
                continue;
            }
            if pool.len() >= POOL_MAX_BUFFERS || held + cap > limit {
                break;
            }
            held += cap;
            t.clear();
            pool.push(t);
        }
    }

    /// Names of the families on the page, sorted.
    pub fn family_names(&self) -> impl Iterator<Item = &str> {
        self.index.iter().map(|f| &*f.0)
    }

    /// Name, help and kind of each family on the page, sorted by name.
    pub fn families(&self) -> impl Iterator<Item = (&str, &str, MetricKind)> {
        self.index.iter().map(|f| (&*f.0, &*f.1, f.2))
    }

    /// The sample lines of the named families only (no `# HELP`/`# TYPE`), appended to `out`:
    /// a cheap read of a few families of a large page (the status page's rates).
    pub fn family_text(&self, names: &[&str], out: &mut String) {
        for name in names {
            let Ok(fam) = self.index.binary_search_by(|f| (*f.0).cmp(name)) else {
                continue;
            };
            for piece in 0..self.index[fam].3.len() {
                out.push_str(std::str::from_utf8(self.body(fam, piece)).unwrap_or_default());
            }
        }
    }

    /// Bytes of sample text held.
    pub fn body_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.text.len()).sum()
    }

    /// Bytes the page renders to (what [`PageReader`] yields), so it can be sent with a
    /// `Content-Length` rather than in chunks.
    pub fn rendered_len(&self) -> usize {
        let bodies: usize = self
            .index
            .iter()
            .map(|f| {
                f.3.iter()
                    .map(|&(part, run)| {
                        let (_, start, end) = self.parts[part as usize].runs[run as usize];
                        end.saturating_sub(start) as usize
                    })
                    .sum::<usize>()
            })
            .sum();
        let headers: usize = (0..self.index.len()).map(|f| self.header(f).len()).sum();
        bodies + headers
    }

    fn header(&self, fam: usize) -> Vec<u8> {
        let (name, help, kind, _) = &self.index[fam];
        let mut h = String::with_capacity(name.len() * 2 + help.len() + 24);
        h.push_str("# HELP ");
        h.push_str(name);
        h.push(' ');
        escape_help(help, &mut h);
        h.push_str("\n# TYPE ");
        h.push_str(name);
        h.push(' ');
        h.push_str(kind.as_str());
        h.push('\n');
        h.into_bytes()
    }

    fn body(&self, fam: usize, piece: usize) -> &[u8] {
        let (part, run) = self.index[fam].3[piece];
        let p = &self.parts[part as usize];
        let (_, start, end) = p.runs[run as usize];
        p.text
            .as_bytes()
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// Render the whole page (tests and small pages).
    pub fn render(self: &Arc<Self>, out: &mut String) {
        let mut r = PageReader::new(self.clone());
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut buf).expect("reading from memory");
        out.push_str(&String::from_utf8_lossy(&buf));
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.recycle();
    }
}

/// Streams a [`Page`] as text format 0.0.4.
pub struct PageReader {
    page: Arc<Page>,
    fam: usize,
    /// `None` while the family's header is being written, then the index of the piece.
    piece: Option<usize>,
    header: Vec<u8>,
    off: usize,
}

impl PageReader {
    pub fn new(page: Arc<Page>) -> PageReader {
        let header = if page.index.is_empty() {
            Vec::new()
        } else {
            page.header(0)
        };
        PageReader {
            page,
            fam: 0,
            piece: None,
            header,
            off: 0,
        }
    }
}

impl std::io::Read for PageReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        // Fill as much of `buf` as there is: callers (gzip, the HTTP writer) read in chunks.
        while written < buf.len() && self.fam < self.page.index.len() {
            let src: &[u8] = match self.piece {
                None => &self.header,
                Some(p) => self.page.body(self.fam, p),
            };
            if self.off < src.len() {
                let n = (buf.len() - written).min(src.len() - self.off);
                buf[written..written + n].copy_from_slice(&src[self.off..self.off + n]);
                self.off += n;
                written += n;
                continue;
            }
            self.off = 0;
            let next = self.piece.map_or(0, |p| p + 1);
            if next < self.page.index[self.fam].3.len() {
                self.piece = Some(next);
            } else {
                self.fam += 1;
                self.piece = None;
                if self.fam < self.page.index.len() {
                    self.header = self.page.header(self.fam);
                }
            }
        }
        Ok(written)
    }
}
