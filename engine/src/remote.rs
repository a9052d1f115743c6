//! A remote cache: the store's records and objects pushed to, and pulled from, an object
//! store addressed by URL, through the `object_store` crate (S3 and S3-compatible servers,
//! GCS, Azure, HTTP/WebDAV, a local or NFS directory).
//!
//! ```text
//! <url>/hone-v1/objects/<artifact digest>.tar   an object directory, as one tar
//! <url>/hone-v1/keys/<stage key>.json           the key's record, written after its object
//! <url>/hone-v1/runs/<submission>/<name>        what a cluster's jobs leave for each other
//!                                               and the submitting host (no shared filesystem)
//! ```
//!
//! An object goes up as a tar streamed from the store: headers built in memory, large files'
//! pages mapped, no temporary copy (`tar_chunks`).
//!
//! **The remote is untrusted.** A record fetched must name the key it was fetched for, and
//! its manifest must hash to that key; an object fetched is unpacked into a staging directory
//! of the local store and its tree digest recomputed before it enters the store
//! ([`crate::store::Staging::commit_fetched`]). Anything else (a missing or corrupt object, a
//! damaged record, a tar entry that would leave its directory) is a miss with a warning: the
//! stage runs. An upload writes the object first and the record last, each as one atomic
//! put (a temporary name renamed in a directory, one PUT or a completed multipart upload on
//! a server), so a pusher killed midway leaves no record that names a missing object. Two
//! clients pushing the same key write the same object and equivalent records: both succeed.
//!
//! **Credentials** come from the environment variables of each ecosystem (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`), passed to `object_store`'s builders, and for S3 from the AWS CLI's
//! profile files when the environment has none ([`aws_profile`]); never from the URL's
//! password (refused), and never into records, logs or messages: the remote is named by its
//! URL without query or user info ([`Remote::label`]).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::digest::{ArtifactDigest, StageKey};
use crate::files::StoreError;
use crate::store::{Record, Store};

const LAYOUT: &str = "hone-v1";
/// Objects above this size go up as a multipart upload, in parts of this size.
const PART: usize = 16 << 20;
/// Parts in flight at once.
const PARALLEL_PARTS: usize = 4;
/// What [`Remote::open`] takes, for its error messages.
const FORMS: &str = "s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, \
                     http(s)://host/path/ (WebDAV), file:///dir, or a directory path";

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote `{url}`: {what}")]
    Url { url: String, what: String },
    #[error("remote {remote}: {op} `{path}`: {message}")]
    Transfer { remote: String, op: &'static str, path: String, message: String },
    /// The server turned the credentials away (HTTP 401 or 403): no retry will help.
    #[error("remote {remote}: {op} `{path}`: the server refused the credentials ({code})")]
    Denied { remote: String, op: &'static str, path: String, code: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RemoteError {
    /// Whether the server refused the credentials (see [`RemoteError::Denied`]).
    pub fn is_denied(&self) -> bool {
        matches!(self, RemoteError::Denied { .. })
    }
}

/// The server's reason when an error is a refusal of the credentials: the S3/Azure/GCS error
/// code (`InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AccessDenied`, …) or the HTTP
/// status. `object_store` types refusals of requests on a path (`PermissionDenied`,
/// `Unauthenticated`); a refused listing comes back as a generic error carrying the status.
fn denial(e: &object_store::Error, message: &str) -> Option<String> {
    let status = |s: &str| message.contains(s);
    let refused = match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => true,
        object_store::Error::Generic { .. } => {
            status("403 Forbidden") || status("401 Unauthorized")
        }
        _ => false,
    };
    if !refused {
        return None;
    }
    let code = message
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string());
    Some(code.unwrap_or_else(|| {
        let unauthenticated =
            matches!(e, object_store::Error::Unauthenticated { .. }) || status("401");
        if unauthenticated { "HTTP 401".to_string() } else { "HTTP 403".to_string() }
    }))
}

