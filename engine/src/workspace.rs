//! A [`Workspace`]: the directory a pipeline runs in, its store, its lock, and the stat cache
//! that keeps re-hashing of unchanged dependency files off the no-op path.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::digest::{self, Digest};
use crate::files::{StoreError, write_atomic};
use crate::lease::{LockFile, Owner, Taken};
use crate::store::Store;

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

/// Held while a run uses the workspace; released on drop. It is a lease renewed while held
/// ([`crate::lease`]), so it works on a workspace that hosts share over NFS: a run whose
/// process died on this host loses it at once, one on another host when its lease expires.
pub struct WorkspaceLock {
    file: LockFile,
}

impl WorkspaceLock {
    /// Whose lock this was taken over from, and why, if it was: for the user to hear.
    pub fn took_over(&self) -> Option<String> {
        let (owner, how) = self.file.took_over.as_ref()?;
        let why = match how {
            crate::lease::Liveness::Expired(s) => format!("its lease expired {s} s ago"),
            _ => "its process is gone".to_string(),
        };
        Some(format!("{} ({why})", owner.describe(crate::lease::now_unix())))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot take the workspace lock `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Workspace {
    pub fn open(root: &Path) -> Result<Workspace, StoreError> {
        let root = fs::canonicalize(root)
            .map_err(|source| StoreError::Io { path: root.to_path_buf(), source })?;
        let store = Store::open(&root)?;
        let stat_cache = fs::read(store.root().join("statcache.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Workspace {
            base: root.clone(),
            root,
            store,
            stat_cache: Mutex::new(stat_cache),
            watched: Default::default(),
        })
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

    /// Where the workspace lock is.
    pub fn lock_path(&self) -> PathBuf {
        self.store.root().join("lock")
    }

    /// Take the workspace lock. If another process holds it, `on_wait` is called once and
    /// this waits until it is released (or fails at once when `wait` is false).
    pub fn lock(
        &self,
        wait: bool,
        on_wait: impl FnOnce(),
    ) -> Result<Option<WorkspaceLock>, LockError> {
        Ok(self.acquire(wait, |_| on_wait())?.ok())
    }

    /// [`Workspace::lock`], saying who holds it: `Err(holder)` when `wait` is false and a live
    /// run holds it. A lock whose holder died, or whose lease expired, is taken over.
    pub fn acquire(
        &self,
        wait: bool,
        on_wait: impl FnOnce(&Owner),
    ) -> Result<Result<WorkspaceLock, Owner>, LockError> {
        let path = self.lock_path();
        let mut on_wait = Some(on_wait);
        let file = loop {
            match LockFile::take(&path)
                .map_err(|source| LockError::Io { path: path.clone(), source })?
            {
                Taken::Yes(file) => break file,
                Taken::Held(holder) if !wait => return Ok(Err(holder)),
                Taken::Held(holder) => {
                    if let Some(f) = on_wait.take() {
                        f(&holder);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        };
        // What is left in tmp/ by runs and jobs that died (here, or elsewhere with an
        // expired lease) goes; the staging of live ones on other hosts stays.
        self.store.clean_tmp();
        Ok(Ok(WorkspaceLock { file }))
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
        if let Some(e) = self.stat_cache.lock().unwrap().entries.get(p)
            && *e == probe(e.digest)
        {
            return Ok(e.digest);
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
