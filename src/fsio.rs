//! Writing files so that nobody ever sees half of one: the bytes go to a hidden temporary file
//! in the destination folder (`.NAME.tmp-PID`), which is renamed over the destination when
//! complete. [`Durability::Durable`] also fsyncs the file before the rename and the folder
//! after it, so the new file survives a power cut, not only a crash of this process. Every
//! file Atelier writes in place goes through here; a failure removes the temporary file and
//! leaves any old file at the destination untouched.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How hard a write tries to survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Temporary file + rename: all or nothing if this process dies. Caches, previews.
    Atomic,
    /// Also fsync the file before the rename and its folder after: all or nothing across a
    /// power cut. Pictures, the session, checkpoints, presets.
    Durable,
}

/// A file could not be written; `path` is the file (or the temporary beside it) that failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    fn new(path: &Path, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The disk (or the user's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        // ENOSPC / EDQUOT.
        matches!(self.source.raw_os_error(), Some(28) | Some(122))
            || self.source.kind() == std::io::ErrorKind::StorageFull
    }
}

/// The temporary name a write to `path` uses: hidden, in the same folder (so the rename
/// stays on one file system), unique to this process.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    folder_of(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether a file name is one of [`temp_path`]'s (left behind by a crash).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// fsyncs a folder, so a rename inside it is on disk.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WriteError::new(dir, e))
}

/// Writes `bytes` to `path` (creating its folder), all or nothing.
pub fn write_file(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), WriteError> {
    write_file_with_hook(path, bytes, durability, &|| {})
}

/// [`write_file`], calling `mid_write` when half of the bytes are written (and, when durable,
/// on disk): tests stop a process there.
pub fn write_file_with_hook(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    mid_write: &dyn Fn(),
) -> Result<(), WriteError> {
    write_with(path, durability, |tmp| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        let half = bytes.len() / 2;
        f.write_all(&bytes[..half])?;
        if durability == Durability::Durable {
            f.sync_all()?;
        }
        mid_write();
        f.write_all(&bytes[half..])?;
        if durability == Durability::Durable {
            f.sync_all()?;
        }
        Ok(())
    })
}

/// Lets `write` fill the temporary file (e.g. a library that saves to a path), then moves it
/// into place as [`write_file`] does (fsyncing it first when durable).
pub fn write_with(
    path: &Path,
    durability: Durability,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| WriteError::new(dir, e))?;
    let tmp = temp_path(path);
    let result = (|| {
        write(&tmp).map_err(|e| WriteError::new(&tmp, e))?;
        if durability == Durability::Durable {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| WriteError::new(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| WriteError::new(path, e))?;
        if durability == Durability::Durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.txt");
        for durability in [Durability::Atomic, Durability::Durable] {
            write_file(&path, b"first", durability).unwrap();
            write_file(&path, b"second, longer", durability).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
            assert_eq!(names(&dir.path().join("sub")), vec!["a.txt"]);
        }
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_file(&path, b"old", Durability::Durable).unwrap();
        let err = write_with(&path, Durability::Durable, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("the disk went away"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("the disk went away"));
        assert!(is_temp_name(
            &err.path.file_name().unwrap().to_string_lossy()
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["a.bin"]);
    }
}