/// Bytes moved so far of a transfer, for progress bars.
pub trait Progress: Sync {
    /// A transfer of `total` bytes (when known) of `what` starts.
    fn start(&self, what: &str, total: Option<u64>);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// No progress reports.
pub struct Quiet;
impl Progress for Quiet {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

pub struct Remote {
    /// The URL as given (no password: [`Remote::open`] refuses one), for a job on another
    /// host to open the same remote.
    url: String,
    label: String,
    /// HTTP/WebDAV, where a PUT into a missing collection fails and is sent again after
    /// MKCOLs.
    webdav: bool,
    store: Arc<dyn ObjectStore>,
    root: Path,
    rt: tokio::runtime::Runtime,
    /// The objects the remote holds: listed at the first push, then kept up to date.
    objects: Mutex<Option<BTreeSet<ArtifactDigest>>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.label)
    }
}

/// What a fetch found.
#[derive(Debug)]
pub enum Fetched {
    /// The record, its object verified and now in the local store.
    Hit(Box<Record>),
    /// The remote has no record of the key.
    Absent,
    /// The remote's record or object was unusable (said why); the stage runs.
    Unusable(String),
}

/// The remote's record of a key.
#[derive(Debug)]
pub enum RemoteRecord {
    /// A record that names the key and whose manifest hashes to it (its object unchecked).
    Sound(Box<Record>),
    Absent,
    /// Damaged, or for another key (said why).
    Unusable(String),
}

impl Remote {
    /// The remote at `url`: `s3://bucket/prefix`, `gs://…`, `az://…`, `http(s)://host/path`
    /// (WebDAV), `file:///dir`, or a plain directory path.
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        let bad = |what: String| RemoteError::Url { url: label_of(url), what };
        let parsed = if url.contains("://") {
            url::Url::parse(url).map_err(|e| bad(format!("not a URL ({e}); give {FORMS}")))?
        } else {
            let dir = std::path::absolute(url).map_err(|e| bad(e.to_string()))?;
            url::Url::from_directory_path(&dir).map_err(|()| bad("not a directory".into()))?
        };
        if parsed.password().is_some() {
            return Err(bad("has a password in it: give credentials in the environment \
                            (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, …), never in the URL"
                .into()));
        }
        if parsed.scheme() == "file" {
            let dir = parsed.to_file_path().map_err(|()| bad("not a local path".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| bad(format!("cannot create it: {e}")))?;
        }
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut opts: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if matches!(parsed.scheme(), "s3" | "s3a") {
            opts.extend(aws_profile(&env));
        }
        if parsed.scheme() == "http" {
            opts.push(("allow_http".into(), "true".into()));
        }
        let (store, root) = object_store::parse_url_opts(&parsed, opts)
            .map_err(|e| bad(format!("{}; give {FORMS}", scrub(&e.to_string()))))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start its I/O runtime: {e}")))?;
        Ok(Remote {
            url: if url.contains("://") { url.to_string() } else { parsed.to_string() },
            label: label_of(url),
            webdav: matches!(parsed.scheme(), "http" | "https"),
            store: Arc::from(store),
            root,
            rt,
            objects: Mutex::new(None),
        })
    }

    /// The URL without user info or query: what messages and records may name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The URL it was opened with (a directory path made absolute), which opens it again on
    /// another host with that host's credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes `name` of a cluster submission's exchange area
    /// (`hone-v1/runs/<submission>/<name>`: what its jobs tell each other and the submitting
    /// host when the nodes share no filesystem), in one put.
    pub fn put_run_file(
        &self,
        submission: &str,
        name: &str,
        body: Vec<u8>,
    ) -> Result<(), RemoteError> {
        self.put_whole(&self.dir("runs").join(submission).join(name), PutPayload::from(body))
    }

