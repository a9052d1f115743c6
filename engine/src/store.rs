//! The content-addressed store under `<workspace>/.hone/`.
//!
//! ```text
//! objects/<artifact digest>/   immutable output directories (files read-only)
//! keys/<stage key>.json        key → artifact record, written last, atomically
//! state/<pipeline>/<stage>.json the key each stage last ran or hit with (for `plan` reasons)
//! runs/<pipeline>.json         how each stage ended the last run that selected it (for reports)
//! checkpoints/<stage key>/     resumable state of an unfinished stage
//! tmp/                         staging, each with its owner (`owner.json`, a renewed lease)
//! logs/<stage>/<time>.log      one log per stage run
//! quarantine/                  objects `cache verify` found corrupted
//! lock                         the workspace lock (its owner, a renewed lease)
//! ```
//!
//! A stage writes into a [`Staging`] directory; only [`Staging::commit`] can create an entry:
//! it hashes the directory, renames it into `objects/` (never copies), and only then writes
//! the key record. A crash at any instant leaves the old state or the new one.
//!
//! Hosts may share a store (a Slurm cluster's shared filesystem): nothing here relies on
//! `flock`. Jobs of one key finishing at once each rename a whole directory into `objects/`
//! (the first wins; the others find it there) and replace the record atomically. A staging
//! directory records its owner and renews its lease ([`crate::lease`]); [`Store::clean_tmp`]
//! removes only those whose process died here or whose lease expired elsewhere.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::{self, ArtifactDigest, Digest, StageKey};
use crate::files::{StoreError, dir_size, io_at, make_read_only, remove_all, write_atomic};
use crate::lease::{Heartbeat, Liveness, Owner};

/// Everything a stage key is the hash of. Stored with the record, so `hone plan` can say
/// what changed since the last run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyManifest {
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    pub seed: u64,
    /// Input port → the artifact digests wired to it.
    pub inputs: BTreeMap<String, Vec<ArtifactDigest>>,
    /// External dependency label (a workspace file, a plugin) → its digest.
    pub deps: BTreeMap<String, Digest>,
}

impl KeyManifest {
    pub fn key(&self) -> StageKey {
        // serde_json maps are sorted (no preserve_order), so this encoding is canonical.
        let bytes = serde_json::to_vec(self).expect("manifest serialises");
        let mut h = blake3::Hasher::new();
        h.update(b"hone-stage-key-v1\0");
        h.update(&bytes);
        StageKey(Digest(*h.finalize().as_bytes()))
    }
}

/// A finished computation: key → artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub key: StageKey,
    pub artifact: ArtifactDigest,
    pub manifest: KeyManifest,
    /// The stage id it first ran as (records are shared by any stage with the same key).
    pub stage: String,
    pub seconds: f64,
    pub created_unix: u64,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// What a pipeline's stage last resolved to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageState {
    pub key: StageKey,
    pub artifact: ArtifactDigest,
    pub log: Option<PathBuf>,
}

/// How a stage ended in the last run that selected it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ran,
    Cached,
    Failed,
    /// Not run: an input failed, or the run was stopped.
    Skipped,
    /// Not run: it waits for input from a person (its message is the `error`).
    Awaiting,
}

