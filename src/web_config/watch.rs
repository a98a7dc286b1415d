//! A web config that follows its files: their (mtime, size, inode) compared at most once a
//! second, a broken new version kept out (logged).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::WebConfig;

/// What tells that a file changed: its path and (mtime, size, inode), `None` when it cannot
/// be read. Shared with the Loki sink, which re-reads its TLS files when they change.
pub(crate) type FileStamp = (PathBuf, Option<(SystemTime, u64, u64)>);

/// Each watched file's stamp.
type Stamp = Vec<FileStamp>;

/// A web config that follows its file: checked for changes at most once a second.
pub struct Watched {
    path: Option<PathBuf>,
    state: Mutex<WatchState>,
}

struct WatchState {
    current: Arc<WebConfig>,
    stamp: Stamp,
    checked: Instant,
}

/// The stamps of `paths`, in order.
pub(crate) fn stamp_of<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    paths
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok();
            (
                p.clone(),
                m.map(|m| {
                    (
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        m.ino(),
                    )
                }),
            )
        })
        .collect()
}

impl Watched {
    /// No web config file: plain HTTP, no auth.
    pub fn plain() -> Watched {
        Watched {
            path: None,
            state: Mutex::new(WatchState {
                current: Arc::new(WebConfig::plain()),
                stamp: Vec::new(),
                checked: Instant::now(),
            }),
        }
    }

    /// Load `path` (an error here stops the start).
    pub fn load(path: &Path) -> Result<Watched, String> {
        let cfg = WebConfig::load(path)?;
        let w = Watched {
            path: Some(path.to_path_buf()),
            state: Mutex::new(WatchState {
                current: Arc::new(cfg),
                stamp: Vec::new(),
                checked: Instant::now(),
            }),
        };
        w.state.lock().unwrap_or_else(|e| e.into_inner()).stamp = w.stamps();
        Ok(w)
    }

    fn stamps(&self) -> Stamp {
        let Some(p) = &self.path else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let mut files = vec![p.clone()];
        files.extend(WebConfig::files(
            &text,
            p.parent().unwrap_or(Path::new(".")),
        ));
        stamp_of(&files)
    }

    /// The configuration in force, re-read first when its files changed (at most once a second).
    pub fn current(&self) -> Arc<WebConfig> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            return st.current.clone();
        };
        if st.checked.elapsed() < Duration::from_secs(1) {
            return st.current.clone();
        }
        st.checked = Instant::now();
        let stamp = self.stamps();
        if stamp != st.stamp {
            match WebConfig::load(path) {
                Ok(c) => {
                    log::info!("web config {} reloaded", path.display());
                    st.current = Arc::new(c);
                }
                Err(e) => log::error!("{e}; keeping the web config in force"),
            }
            st.stamp = stamp;
        }
        st.current.clone()
    }
}