    /// Reads `name` of a submission's exchange area ([`Self::put_run_file`]); `None` when it
    /// is not there (yet).
    pub fn get_run_file(
        &self,
        submission: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, RemoteError> {
        Ok(self.get_whole(&self.dir("runs").join(submission).join(name))?.map(|b| b.to_vec()))
    }

    /// One small object written in one put.
    fn put_whole(&self, path: &Path, body: PutPayload) -> Result<(), RemoteError> {
        self.rt
            .block_on(self.store.put(path, body))
            .map(|_| ())
            .map_err(|e| self.err("uploading", path, e))
    }

    /// One small object read whole; `None` when the remote has none at `path`.
    fn get_whole(&self, path: &Path) -> Result<Option<bytes::Bytes>, RemoteError> {
        match self.rt.block_on(async { self.store.get(path).await?.bytes().await }) {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("downloading", path, e)),
        }
    }

    /// `<root>/hone-v1/<kind>`.
    fn dir(&self, kind: &str) -> Path {
        self.root.clone().join(LAYOUT).join(kind)
    }

    fn path(&self, kind: &str, name: &str) -> Path {
        self.dir(kind).join(name)
    }

    fn err(&self, op: &'static str, path: &Path, e: object_store::Error) -> RemoteError {
        let message = scrub(&e.to_string());
        if let Some(code) = denial(&e, &message) {
            return RemoteError::Denied {
                remote: self.label.clone(),
                op,
                path: path.to_string(),
                code,
            };
        }
        RemoteError::Transfer { remote: self.label.clone(), op, path: path.to_string(), message }
    }

    /// The names under `kind/` (one listing), parsed.
    fn list<T: std::str::FromStr + Ord>(
        &self,
        kind: &str,
        ext: &str,
    ) -> Result<BTreeSet<T>, RemoteError> {
        let prefix = self.dir(kind);
        self.rt.block_on(async {
            let mut out = BTreeSet::new();
            let mut s = self.store.list(Some(&prefix));
            while let Some(meta) = s.next().await {
                let meta = match meta {
                    Ok(m) => m,
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(self.err("listing", &prefix, e)),
                };
                if let Some(name) = meta.location.filename()
                    && let Some(v) = name.strip_suffix(ext).and_then(|h| h.parse().ok())
                {
                    out.insert(v);
                }
            }
            Ok(out)
        })
    }

    /// Every key the remote has a record of: one listing.
    pub fn keys(&self) -> Result<BTreeSet<StageKey>, RemoteError> {
        self.list("keys", ".json")
    }

    /// Uploads `rec` and its object (unless the remote has it: one listing of its objects,
    /// at the first push), object first; returns the object's bytes uploaded.
    pub fn push(
        &self,
        store: &Store,
        rec: &Record,
        progress: &dyn Progress,
    ) -> Result<u64, RemoteError> {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let objects = match &mut *objects {
            Some(o) => o,
            none => {
                let listed = self.list("objects", ".tar")?;
                if listed.is_empty() && self.webdav {
                    // The collections may not exist yet: make them with a small PUT, so that
                    // the first object's body is not sent twice (once refused, once again).
                    let marker = PutPayload::from_static(b"hone-v1\n");
                    self.put_whole(&self.path("objects", ".hone"), marker)?;
                }
                none.insert(listed)
            }
        };
        let mut object_bytes = 0;
        if !objects.contains(&rec.artifact) {
            object_bytes = self.push_object(store, &rec.artifact, progress)?;
            objects.insert(rec.artifact);
        }
        let path = self.path("keys", &format!("{}.json", rec.key.to_hex()));
        let body = serde_json::to_vec_pretty(rec).expect("a record serialises");
        self.put_whole(&path, PutPayload::from(body))?;
        Ok(object_bytes)
    }

