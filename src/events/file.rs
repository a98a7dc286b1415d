//! The `file` sink: JSON lines, rotated by size. `events.json` is the live file,
//! `events.json.1` the newest backup ... `events.json.<maxBackups>` the oldest; older ones are
//! deleted. No file ever exceeds `maxSize` (unless one line alone does: it then gets a file of
//! its own).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{DropReason, Event, EventSink, JsonParts, SinkCounters};

pub const DEFAULT_MAX_SIZE: u64 = 100 * 1024 * 1024;
pub const DEFAULT_MAX_BACKUPS: u32 = 5;
/// Lines are gathered into writes of about this size.
/// The sink writes when its buffer holds this much (one `write()` per 64 KiB of lines).
pub const WRITE_BUF: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    pub path: PathBuf,
    /// Bytes per file, live one included.
    pub max_size: u64,
    /// Rotated files kept besides the live one (0: the live file is truncated on rotation).
    pub max_backups: u32,
}

impl FileConfig {
    pub fn new(path: impl Into<PathBuf>) -> FileConfig {
        FileConfig {
            path: path.into(),
            max_size: DEFAULT_MAX_SIZE,
            max_backups: DEFAULT_MAX_BACKUPS,
        }
    }
}

/// `10485760`, `512K`, `10M`, `10MB`, `1Gi`... (powers of 1024): [`crate::units::parse_size`].
pub use crate::units::parse_size;

pub struct FileSink {
    cfg: FileConfig,
    file: Option<std::fs::File>,
    /// Bytes in the live file.
    size: u64,
    buf: Vec<u8>,
    /// Events in `buf`.
    buffered: u64,
    /// The JSON of the entities and stacks recent events shared.
    parts: JsonParts,
}

fn backup(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

impl FileSink {
    pub fn open(cfg: FileConfig) -> std::io::Result<FileSink> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut s = FileSink {
            cfg,
            file: None,
            size: 0,
            buf: Vec::with_capacity(WRITE_BUF + 4096),
            buffered: 0,
            parts: JsonParts::default(),
        };
        s.reopen()?;
        Ok(s)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.path)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    fn write_out(&mut self, c: &SinkCounters) {
        if self.buf.is_empty() {
            return;
        }
        let r = match &mut self.file {
            Some(f) => f.write_all(&self.buf),
            None => Err(std::io::Error::other("file is not open")),
        };
        match r {
            Ok(()) => {
                c.sent.fetch_add(self.buffered, Ordering::Relaxed);
            }
            Err(e) => {
                log::warn!("event sink file {}: {e}", self.cfg.path.display());
                c.failed.fetch_add(1, Ordering::Relaxed);
                c.drop_events(DropReason::WriteError, self.buffered);
                // Try again on a fresh descriptor next time (the file may have been removed).
                let _ = self.reopen();
            }
        }
        self.size += self.buf.len() as u64;
        self.buf.clear();
        self.buffered = 0;
    }

    /// `path.N-1` → `path.N`, ..., `path` → `path.1`; the oldest beyond `maxBackups` goes.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let p = self.cfg.path.clone();
        let n = self.cfg.max_backups;
        if n == 0 {
            std::fs::remove_file(&p).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(backup(&p, n)).or_else(ignore_missing)?;
            for i in (1..n).rev() {
                std::fs::rename(backup(&p, i), backup(&p, i + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&p, backup(&p, 1)).or_else(ignore_missing)?;
        }
        self.reopen()
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl EventSink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn write(&mut self, ev: &Event, c: &SinkCounters) {
        // The line goes straight into the write buffer; when it would take the live file past
        // maxSize, what was before it is written out first and the file rotated.
        let start = self.buf.len();
        self.parts.write(ev, &mut self.buf);
        self.buf.push(b'\n');
        if self.size + start as u64 > 0 && self.size + self.buf.len() as u64 > self.cfg.max_size {
            let line = self.buf.split_off(start);
            self.write_out(c);
            if let Err(e) = self.rotate() {
                log::warn!("event sink file {}: rotation: {e}", self.cfg.path.display());
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
            self.buf.extend_from_slice(&line);
        }
        self.buffered += 1;
        if self.buf.len() >= WRITE_BUF {
            self.write_out(c);
        }
    }

    fn flush(&mut self, c: &SinkCounters) {
        self.write_out(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventEntity, FieldValue};

    fn ev(i: u64) -> Event {
        Event::new("PACKETLOSS", EventEntity::unknown(1)).with("seq", FieldValue::UInt(i))
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("512K").unwrap(), 512 * 1024);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert_eq!(parse_size("1Gi").unwrap(), 1 << 30);
        assert!(parse_size("0").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("").is_err());
    }

    /// Every file at most maxSize, exactly maxBackups backups, and the newest events kept in
    /// order with nothing missing in between.
    #[test]
    fn rotation_limits_exact() {
        let dir = std::env::temp_dir().join(format!("netsleuth-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("ev.json");
        let one = {
            let mut v = serde_json::to_vec(&ev(100).to_json()).unwrap();
            v.push(b'\n');
            v.len() as u64
        };
        // Room for exactly 4 lines of this size per file.
        let cfg = FileConfig {
            path: path.clone(),
            max_size: one * 4 + one / 2,
            max_backups: 3,
        };
        let mut s = FileSink::open(cfg.clone()).unwrap();
        let c = SinkCounters::new("file");
        for i in 100..150u64 {
            s.write(&ev(i), &c);
            if i % 7 == 0 {
                s.flush(&c);
            }
        }
        s.flush(&c);
        assert_eq!(c.sent(), 50);
        assert_eq!(c.dropped_total(), 0);
        let mut files = vec![path.clone()];
        files.extend((1..=3).map(|i| backup(&path, i)));
        assert!(!backup(&path, 4).exists());
        let mut seqs = Vec::new();
        for f in files.iter().rev() {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.len() as u64 <= cfg.max_size, "{}", f.display());
            for l in text.lines() {
                let j: serde_json::Value = serde_json::from_str(l).unwrap();
                seqs.push(j["fields"]["seq"].as_u64().unwrap());
            }
        }
        // 50 events, 4 per file: the live file has 50 - 12*4 = 2, the backups 4 each.
        assert_eq!(seqs.len(), 14);
        assert_eq!(seqs, (136..150).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_backups_truncates() {
        let dir = std::env::temp_dir().join(format!("netsleuth-rot0-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("ev.json");
        let mut s = FileSink::open(FileConfig {
            path: path.clone(),
            max_size: 300,
            max_backups: 0,
        })
        .unwrap();
        let c = SinkCounters::new("file");
        for i in 0..20 {
            s.write(&ev(i), &c);
        }
        s.flush(&c);
        assert!(std::fs::metadata(&path).unwrap().len() <= 300);
        assert!(!backup(&path, 1).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