/// A stage's [`Outcome`] in the last run that selected it, with what explains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub outcome: Outcome,
    /// The key it ran, hit or failed with (none when skipped before its key was known).
    pub key: Option<StageKey>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open (creating if needed) the store at `<workspace>/.hone`.
    pub fn open(workspace: &Path) -> Result<Store, StoreError> {
        let root = workspace.join(".hone");
        for d in ["objects", "keys", "state", "checkpoints", "tmp", "logs"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn object_path(&self, a: &ArtifactDigest) -> PathBuf {
        self.root.join("objects").join(a.to_hex())
    }

    fn record_path(&self, k: &StageKey) -> PathBuf {
        self.root.join("keys").join(format!("{}.json", k.to_hex()))
    }

    pub fn checkpoint_dir(&self, k: &StageKey) -> PathBuf {
        self.root.join("checkpoints").join(k.to_hex())
    }

    fn state_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root.join("state").join(sanitize(pipeline)).join(format!("{stage}.json"))
    }

    /// The record for `key`, if it and its object are present.
    pub fn lookup(&self, key: &StageKey) -> Result<Option<Record>, StoreError> {
        let p = self.record_path(key);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&p)(e)),
        };
        let rec: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            // A record is written atomically, so this is damage from outside: treat as a miss.
            Err(_) => return Ok(None),
        };
        Ok(self.object_path(&rec.artifact).is_dir().then_some(rec))
    }

    pub fn read_record(&self, key: &StageKey) -> Option<Record> {
        fs::read(self.record_path(key)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn state(&self, pipeline: &str, stage: &str) -> Option<StageState> {
        fs::read(self.state_path(pipeline, stage))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Remember what a stage resolved to, given what [`Store::state`] said before; writes only
    /// when it changed (no-op runs write nothing, and read each state once).
    pub fn set_state(
        &self,
        pipeline: &str,
        stage: &str,
        state: &StageState,
        before: Option<&StageState>,
    ) -> Result<(), StoreError> {
        if before == Some(state) {
            return Ok(());
        }
        let p = self.state_path(pipeline, stage);
        let dir = p.parent().expect("state has a parent");
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        write_atomic(&p, &serde_json::to_vec_pretty(state).expect("state serialises"))
    }

    fn runs_path(&self, pipeline: &str) -> PathBuf {
        self.root.join("runs").join(format!("{}.json", sanitize(pipeline)))
    }

    /// Each stage's outcome in the last run that selected it (empty before the first run).
    pub fn last_runs(&self, pipeline: &str) -> BTreeMap<String, LastRun> {
        fs::read(self.runs_path(pipeline))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Record the outcomes of a run's selected stages (the others keep theirs); writes only
    /// when something changed, so a repeated no-op run writes nothing.
    pub fn record_runs(
        &self,
        pipeline: &str,
        outcomes: BTreeMap<String, LastRun>,
    ) -> Result<(), StoreError> {
        let before = self.last_runs(pipeline);
        let mut all = before.clone();
        all.extend(outcomes);
        if all == before {
            return Ok(());
        }
        let p = self.runs_path(pipeline);
        let dir = p.parent().expect("runs has a parent");
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        write_atomic(&p, &serde_json::to_vec_pretty(&all).expect("outcomes serialise"))
    }

    /// All pipelines' recorded states: (pipeline, stage, state).
    pub fn all_states(&self) -> Vec<(String, String, StageState)> {
        let mut out = Vec::new();
        let Ok(pipes) = fs::read_dir(self.root.join("state")) else { return out };
        for p in pipes.flatten() {
            let Ok(stages) = fs::read_dir(p.path()) else { continue };
            for s in stages.flatten() {
                let name = s.file_name().to_string_lossy().into_owned();
                let Some(stage) = name.strip_suffix(".json") else { continue };
                if let Some(st) =
                    fs::read(s.path()).ok().and_then(|b| serde_json::from_slice(&b).ok())
                {
                    out.push((p.file_name().to_string_lossy().into_owned(), stage.to_string(), st));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    pub fn records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = fs::read_dir(self.root.join("keys"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by_key(|r: &Record| r.created_unix);
        out
    }

    pub fn objects(&self) -> Vec<ArtifactDigest> {
        let mut out: Vec<ArtifactDigest> = fs::read_dir(self.root.join("objects"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        out.sort();
        out
    }

    /// A fresh staging directory for a stage's outputs, owned by this process (its lease is
    /// renewed until it is committed or dropped).
    pub fn stage(&self, key: StageKey) -> Result<Staging<'_>, StoreError> {
        let tmp = self.root.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", key.short()))
            .tempdir_in(&tmp)
            .map_err(io_at(&tmp))?;
        let owner_path = dir.path().join(STAGING_OWNER);
        let mut owner = Owner::me();
        owner.renew_at(&owner_path)?;
        let out = dir.path().join("out");
        fs::create_dir(&out).map_err(io_at(&out))?;
        let lease = Heartbeat::start(owner.lease_secs, move || match owner.renew_at(&owner_path) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "cannot renew the lease of staging directory `{}`: {e}",
                    owner_path.display()
                );
                false
            }
        });
        Ok(Staging { store: self, key, lease: Some(lease), dir, out })
    }

    /// Remove the staging directories of runs and jobs that died: owned by a process of this
    /// host that is gone, or by one elsewhere whose lease expired (or, without an owner, older
    /// than a lease). Those of live jobs, here or on other hosts, stay. Call while holding the
    /// workspace lock.
    pub fn clean_tmp(&self) -> TmpCleaning {
        let mut report = TmpCleaning::default();
        let now = crate::lease::now_unix();
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else { return report };
        for e in entries.flatten() {
            let path = e.path();
            let dead = match Owner::read(&path.join(STAGING_OWNER)) {
                Ok(Ok(owner)) => owner.liveness(now) != Liveness::Alive,
                // Being created, or left by an older hone: judged by its age.
                _ => e.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
                    t.elapsed().is_ok_and(|age| age.as_secs() > crate::lease::lease_secs())
                }),
            };
            if dead && remove_all(&path).is_ok() {
                report.removed += 1;
            } else {
                report.kept += 1;
            }
        }
        report
    }

    pub fn log_path(&self, stage: &str) -> PathBuf {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.root.join("logs").join(stage).join(format!(
            "{}-{:03}.log",
            now.as_secs(),
            now.subsec_millis()
        ))
    }

    /// Delete a record (used when its object was found corrupt).
    pub fn forget(&self, key: &StageKey) -> Result<(), StoreError> {
        let p = self.record_path(key);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Move a corrupt object aside so the next run recomputes it.
    pub fn quarantine(&self, a: &ArtifactDigest) -> Result<PathBuf, StoreError> {
        let q = self.root.join("quarantine");
        fs::create_dir_all(&q).map_err(io_at(&q))?;
        let dest = q.join(format!("{}-{}", a.to_hex(), std::process::id()));
        let src = self.object_path(a);
        fs::rename(&src, &dest).map_err(io_at(&src))?;
        Ok(dest)
    }

    pub fn remove_object(&self, a: &ArtifactDigest) -> Result<u64, StoreError> {
        let p = self.object_path(a);
        let size = dir_size(&p);
        remove_all(&p).map_err(io_at(&p))?;
        Ok(size)
    }
}

/// What [`Store::gc`] removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub objects: usize,
    pub bytes: u64,
    pub records: usize,
}

/// An object whose content no longer has its digest, found by [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub artifact: ArtifactDigest,
    /// The stages whose records pointed at it (now forgotten).
    pub stages: Vec<String>,
    /// Where it was moved.
    pub quarantined: PathBuf,
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    pub corrupt: Vec<Corrupt>,
}

impl Store {
    /// The artifacts that some pipeline's current stages point to.
    pub fn live(&self) -> HashSet<ArtifactDigest> {
        self.all_states().into_iter().map(|(_, _, s)| s.artifact).collect()
    }

    /// Removes the objects and records that no pipeline's current stages use, and those
    /// records' checkpoints; with `dry_run`, only counts them. Call while holding the
    /// workspace lock.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let live = self.live();
        let mut report = GcReport::default();
        for a in self.objects().into_iter().filter(|a| !live.contains(a)) {
            report.objects += 1;
            report.bytes +=
                if dry_run { dir_size(&self.object_path(&a)) } else { self.remove_object(&a)? };
        }
        for r in self.records().into_iter().filter(|r| !live.contains(&r.artifact)) {
            report.records += 1;
            if !dry_run {
                self.forget(&r.key)?;
                let cp = self.checkpoint_dir(&r.key);
                match remove_all(&cp) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&cp)(e)),
                    _ => {}
                }
            }
        }
        Ok(report)
    }

    /// Re-hashes every object. One whose content no longer has its digest is moved to
    /// `quarantine/` and the records pointing at it are forgotten, so the next run recomputes
    /// it. Call while holding the workspace lock.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let objects = self.objects();
        let mut corrupt = Vec::new();
        for a in &objects {
            let intact = digest::hash_tree(&self.object_path(a)).is_ok_and(|d| d == a.0);
            if intact {
                continue;
            }
            let quarantined = self.quarantine(a)?;
            let mut stages = Vec::new();
            for r in self.records().into_iter().filter(|r| r.artifact == *a) {
                self.forget(&r.key)?;
                stages.push(r.stage);
            }
            corrupt.push(Corrupt { artifact: *a, stages, quarantined });
        }
        Ok(VerifyReport { checked: objects.len(), corrupt })
    }
}