    /// Uploads the object as a tar streamed from the store (headers built in memory, large
    /// files' contents mapped, nothing written to disk): one PUT, or a multipart upload in
    /// parts of [`PART`] bytes, [`PARALLEL_PARTS`] at a time, where the server has one.
    /// Returns its size.
    fn push_object(
        &self,
        store: &Store,
        a: &ArtifactDigest,
        progress: &dyn Progress,
    ) -> Result<u64, RemoteError> {
        let dir = store.object_path(a);
        let chunks = tar_chunks(&dir).map_err(crate::files::io_at(&dir))?;
        let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let path = self.path("objects", &format!("{}.tar", a.to_hex()));
        progress.start(&format!("object {}", a.short()), Some(size));
        let result: Result<(), RemoteError> = self.rt.block_on(async {
            let multipart = if size as usize <= PART {
                None
            } else {
                match self.store.put_multipart(&path).await {
                    Ok(u) => Some(u),
                    // HTTP/WebDAV has no multipart upload: one PUT, as for a small object.
                    Err(object_store::Error::NotImplemented { .. }) => None,
                    Err(e) => return Err(self.err("starting the upload of", &path, e)),
                }
            };
            let Some(mut upload) = multipart else {
                self.store
                    .put(&path, PutPayload::from_iter(chunks))
                    .await
                    .map_err(|e| self.err("uploading", &path, e))?;
                progress.advance(size);
                return Ok(());
            };
            let parts: Vec<_> = parts(&chunks, PART)
                .into_iter()
                .map(|p| {
                    let n = p.content_length() as u64;
                    let put = upload.put_part(p);
                    async move { put.await.map(|()| n) }
                })
                .collect();
            let mut done = futures::stream::iter(parts).buffered(PARALLEL_PARTS);
            while let Some(part) = done.next().await {
                match part {
                    Ok(n) => progress.advance(n),
                    Err(e) => {
                        drop(done);
                        let _ = upload.abort().await;
                        return Err(self.err("uploading", &path, e));
                    }
                }
            }
            if let Err(e) = upload.complete().await {
                let _ = upload.abort().await;
                return Err(self.err("finishing the upload of", &path, e));
            }
            Ok(())
        });
        progress.finish();
        result.map(|()| size)
    }

    /// The remote's record of `key`, checked against the key.
    pub fn record(&self, key: &StageKey) -> Result<RemoteRecord, RemoteError> {
        let path = self.path("keys", &format!("{}.json", key.to_hex()));
        let Some(body) = self.get_whole(&path)? else { return Ok(RemoteRecord::Absent) };
        Ok(match serde_json::from_slice::<Record>(&body) {
            Err(e) => RemoteRecord::Unusable(format!("its record `{path}` is damaged: {e}")),
            Ok(r) if r.key != *key || r.manifest.key() != *key => RemoteRecord::Unusable(format!(
                "its record `{path}` is for another key than the one it is named for"
            )),
            Ok(r) => RemoteRecord::Sound(Box::new(r)),
        })
    }

    /// Fetches the record of `key` and its object into `store`, verified (module doc).
    pub fn fetch(
        &self,
        store: &Store,
        key: &StageKey,
        progress: &dyn Progress,
    ) -> Result<Fetched, RemoteError> {
        match self.record(key)? {
            RemoteRecord::Sound(rec) => self.fetch_record(store, &rec, progress),
            RemoteRecord::Absent => Ok(Fetched::Absent),
            RemoteRecord::Unusable(why) => Ok(Fetched::Unusable(why)),
        }
    }

    /// Fetches the object of a sound record ([`Self::record`]) into `store`, verified, and
    /// writes the record after it.
    pub fn fetch_record(
        &self,
        store: &Store,
        rec: &Record,
        progress: &dyn Progress,
    ) -> Result<Fetched, RemoteError> {
        if let Some(r) = store.import(rec)? {
            return Ok(Fetched::Hit(Box::new(r)));
        }
        let opath = self.path("objects", &format!("{}.tar", rec.artifact.to_hex()));
        let staging = store.stage(rec.key)?;
        let tmp = staging.scratch_file()?;
        let got: Result<(), object_store::Error> = self.rt.block_on(async {
            let r = self.store.get(&opath).await?;
            progress.start(&format!("object {}", rec.artifact.short()), Some(r.meta.size));
            let mut s = r.into_stream();
            let mut f = tmp.as_file();
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                f.write_all(&chunk).map_err(|e| object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                })?;
                progress.advance(chunk.len() as u64);
            }
            Ok(())
        });
        progress.finish();
        match got {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Fetched::Unusable(format!("its object `{opath}` is missing")));
            }
            Err(e) => return Err(self.err("downloading", &opath, e)),
        }
        let file = std::fs::File::open(tmp.path()).map_err(crate::files::io_at(tmp.path()))?;
        if let Err(e) = unpack(file, staging.out_dir()) {
            return Ok(Fetched::Unusable(format!("its object `{opath}` is not a valid tar: {e}")));
        }
        match staging.commit_fetched(rec)? {
            Ok(r) => Ok(Fetched::Hit(Box::new(r))),
            Err(found) => Ok(Fetched::Unusable(format!(
                "its object `{opath}` has digest {} instead of {}",
                found.short(),
                rec.artifact.short()
            ))),
        }
    }
}

