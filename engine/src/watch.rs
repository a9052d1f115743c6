//! Waiting for the files a pipeline reads to change (`hone watch`).
//!
//! Editors often save by writing a new file and renaming it over the old one, so the
//! parent directory of every watched file is watched and events are filtered by path.
//! Bursts of events (a save, a `git checkout`) are debounced into one change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

#[derive(Debug, thiserror::Error)]
#[error("cannot watch files: {0}")]
pub struct WatchError(#[from] notify::Error);

/// Block until one of `paths` (files or directories) changes, then wait `debounce` for the
/// burst to settle. `on_ready` is called once the watches are in place. Returns the changed
/// paths, or `None` if `cancel` was set.
pub fn wait_for_change(
    paths: &[PathBuf],
    debounce: Duration,
    cancel: &AtomicBool,
    on_ready: impl FnOnce(),
) -> Result<Option<Vec<PathBuf>>, WatchError> {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(ev.paths);
        }
    })?;
    let mut dirs = BTreeSet::new();
    for p in paths {
        if p.is_dir() {
            watcher.watch(p, RecursiveMode::Recursive)?;
        } else if let Some(parent) = p.parent().filter(|d| d.is_dir())
            && dirs.insert(parent.to_path_buf())
        {
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
    }
    on_ready();
    let relevant = |changed: &Path| paths.iter().any(|p| changed.starts_with(p) || p == changed);
    let mut hits: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let wait = if hits.is_empty() { Duration::from_millis(100) } else { debounce };
        match rx.recv_timeout(wait) {
            Ok(changed) => hits.extend(changed.into_iter().filter(|c| relevant(c))),
            Err(mpsc::RecvTimeoutError::Timeout) if !hits.is_empty() => {
                return Ok(Some(hits.into_iter().collect()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
        }
    }
}