/// The file in a staging directory naming its owner.
pub const STAGING_OWNER: &str = "owner.json";

/// What [`Store::clean_tmp`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TmpCleaning {
    pub removed: usize,
    /// Staging directories of live owners.
    pub kept: usize,
}

/// A stage's output directory before it is committed. Dropping it discards it.
pub struct Staging<'s> {
    store: &'s Store,
    key: StageKey,
    /// Renews the owner's lease; stopped before the directory goes.
    lease: Option<Heartbeat>,
    dir: tempfile::TempDir,
    out: PathBuf,
}

impl Staging<'_> {
    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// Hash the outputs, move them into `objects/` by rename, then write the key record.
    pub fn commit(
        self,
        manifest: KeyManifest,
        stage: &str,
        seconds: f64,
        metrics: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Record, StoreError> {
        let artifact = ArtifactDigest(digest::hash_tree(&self.out).map_err(io_at(&self.out))?);
        let record = Record {
            key: self.key,
            artifact,
            manifest,
            stage: stage.to_string(),
            seconds,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            metrics,
        };
        self.finish(record)
    }

    /// Commits outputs fetched from a remote for `rec`: only if their tree digest is the
    /// record's artifact (else the found digest, and the directory is discarded); the record
    /// is written as it came, after the object.
    pub fn commit_fetched(
        self,
        rec: &Record,
    ) -> Result<Result<Record, ArtifactDigest>, StoreError> {
        let found = ArtifactDigest(digest::hash_tree(&self.out).map_err(io_at(&self.out))?);
        if found != rec.artifact || rec.key != self.key {
            return Ok(Err(found));
        }
        self.finish(rec.clone()).map(Ok)
    }

    /// A temporary file beside the outputs (not among them), removed with the staging
    /// directory: a download to unpack into [`Self::out_dir`].
    pub fn scratch_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        tempfile::NamedTempFile::new_in(self.dir.path()).map_err(io_at(self.dir.path()))
    }

    /// Moves the outputs (whose digest is `record.artifact`) into `objects/` by rename, then
    /// writes the record.
    fn finish(mut self, record: Record) -> Result<Record, StoreError> {
        make_read_only(&self.out).map_err(io_at(&self.out))?;
        let dest = self.store.object_path(&record.artifact);
        if !dest.exists() {
            match fs::rename(&self.out, &dest) {
                Ok(()) => {}
                // Another run committed the same bytes first: same content, keep theirs.
                Err(_) if dest.is_dir() => {}
                Err(e) => return Err(io_at(&dest)(e)),
            }
        }
        self.store.write_record(&record)?;
        drop(self.lease.take());
        let _ = remove_all(self.dir.path());
        Ok(record)
    }
}

