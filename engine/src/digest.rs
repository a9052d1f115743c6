//! blake3 digests, with distinct types for what they name.
//!
//! A [`StageKey`] names a computation (what a stage consumed); an [`ArtifactDigest`] names
//! the bytes it produced (a Merkle hash of its output directory). Keeping them apart in the
//! type system means a key can never be looked up as an object or the other way round.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A raw 32-byte blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
    /// The first 12 hex digits, for people.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        blake3::Hash::from_hex(s)
            .map(|h| Digest(*h.as_bytes()))
            .map_err(|e| format!("bad digest `{s}`: {e}"))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! digest_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Digest);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }
        impl $name {
            pub fn short(&self) -> String { self.0.short() }
            pub fn to_hex(&self) -> String { self.0.to_hex() }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> { s.parse().map($name) }
        }
    };
}

digest_newtype!(
    /// What a stage consumed: hash of kind, version, params, seed, input and dependency digests.
    StageKey
);
digest_newtype!(
    /// What a stage produced: Merkle hash of its output directory.
    ArtifactDigest
);

/// Files at least this large are hashed with memory mapping on all cores.
const PARALLEL_HASH_MIN: u64 = 1 << 20;

/// The blake3 digest of a file's contents.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut h = blake3::Hasher::new();
    if fs::metadata(path)?.len() >= PARALLEL_HASH_MIN {
        h.update_mmap_rayon(path)?;
    } else {
        h.update_mmap(path)?;
    }
    Ok(Digest(*h.finalize().as_bytes()))
}

/// A Merkle digest of a file or directory tree: relative names, entry types and contents;
/// never times, owners or permissions, so the same bytes give the same digest anywhere.
pub fn hash_tree(path: &Path) -> io::Result<Digest> {
    hash_tree_with(path, &mut |p| hash_file(p))
}

/// [`hash_tree`] with a custom file hasher (the workspace's stat cache uses this).
pub fn hash_tree_with(
    path: &Path,
    file: &mut dyn FnMut(&Path) -> io::Result<Digest>,
) -> io::Result<Digest> {
    let meta = fs::symlink_metadata(path)?;
    let mut h = blake3::Hasher::new();
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        h.update(b"hone-tree-v1\0dir\0");
        for e in entries {
            let name = e.file_name();
            let name = name.as_encoded_bytes();
            let child = hash_tree_with(&e.path(), file)?;
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name);
            h.update(&child.0);
        }
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(path)?;
        h.update(b"hone-tree-v1\0link\0");
        h.update(target.as_os_str().as_encoded_bytes());
    } else {
        let d = file(path)?;
        h.update(b"hone-tree-v1\0file\0");
        h.update(&d.0);
    }
    Ok(Digest(*h.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_digest_depends_on_names_and_content_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            fs::create_dir(d.join("sub")).unwrap();
            fs::write(d.join("sub/x.txt"), "hello").unwrap();
            fs::write(d.join("y"), "world").unwrap();
        }
        assert_eq!(hash_tree(a.path()).unwrap(), hash_tree(b.path()).unwrap());
        fs::write(b.path().join("y"), "World").unwrap();
        assert_ne!(hash_tree(a.path()).unwrap(), hash_tree(b.path()).unwrap());
        fs::write(b.path().join("y"), "world").unwrap();
        fs::rename(b.path().join("y"), b.path().join("z")).unwrap();
        assert_ne!(hash_tree(a.path()).unwrap(), hash_tree(b.path()).unwrap());
    }

    #[test]
    fn hex_round_trips() {
        let d = Digest::of(b"x");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        let k = StageKey(d);
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", d.to_hex()));
    }
}
