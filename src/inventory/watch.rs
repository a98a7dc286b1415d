//! Rescans on container starts and stops: inotify on the runtimes' state folders and the
//! named-netns folders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Inventory;

/// Watch the runtimes' state folders and the named-netns folders with inotify and rescan on
/// any change (then again a few times over the next 1.5 s: a runtime writes the pid file a
/// moment after creating the folder we see), so a new pod is attributed within about a
/// second of its sandbox starting. The periodic rescan stays as the fallback.
pub fn spawn_watcher(inv: Arc<Inventory>) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let ino = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
        Ok(i) => i,
        Err(e) => {
            log::warn!(
                "inotify unavailable ({e}): new pods are attributed at the periodic rescan only"
            );
            return;
        }
    };
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ONLYDIR;
    fn add_all(inv: &Inventory, ino: &Inotify, flags: AddWatchFlags) {
        for d in inv.watch_dirs() {
            let _ = ino.add_watch(&d, flags);
        }
    }
    add_all(&inv, &ino, flags);
    let r = std::thread::Builder::new()
        .name("inventory-watch".into())
        .spawn(move || {
            // Follow-up rescans after a change, in ms from the change.
            const FOLLOW: [u64; 4] = [200, 500, 1000, 1500];
            let mut changed_at: Option<Instant> = None;
            let mut next_follow = 0usize;
            let mut last_rewatch = Instant::now();
            loop {
                let timeout = match changed_at {
                    Some(t) if next_follow < FOLLOW.len() => {
                        let due = t + Duration::from_millis(FOLLOW[next_follow]);
                        due.saturating_duration_since(Instant::now())
                    }
                    _ => Duration::from_secs(5),
                };
                let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [nix::poll::PollFd::new(
                    ino.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ready =
                    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0);
                if ready > 0 {
                    // Drain; the contents do not matter, only that something changed.
                    while let Ok(ev) = ino.read_events() {
                        if ev.is_empty() {
                            break;
                        }
                    }
                    // Let the runtime finish its burst of writes.
                    std::thread::sleep(Duration::from_millis(30));
                    while ino.read_events().is_ok_and(|e| !e.is_empty()) {}
                    inv.refresh();
                    add_all(&inv, &ino, flags);
                    changed_at = Some(Instant::now());
                    next_follow = 0;
                    continue;
                }
                if let Some(t) = changed_at {
                    if next_follow < FOLLOW.len()
                        && t.elapsed() >= Duration::from_millis(FOLLOW[next_follow])
                    {
                        inv.refresh();
                        next_follow += 1;
                        continue;
                    }
                }
                // Roots that appear later (first pod in a new containerd namespace).
                if last_rewatch.elapsed() >= Duration::from_secs(5) {
                    add_all(&inv, &ino, flags);
                    last_rewatch = Instant::now();
                }
            }
        });
    if let Err(e) = r {
        log::warn!("cannot start the inventory watcher: {e}");
    }
}