impl Store {
    /// Writes `rec` (fetched from a remote) when its object is already here: the record is
    /// the only new thing. None when the object is not here.
    pub fn import(&self, rec: &Record) -> Result<Option<Record>, StoreError> {
        if !self.object_path(&rec.artifact).is_dir() {
            return Ok(None);
        }
        self.write_record(rec)?;
        Ok(Some(rec.clone()))
    }

    /// Writes a record, atomically (after its object is in place).
    fn write_record(&self, rec: &Record) -> Result<(), StoreError> {
        let p = self.record_path(&rec.key);
        write_atomic(&p, &serde_json::to_vec_pretty(rec).expect("record serialises"))
    }
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> KeyManifest {
        KeyManifest {
            kind: "command".into(),
            version: 1,
            params: serde_json::json!({"cmd": "echo"}),
            seed: 1,
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
        }
    }

    #[test]
    fn commit_then_lookup_and_same_bytes_share_an_object() {
        let ws = tempfile::tempdir().unwrap();
        let store = Store::open(ws.path()).unwrap();
        let m = manifest();
        let key = m.key();
        assert!(store.lookup(&key).unwrap().is_none());
        let s = store.stage(key).unwrap();
        fs::write(s.out_dir().join("a.txt"), "hi").unwrap();
        let rec = s.commit(m.clone(), "a", 0.1, Default::default()).unwrap();
        let hit = store.lookup(&key).unwrap().unwrap();
        assert_eq!(hit.artifact, rec.artifact);
        assert_eq!(
            fs::read_to_string(store.object_path(&rec.artifact).join("a.txt")).unwrap(),
            "hi"
        );
        assert!(
            fs::metadata(store.object_path(&rec.artifact).join("a.txt"))
                .unwrap()
                .permissions()
                .readonly()
        );

        let mut m2 = m.clone();
        m2.seed = 2;
        let s = store.stage(m2.key()).unwrap();
        fs::write(s.out_dir().join("a.txt"), "hi").unwrap();
        let rec2 = s.commit(m2, "a", 0.1, Default::default()).unwrap();
        assert_eq!(rec2.artifact, rec.artifact);
        assert_eq!(store.objects().len(), 1);
        assert!(fs::read_dir(store.root().join("tmp")).unwrap().next().is_none());
    }

