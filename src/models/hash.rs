//! AUTOMATIC1111's model hash of a single checkpoint file: the first 10 hex digits of the
//! SHA-256 of the whole file (A1111's "Model hash", Civitai's "AutoV2"). Hashing gigabytes
//! takes seconds, so each result is kept in `<data dir>/model-hashes.json`, keyed by path and
//! valid while the file's size and modification time are unchanged.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// One hash computation at a time per process: the cache file is read, updated and written
/// under it.
static LOCK: Mutex<()> = Mutex::new(());

fn cache_file(data_dir: &Path) -> PathBuf {
    data_dir.join("model-hashes.json")
}

/// `(size, mtime in ns)` of `path`.
fn stamp(path: &Path) -> std::io::Result<(u64, u128)> {
    let m = std::fs::metadata(path)?;
    let mtime = m
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((m.len(), mtime))
}

/// The full SHA-256 of `path` in hex (reads it once, 1 MiB at a time).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_rest(&mut std::fs::File::open(path)?)
}

/// The SHA-256 in hex of what is left to read in `f`, 1 MiB at a time.
fn sha256_rest(f: &mut std::fs::File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The hash cache in `data_dir` (empty when missing or unreadable).
fn read_cache(data_dir: &Path) -> BTreeMap<String, Entry> {
    std::fs::read(cache_file(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The cached short hash of the file at canonical path `key`, if it was hashed as it is now.
fn cached(cache: &BTreeMap<String, Entry>, key: &Path) -> std::io::Result<Option<String>> {
    let (size, mtime_ns) = stamp(key)?;
    Ok(cache
        .get(key.to_string_lossy().as_ref())
        .filter(|e| e.size == size && e.mtime_ns == mtime_ns && e.sha256.len() >= 10)
        .map(|e| e.sha256[..10].to_owned()))
}

/// A1111's short hash of `path` (10 hex digits), from the cache in `data_dir` when the file is
/// unchanged, else computed and cached. A cache that cannot be read or written only costs a
/// recomputation.
pub fn a1111_short_hash_in(path: &Path, data_dir: &Path) -> std::io::Result<String> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let key = std::fs::canonicalize(path)?;
    let mut cache = read_cache(data_dir);
    if let Some(short) = cached(&cache, &key)? {
        return Ok(short);
    }
    let (size, mtime_ns) = stamp(&key)?;
    let sha256 = sha256_file(&key)?;
    let short = sha256[..10].to_owned();
    cache.insert(
        key.to_string_lossy().into_owned(),
        Entry {
            size,
            mtime_ns,
            sha256,
        },
    );
    if let Ok(text) = serde_json::to_vec_pretty(&cache) {
        let _ = std::fs::create_dir_all(data_dir);
        let _ = crate::fsio::write_file(
            &cache_file(data_dir),
            &text,
            crate::fsio::Durability::Atomic,
        );
    }
    Ok(short)
}

/// The short hash of `path` if the cache in the user's data folder already has it for the
/// file as it is now (never reads the file itself).
pub fn cached_short_hash(path: &Path) -> Option<String> {
    let key = std::fs::canonicalize(path).ok()?;
    cached(&read_cache(&crate::paths::data_dir()), &key)
        .ok()
        .flatten()
}

/// AUTOMATIC1111's LoRA hash ("Lora hashes"; kohya's addnet hash): SHA-256 of a
/// `.safetensors` file after its header (so editing the metadata keeps the hash), of the
/// whole file otherwise; 12 hex digits.
pub fn lora_short_hash(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        use std::io::{Seek, SeekFrom};
        let mut n = [0u8; 8];
        f.read_exact(&mut n)?;
        f.seek(SeekFrom::Start(8u64.saturating_add(u64::from_le_bytes(n))))?;
    }
    Ok(sha256_rest(&mut f)?[..12].to_owned())
}

/// A1111's `Lora hashes` value for LoRA files and their hashes: `name: hash` each (the name
/// is the file stem without `:` or `,`), joined by `, `.
pub fn lora_hashes_text<'a>(entries: impl Iterator<Item = (&'a Path, &'a str)>) -> String {
    entries
        .map(|(path, hash)| {
            let name: String = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
                .chars()
                .filter(|c| *c != ':' && *c != ',')
                .collect();
            format!("{name}: {hash}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`a1111_short_hash_in`] with the user's data folder.
pub fn a1111_short_hash(path: &Path) -> std::io::Result<String> {
    a1111_short_hash_in(path, &crate::paths::data_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_is_the_sha256_prefix_and_is_recomputed_when_the_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("m.safetensors");
        std::fs::write(&f, b"abc").unwrap();
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(a1111_short_hash_in(&f, tmp.path()).unwrap(), "ba7816bf8f");
        let cached = std::fs::read_to_string(cache_file(tmp.path())).unwrap();
        assert!(cached.contains("ba7816bf8f01cfea"), "{cached}");
        // Same again from the cache; a changed file (size differs) is hashed again.
        assert_eq!(a1111_short_hash_in(&f, tmp.path()).unwrap(), "ba7816bf8f");
        std::fs::write(&f, b"abcd").unwrap();
        // SHA-256("abcd") = 88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589
        assert_eq!(a1111_short_hash_in(&f, tmp.path()).unwrap(), "88d4266fd4");
    }
}
