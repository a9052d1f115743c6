//! The file operations under the store and its leases: writing a file atomically, removing
//! and measuring trees whose files the store made read-only, and the error of store I/O.
//!
//! Both [`crate::store`] and [`crate::lease`] use them, so they sit below both.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a file of the store (or a lease, or a job's result) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error at `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt store file `{path}`: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// An I/O error at `path`, as a [`StoreError`].
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Write a file by temp file + rename, so readers see the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut f = tempfile::NamedTempFile::new_in(dir).map_err(io_at(dir))?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.persist(path).map_err(|e| io_at(path)(e.error))?;
    Ok(())
}

/// Make every file of a tree read-only (directories stay writable).
pub(crate) fn make_read_only(p: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(p)?;
    if meta.is_dir() {
        for e in fs::read_dir(p)? {
            make_read_only(&e?.path())?;
        }
    } else if meta.is_file() {
        let mut perm = meta.permissions();
        perm.set_readonly(true);
        fs::set_permissions(p, perm)?;
    }
    Ok(())
}

/// Remove a tree whose files may be read-only (directories never are).
pub fn remove_all(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            // Directories we create are writable, so unlinking read-only files in them works.
            match fs::remove_dir_all(p) {
                Ok(()) => Ok(()),
                Err(_) => {
                    make_writable(p)?;
                    fs::remove_dir_all(p)
                }
            }
        }
        Ok(_) => fs::remove_file(p),
    }
}

fn make_writable(p: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(p)?;
    if !meta.file_type().is_symlink() {
        let mut perm = meta.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        fs::set_permissions(p, perm)?;
    }
    if meta.is_dir() {
        for e in fs::read_dir(p)? {
            make_writable(&e?.path())?;
        }
    }
    Ok(())
}

/// The bytes of the files under `p` (0 where it does not exist).
pub fn dir_size(p: &Path) -> u64 {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            fs::read_dir(p).into_iter().flatten().flatten().map(|e| dir_size(&e.path())).sum()
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