    /// A store with a record of stage `name` whose output is `content`; its state is
    /// recorded (the stage is current) when `current`.
    fn commit(store: &Store, name: &str, content: &str, current: bool) -> Record {
        let mut m = manifest();
        m.params = serde_json::json!({ "cmd": content });
        let s = store.stage(m.key()).unwrap();
        fs::write(s.out_dir().join("out.txt"), content).unwrap();
        let rec = s.commit(m, name, 0.0, Default::default()).unwrap();
        fs::create_dir_all(store.checkpoint_dir(&rec.key)).unwrap();
        if current {
            let state = StageState { key: rec.key, artifact: rec.artifact, log: None };
            store.set_state("p", name, &state, None).unwrap();
        }
        rec
    }

    #[test]
    fn gc_removes_what_no_current_stage_uses_and_a_dry_run_nothing() {
        let ws = tempfile::tempdir().unwrap();
        let store = Store::open(ws.path()).unwrap();
        let kept = commit(&store, "a", "kept", true);
        let old = commit(&store, "b", "old", false);
        commit(&store, "b", "new", true);
        let dry = store.gc(true).unwrap();
        assert_eq!(dry, GcReport { objects: 1, bytes: 3, records: 1 });
        assert_eq!(store.objects().len(), 3);
        assert_eq!(store.gc(false).unwrap(), dry);
        assert_eq!(store.objects().len(), 2);
        assert!(
            !store.object_path(&old.artifact).exists() && !store.checkpoint_dir(&old.key).exists()
        );
        assert!(store.read_record(&old.key).is_none());
        assert_eq!(store.lookup(&kept.key).unwrap().unwrap().artifact, kept.artifact);
        assert!(store.checkpoint_dir(&kept.key).exists());
        assert_eq!(store.gc(false).unwrap(), GcReport::default());
    }

