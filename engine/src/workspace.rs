//! A [`Workspace`]: the directory a pipeline runs in, its store, its lock, and the stat cache
//! that keeps re-hashing of unchanged dependency files off the no-op path.

use std::collections::HashMap;
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::digest::{self, Digest};
use crate::store::{Store, StoreError, write_atomic};

pub struct Workspace {
    /// Where `.hone/` lives.
    root: PathBuf,
    /// Where relative paths in the pipeline resolve and commands run: the pipeline file's
    /// directory (by default the same as `root`).
    base: PathBuf,
    pub store: Store,
    stat_cache: Mutex<StatCache>,
    /// Every path hashed as an external dependency: what `hone watch` watches.
    watched: Mutex<std::collections::BTreeSet<PathBuf>>,
}

#[derive(Default, Serialize, Deserialize)]
struct StatCache {
    entries: HashMap<PathBuf, StatEntry>,
    #[serde(skip)]
    dirty: bool,
}

#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
struct StatEntry {
    len: u64,
    mtime_ns: i128,
    ino: u64,
    digest: Digest,
}

/// Held while a run uses the workspace; released on drop (or when the process dies).
pub struct WorkspaceLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the workspace lock `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Workspace {
    pub fn open(root: &Path) -> Result<Workspace, StoreError> {
        let root = fs::canonicalize(root).map_err(|source| StoreError::Io { path: root.to_path_buf(), source })?;
        let store = Store::open(&root)?;
        let stat_cache = fs::read(store.root().join("statcache.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Workspace { base: root.clone(), root, store, stat_cache: Mutex::new(stat_cache), watched: Default::default() })
    }

    /// Resolve the pipeline's relative paths against `dir` (its file's directory) while the
    /// store stays where it was opened (`--workspace`).
    pub fn with_base(mut self, dir: &Path) -> Workspace {
        self.base = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        self
    }

    /// The directory holding `.hone/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory relative paths in the pipeline resolve against; commands run here.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Take the workspace lock. If another process holds it, `on_wait` is called once and
    /// this blocks until it is released (or fails at once when `wait` is false).
    pub fn lock(&self, wait: bool, on_wait: impl FnOnce()) -> Result<Option<WorkspaceLock>, LockError> {
        let path = self.store.root().join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Io { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait => {
                on_wait();
                file.lock().map_err(|source| LockError::Io { path: path.clone(), source })?;
            }
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(source)) => return Err(LockError::Io { path, source }),
        }
        // Whatever is in tmp/ now was left by a run that died.
        self.store.clean_tmp();
        Ok(Some(WorkspaceLock { _file: file }))
    }

    /// Digest of a file or directory, re-reading only files whose size, mtime or inode changed.
    pub fn hash_path(&self, path: &Path) -> io::Result<Digest> {
        self.watched.lock().unwrap().insert(path.to_path_buf());
        digest::hash_tree_with(path, &mut |p| self.hash_file_cached(p))
    }

    fn hash_file_cached(&self, p: &Path) -> io::Result<Digest> {
        let m = fs::metadata(p)?;
        let mtime_ns = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        let probe = |d| StatEntry { len: m.len(), mtime_ns, ino: m.ino(), digest: d };
        if let Some(e) = self.stat_cache.lock().unwrap().entries.get(p) {
            if *e == probe(e.digest) {
                return Ok(e.digest);
            }
        }
        let d = digest::hash_file(p)?;
        let mut c = self.stat_cache.lock().unwrap();
        c.entries.insert(p.to_path_buf(), probe(d));
        c.dirty = true;
        Ok(d)
    }

    /// The external dependency paths hashed so far (by `plan` or `run`).
    pub fn dependency_paths(&self) -> Vec<PathBuf> {
        self.watched.lock().unwrap().iter().cloned().collect()
    }

    /// Persist the stat cache if it changed.
    pub fn save_stat_cache(&self) {
        let mut c = self.stat_cache.lock().unwrap();
        if c.dirty {
            c.entries.retain(|p, _| p.exists());
            if let Ok(bytes) = serde_json::to_vec(&*c) {
                let _ = write_atomic(&self.store.root().join("statcache.json"), &bytes);
            }
            c.dirty = false;
        }
    }
}