/// What the AWS CLI's profile gives when the environment has no keys: `aws_access_key_id`,
/// `aws_secret_access_key`, `aws_session_token` from the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and `region` from the config
/// file (`AWS_CONFIG_FILE`, else `~/.aws/config`), of profile `AWS_PROFILE` (else `default`).
/// Settings in the environment win.
fn aws_profile(env: &[(String, String)]) -> Vec<(String, String)> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let home = get("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        get(var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let profile = get("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let mut out = Vec::new();
    if get("AWS_ACCESS_KEY_ID").is_none()
        && let Some(ini) = file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
            .and_then(|p| ini::Ini::load_from_file(p).ok())
        && let Some(sec) = ini.section(Some(profile.as_str()))
    {
        for k in ["aws_access_key_id", "aws_secret_access_key", "aws_session_token"] {
            if let Some(v) = sec.get(k) {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    if get("AWS_REGION").is_none() && get("AWS_DEFAULT_REGION").is_none() {
        let section =
            if profile == "default" { profile.clone() } else { format!("profile {profile}") };
        if let Some(region) = file("AWS_CONFIG_FILE", "config")
            .and_then(|p| ini::Ini::load_from_file(p).ok())
            .and_then(|ini| {
                ini.section(Some(section.as_str())).and_then(|s| s.get("region")).map(String::from)
            })
        {
            out.push(("aws_region".to_string(), region));
        }
    }
    out
}

/// `url` without user info and query (where credentials or signatures could be): how
/// messages and settings listings name a remote.
pub fn label_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// An error message with any `X-Amz-…=` signature or credential parameter removed.
fn scrub(msg: &str) -> String {
    msg.split_whitespace()
        .map(|w| if let Some(i) = w.find('?') { format!("{}?…", &w[..i]) } else { w.to_string() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Files at least this large go into a tar by reference to their mapped pages; smaller ones
/// are copied (a mapping each would spend the process's map count on little files).
const MAP_AT: u64 = 64 << 10;

/// The directory `dir` as a tar (entries in name order; regular files, directories and
/// symlinks only; deterministic headers), as the chunks of its bytes: headers and small files
/// in memory, each larger file's content mapped from the store without a copy.
fn tar_chunks(dir: &FsPath) -> std::io::Result<Vec<bytes::Bytes>> {
    /// The bytes written so far, and mapped files pushed between them.
    #[derive(Default)]
    struct Chunks {
        done: Vec<bytes::Bytes>,
        buf: Vec<u8>,
    }
    impl Chunks {
        fn push(&mut self, b: bytes::Bytes) {
            if !self.buf.is_empty() {
                self.done.push(std::mem::take(&mut self.buf).into());
            }
            self.done.push(b);
        }
    }
    impl Write for Chunks {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn walk(b: &mut tar::Builder<Chunks>, root: &FsPath, rel: &FsPath) -> std::io::Result<()> {
        let mut entries: Vec<_> =
            std::fs::read_dir(root.join(rel))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            let t = e.file_type()?;
            if t.is_file() {
                let file = std::fs::File::open(root.join(&r))?;
                let meta = file.metadata()?;
                let mut h = tar::Header::new_gnu();
                h.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
                if meta.len() < MAP_AT {
                    b.append_data(&mut h, &r, file)?;
                    continue;
                }
                // The header alone (an empty reader: no data, no padding), then the mapped
                // content and its padding to the 512-byte block. SAFETY: objects in the
                // store are written once, then only read or removed whole; a removed file's
                // pages stay mapped.
                b.append_data(&mut h, &r, std::io::empty())?;
                let map = unsafe { memmap2::Mmap::map(&file)? };
                let chunks = b.get_mut();
                chunks.push(bytes::Bytes::from_owner(map));
                let pad = (512 - meta.len() % 512) % 512;
                chunks.buf.resize(pad as usize, 0);
            } else {
                b.append_path_with_name(root.join(&r), &r)?;
                if t.is_dir() {
                    walk(b, root, &r)?;
                }
            }
        }
        Ok(())
    }
    let mut b = tar::Builder::new(Chunks::default());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    walk(&mut b, dir, FsPath::new(""))?;
    let mut c = b.into_inner()?;
    c.done.push(c.buf.into());
    c.done.retain(|b| !b.is_empty());
    Ok(c.done)
}

/// `chunks` cut into parts of `size` bytes (the last one shorter), without copying.
fn parts(chunks: &[bytes::Bytes], size: usize) -> Vec<PutPayload> {
    let mut out = Vec::new();
    let mut part: Vec<bytes::Bytes> = Vec::new();
    let mut have = 0;
    for c in chunks {
        let mut c = c.clone();
        while !c.is_empty() {
            let take = (size - have).min(c.len());
            part.push(c.split_to(take));
            have += take;
            if have == size {
                out.push(PutPayload::from_iter(std::mem::take(&mut part)));
                have = 0;
            }
        }
    }
    if have > 0 {
        out.push(PutPayload::from_iter(part));
    }
    out
}

/// Unpacks a tar into `dest`, refusing entries that are not files, directories or relative
/// symlinks inside it.
fn unpack(file: std::fs::File, dest: &FsPath) -> std::io::Result<()> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut a = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    a.set_preserve_permissions(false);
    for e in a.entries()? {
        let mut e = e?;
        let path: PathBuf = e.path()?.into_owned();
        let inside =
            |p: &FsPath| p.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside(&path) {
            return Err(bad(format!("entry `{}` leaves its directory", path.display())));
        }
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = e.link_name()?.map(|t| t.into_owned()).unwrap_or_default();
                if !inside(&target) {
                    return Err(bad(format!("symlink `{}` points outside", path.display())));
                }
            }
            t => return Err(bad(format!("entry `{}` is a {t:?}", path.display()))),
        }
        if !e.unpack_in(dest)? {
            return Err(bad(format!("entry `{}` leaves its directory", path.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyManifest;

    fn record(store: &Store, content: &str) -> Record {
        let m = KeyManifest {
            kind: "command".into(),
            version: 1,
            params: serde_json::json!({ "cmd": content }),
            seed: 1,
            inputs: Default::default(),
            deps: Default::default(),
        };
        let s = store.stage(m.key()).unwrap();
        std::fs::create_dir(s.out_dir().join("sub")).unwrap();
        std::fs::write(s.out_dir().join("sub/a.txt"), content).unwrap();
        std::fs::write(s.out_dir().join("b.bin"), vec![7u8; 3000]).unwrap();
        s.commit(m, "a", 0.5, Default::default()).unwrap()
    }

    #[test]
    fn push_then_fetch_into_an_empty_store_gives_the_same_record_and_bytes() {
        let (a, b, r) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (sa, sb) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
        let rec = record(&sa, "hello");
        let remote = Remote::open(r.path().to_str().unwrap()).unwrap();
        assert!(remote.keys().unwrap().is_empty());
        let object_bytes = remote.push(&sa, &rec, &Quiet).unwrap();
        assert!(object_bytes > 3000, "{object_bytes}");
        assert_eq!(remote.keys().unwrap().into_iter().collect::<Vec<_>>(), vec![rec.key]);
        let Fetched::Hit(got) = remote.fetch(&sb, &rec.key, &Quiet).unwrap() else { panic!() };
        assert_eq!(got.artifact, rec.artifact);
        assert_eq!(sb.lookup(&rec.key).unwrap().unwrap().artifact, rec.artifact);
        assert_eq!(
            std::fs::read_to_string(sb.object_path(&rec.artifact).join("sub/a.txt")).unwrap(),
            "hello"
        );
        let other = StageKey(crate::digest::Digest([9; 32]));
        assert!(matches!(remote.fetch(&sb, &other, &Quiet).unwrap(), Fetched::Absent));
    }

    #[test]
    fn a_corrupt_or_missing_object_and_a_forged_record_are_misses() {
        let (a, r) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = Store::open(a.path()).unwrap();
        let rec = record(&sa, "x");
        let remote = Remote::open(r.path().to_str().unwrap()).unwrap();
        remote.push(&sa, &rec, &Quiet).unwrap();
        let obj =
            r.path().join(LAYOUT).join("objects").join(format!("{}.tar", rec.artifact.to_hex()));
        let good = std::fs::read(&obj).unwrap();

        // One flipped byte in a file's content: the digest check refuses it.
        let mut bad = good.clone();
        let at = bad.windows(5).position(|w| w == [7u8; 5]).unwrap();
        bad[at] = 8;
        std::fs::write(&obj, &bad).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let sb = Store::open(fresh.path()).unwrap();
        let Fetched::Unusable(why) = remote.fetch(&sb, &rec.key, &Quiet).unwrap() else { panic!() };
        assert!(why.contains("has digest"), "{why}");
        assert!(sb.lookup(&rec.key).unwrap().is_none());
        assert!(sb.objects().is_empty(), "nothing half-written enters the store");

        std::fs::remove_file(&obj).unwrap();
        let Fetched::Unusable(why) = remote.fetch(&sb, &rec.key, &Quiet).unwrap() else { panic!() };
        assert!(why.contains("is missing"), "{why}");

        // A record renamed to another key.
        let keys = r.path().join(LAYOUT).join("keys");
        let other = StageKey(crate::digest::Digest([3; 32]));
        std::fs::copy(
            keys.join(format!("{}.json", rec.key.to_hex())),
            keys.join(format!("{}.json", other.to_hex())),
        )
        .unwrap();
        let Fetched::Unusable(why) = remote.fetch(&sb, &other, &Quiet).unwrap() else { panic!() };
        assert!(why.contains("another key"), "{why}");
    }

    /// The tar as the `tar` crate writes it, file by file (the reference for [`tar_chunks`]).
    fn tar_of(dir: &FsPath) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.sparse(false);
        b.mode(tar::HeaderMode::Deterministic);
        fn walk(b: &mut tar::Builder<Vec<u8>>, root: &FsPath, rel: &FsPath) {
            let mut entries: Vec<_> =
                std::fs::read_dir(root.join(rel)).unwrap().map(|e| e.unwrap()).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let r = rel.join(e.file_name());
                b.append_path_with_name(root.join(&r), &r).unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(b, root, &r);
                }
            }
        }
        walk(&mut b, dir, FsPath::new(""));
        b.into_inner().unwrap()
    }

    #[test]
    fn the_streamed_tar_is_the_tar_crates_bytes_and_unpacks_to_the_same_tree() {
        let d = tempfile::tempdir().unwrap();
        let long = "a-name-longer-than-the-hundred-bytes-a-plain-tar-header-holds-".repeat(3);
        std::fs::create_dir_all(d.path().join("sub/deeper")).unwrap();
        // Sizes around the mapping threshold and the 512-byte block, an empty file, a long
        // name (GNU long-name entry) before a mapped file, a symlink.
        let sizes = [0, 1, 511, 512, MAP_AT - 1, MAP_AT, MAP_AT + 1, 3 * MAP_AT + 700];
        for (i, n) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..*n).map(|j| (j * 31 + i as u64) as u8).collect();
            std::fs::write(d.path().join(format!("f{i}.bin")), &body).unwrap();
            std::fs::write(d.path().join("sub/deeper").join(format!("{long}{i}")), &body).unwrap();
        }
        std::os::unix::fs::symlink("f7.bin", d.path().join("sub/link")).unwrap();
        let chunks = tar_chunks(d.path()).unwrap();
        assert!(chunks.len() > 4 && chunks.iter().all(|c| !c.is_empty()));
        let streamed: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(streamed, tar_of(d.path()), "the same bytes as the tar crate's");

        let out = tempfile::tempdir().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &streamed).unwrap();
        unpack(std::fs::File::open(f.path()).unwrap(), out.path()).unwrap();
        assert_eq!(
            crate::digest::hash_tree(d.path()).unwrap(),
            crate::digest::hash_tree(out.path()).unwrap()
        );

        // Cut into parts: every part `size` long but the last, together the whole.
        for size in [1000, 512, MAP_AT as usize, streamed.len(), streamed.len() + 1] {
            let ps = parts(&chunks, size);
            let lens: Vec<usize> = ps.iter().map(|p| p.content_length()).collect();
            assert!(lens[..lens.len() - 1].iter().all(|&n| n == size), "{size}: {lens:?}");
            assert!(*lens.last().unwrap() <= size && *lens.last().unwrap() > 0);
            let joined: Vec<u8> =
                ps.iter().flat_map(|p| p.iter().flat_map(|c| c.iter().copied())).collect();
            assert_eq!(joined, streamed, "{size}");
        }
    }

    #[test]
    fn a_tar_entry_leaving_its_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        {
            let mut b = tar::Builder::new(&mut buf);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "evil", "/etc").unwrap();
            b.finish().unwrap();
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &buf).unwrap();
        let err = unpack(std::fs::File::open(f.path()).unwrap(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("points outside"), "{err}");
    }

    #[test]
    fn an_aws_profile_gives_keys_and_region_unless_the_environment_does() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = AKD\naws_secret_access_key = SD\n[team]\naws_access_key_id = AKT\naws_secret_access_key = ST\naws_session_token = TT\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile team]\nregion = us-east-2\n",
        )
        .unwrap();
        let env = |extra: &[(&str, &str)]| {
            let mut e = vec![("HOME".to_string(), home.path().display().to_string())];
            e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            e
        };
        let got = aws_profile(&env(&[]));
        assert!(got.contains(&("aws_access_key_id".into(), "AKD".into())), "{got:?}");
        assert!(got.contains(&("aws_region".into(), "eu-west-1".into())), "{got:?}");
        let got = aws_profile(&env(&[("AWS_PROFILE", "team")]));
        assert!(got.contains(&("aws_session_token".into(), "TT".into())), "{got:?}");
        assert!(got.contains(&("aws_region".into(), "us-east-2".into())), "{got:?}");
        let got = aws_profile(&env(&[("AWS_ACCESS_KEY_ID", "X"), ("AWS_REGION", "r")]));
        assert!(got.is_empty(), "the environment wins: {got:?}");
    }

    #[test]
    fn urls_with_passwords_are_refused_and_labels_carry_no_secrets() {
        let err = Remote::open("http://me:secret@127.0.0.1:1/cache").unwrap_err().to_string();
        assert!(err.contains("password") && !err.contains("secret"), "{err}");
        assert_eq!(label_of("s3://bucket/p?X-Amz-Signature=abc"), "s3://bucket/p");
        // An unknown scheme and a broken URL say what is taken.
        for bad in ["ftp://host/cache", "s3://"] {
            let err = Remote::open(bad).unwrap_err().to_string();
            assert!(
                err.contains(bad.trim_end_matches('/')) && err.contains("give s3://bucket/prefix"),
                "{err}"
            );
        }
    }
}