    #[test]
    fn verify_quarantines_a_changed_object_and_forgets_its_records() {
        let ws = tempfile::tempdir().unwrap();
        let store = Store::open(ws.path()).unwrap();
        let good = commit(&store, "a", "good", true);
        let bad = commit(&store, "b", "bad", true);
        assert_eq!(store.verify().unwrap(), VerifyReport { checked: 2, corrupt: vec![] });
        let file = store.object_path(&bad.artifact).join("out.txt");
        let mut perm = fs::metadata(&file).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        fs::set_permissions(&file, perm).unwrap();
        fs::write(&file, "bad!").unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.checked, 2);
        let [c] = report.corrupt.as_slice() else { panic!("{report:?}") };
        assert_eq!((c.artifact, c.stages.clone()), (bad.artifact, vec!["b".to_string()]));
        assert_eq!(fs::read_to_string(c.quarantined.join("out.txt")).unwrap(), "bad!");
        assert!(store.lookup(&bad.key).unwrap().is_none(), "the next run recomputes it");
        assert!(store.lookup(&good.key).unwrap().is_some());
        assert_eq!(store.verify().unwrap(), VerifyReport { checked: 1, corrupt: vec![] });
    }

    #[test]
    fn a_record_without_its_object_is_a_miss() {
        let ws = tempfile::tempdir().unwrap();
        let store = Store::open(ws.path()).unwrap();
        let m = manifest();
        let s = store.stage(m.key()).unwrap();
        let rec = s.commit(m.clone(), "a", 0.0, Default::default()).unwrap();
        store.remove_object(&rec.artifact).unwrap();
        assert!(store.lookup(&m.key()).unwrap().is_none());
    }

    #[test]
    fn run_outcomes_merge_per_stage_and_an_unchanged_record_is_not_rewritten() {
        let ws = tempfile::tempdir().unwrap();
        let store = Store::open(ws.path()).unwrap();
        assert!(store.last_runs("p").is_empty());
        let key = Some(manifest().key());
        let ran = LastRun { outcome: Outcome::Ran, key, error: None, log: None };
        let failed = LastRun {
            outcome: Outcome::Failed,
            key,
            error: Some("boom".into()),
            log: Some("l.log".into()),
        };
        store
            .record_runs(
                "p",
                [("a".to_string(), ran.clone()), ("b".to_string(), failed.clone())].into(),
            )
            .unwrap();
        let cached = LastRun { outcome: Outcome::Cached, ..ran.clone() };
        store.record_runs("p", [("a".to_string(), cached.clone())].into()).unwrap();
        let runs = store.last_runs("p");
        assert_eq!((runs["a"].clone(), runs["b"].clone()), (cached.clone(), failed));
        let path = store.runs_path("p");
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.record_runs("p", [("a".to_string(), cached)].into()).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().modified().unwrap(),
            mtime,
            "nothing changed: not rewritten"
        );
        assert!(store.last_runs("other").is_empty());
    }

    /// Jobs on several hosts finishing the same key at once: each stages, then all commit
    /// together. With the same bytes they share one object; with different bytes (a stage
    /// that is not deterministic) each object is whole and the record names one of them.
    #[test]
    fn many_commits_of_one_key_at_once_leave_a_whole_object_and_a_readable_record() {
        for same_bytes in [true, false] {
            let ws = tempfile::tempdir().unwrap();
            let store = Store::open(ws.path()).unwrap();
            let m = manifest();
            let n = 8;
            let barrier = std::sync::Barrier::new(n);
            let records: Vec<Record> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|i| {
                        let (store, m, barrier) = (&store, m.clone(), &barrier);
                        s.spawn(move || {
                            let st = store.stage(m.key()).unwrap();
                            fs::create_dir(st.out_dir().join("sub")).unwrap();
                            let body =
                                if same_bytes { "same".to_string() } else { format!("run {i}") };
                            fs::write(st.out_dir().join("sub/f.txt"), body.repeat(10_000)).unwrap();
                            barrier.wait();
                            st.commit(m, &format!("job{i}"), 0.0, Default::default()).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let hit = store.lookup(&m.key()).unwrap().expect("the key is stored");
            assert!(records.iter().any(|r| r.artifact == hit.artifact));
            assert_eq!(store.objects().len(), if same_bytes { 1 } else { n });
            assert_eq!(
                store.verify().unwrap(),
                VerifyReport { checked: store.objects().len(), corrupt: vec![] }
            );
            assert_eq!(store.records().len(), 1);
            assert!(
                fs::read_dir(store.root().join("tmp")).unwrap().next().is_none(),
                "no staging left"
            );
            assert!(
                fs::read_dir(store.root().join("keys")).unwrap().all(|e| e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json"))
            );
        }
    }

    /// `hone run` on one host must not remove the staging of a job running on another.
    #[test]
    fn cleaning_removes_only_staging_of_dead_owners_and_expired_leases() {
        let ws = tempfile::tempdir().unwrap();
        let store = Store::open(ws.path()).unwrap();
        let live_here = store.stage(manifest().key()).unwrap();
        let tmp = store.root().join("tmp");
        let fake = |name: &str, edit: &dyn Fn(&mut Owner)| {
            let dir = tmp.join(name);
            fs::create_dir_all(dir.join("out")).unwrap();
            let mut o = Owner::me();
            edit(&mut o);
            fs::write(dir.join(STAGING_OWNER), serde_json::to_vec(&o).unwrap()).unwrap();
            dir
        };
        let now = crate::lease::now_unix();
        let elsewhere_live = fake("a-live-elsewhere", &|o| {
            o.host = "node-b".into();
            o.job = Some("77".into());
            o.renewed_unix = now - 10;
        });
        let elsewhere_expired = fake("b-expired-elsewhere", &|o| {
            o.host = "node-b".into();
            o.renewed_unix = now - 61 - o.lease_secs;
        });
        let dead_here = fake("c-dead-here", &|o| o.pid = u32::MAX / 2);
        // A live process here keeps its staging even when it has not renewed for long.
        let stalled_here = fake("d-stalled-here", &|o| o.renewed_unix = 0);
        let ownerless_new = tmp.join("e-new");
        fs::create_dir(&ownerless_new).unwrap();
        let ownerless_old = tmp.join("f-old");
        fs::create_dir(&ownerless_old).unwrap();
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::open(&ownerless_old).unwrap().set_modified(long_ago).unwrap();

        assert_eq!(store.clean_tmp(), TmpCleaning { removed: 3, kept: 4 });
        for (dir, stays) in [
            (live_here.dir.path().to_path_buf(), true),
            (elsewhere_live, true),
            (elsewhere_expired, false),
            (dead_here, false),
            (stalled_here, true),
            (ownerless_new, true),
            (ownerless_old, false),
        ] {
            assert_eq!(dir.exists(), stays, "{}", dir.display());
        }
        let owner: Owner =
            serde_json::from_slice(&fs::read(live_here.dir.path().join(STAGING_OWNER)).unwrap())
                .unwrap();
        assert_eq!(
            (owner.pid, owner.host.as_str()),
            (std::process::id(), crate::lease::host_name())
        );
        fs::write(live_here.out_dir().join("x"), "x").unwrap();
        live_here.commit(manifest(), "a", 0.0, Default::default()).unwrap();
    }

    #[test]
    fn key_changes_with_every_component() {
        let base = manifest();
        let mut variants = vec![];
        let mut m = base.clone();
        m.kind = "other".into();
        variants.push(m);
        let mut m = base.clone();
        m.version = 2;
        variants.push(m);
        let mut m = base.clone();
        m.params = serde_json::json!({"cmd": "echo hi"});
        variants.push(m);
        let mut m = base.clone();
        m.inputs.insert("x".into(), vec![ArtifactDigest(Digest::of(b"x"))]);
        variants.push(m);
        let mut m = base.clone();
        m.deps.insert("dep:f".into(), Digest::of(b"f"));
        variants.push(m);
        for v in variants {
            assert_ne!(v.key(), base.key());
        }
    }
}
