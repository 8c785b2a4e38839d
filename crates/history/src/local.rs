//! [`LocalStore`]: a [`Store`] on a local directory.

use crate::{Store, StoreError};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A [`Store`] whose keys are `/`-separated paths under a root directory.
///
/// `put` writes a temporary file (`.<name>.<pid>.<n>.tmp`) in the target directory, fsyncs it,
/// renames it over the key and fsyncs the directory, so a reader sees the old object or the new one,
/// never a partial one. Temporary files appear in `list` while a put is in flight (they never end in
/// `.parquet`).
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    seq: AtomicU64,
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

impl LocalStore {
    /// A store rooted at `dir` (created on the first put).
    pub fn new(dir: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: dir.into(), seq: AtomicU64::new(0) }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`; rejects keys that could escape the root (empty, absolute, `.`/`..`
    /// components, backslashes, empty components).
    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let bad = key.is_empty()
            || key.contains('\\')
            || key.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(StoreError::Io {
                path: key.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid key"),
            });
        }
        Ok(self.root.join(key))
    }

    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                // Removed since the directory was read (a writer replacing an hour's file).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&entry.path(), e)),
            };
            if ft.is_dir() {
                self.walk(&entry.path(), &key, out)?;
            } else {
                out.push(key);
            }
        }
        Ok(())
    }
}

impl Store for LocalStore {
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Relaxed: the counter only makes names unique within this process; no ordering needed.
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp, e));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path, e));
        }
        // Make the rename durable; opening a directory to fsync it is not possible everywhere.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(key)?;
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound { key: key.to_owned() },
            _ => io_err(&path, e),
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Walk only the deepest directory named by the prefix.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if dir_part.is_empty() { self.root.clone() } else { self.path_of(dir_part)? };
        let mut out = Vec::new();
        self.walk(&start, dir_part, &mut out)?;
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        s.put("a/b/c.parquet", b"one".to_vec()).unwrap();
        s.put("a/b/c.parquet", b"two".to_vec()).unwrap();
        s.put("a/d.txt", b"x".to_vec()).unwrap();
        s.put("z", b"y".to_vec()).unwrap();
        assert_eq!(s.get("a/b/c.parquet").unwrap(), b"two");
        assert_eq!(s.list("").unwrap(), ["a/b/c.parquet", "a/d.txt", "z"]);
        assert_eq!(s.list("a/").unwrap(), ["a/b/c.parquet", "a/d.txt"]);
        assert_eq!(s.list("a/b").unwrap(), ["a/b/c.parquet"]);
        assert_eq!(s.list("a/b/c").unwrap(), ["a/b/c.parquet"]);
        assert_eq!(s.list("nope/").unwrap(), Vec::<String>::new());
        s.delete("a/b/c.parquet").unwrap();
        s.delete("a/b/c.parquet").unwrap(); // missing: not an error
        assert!(matches!(s.get("a/b/c.parquet"), Err(StoreError::NotFound { .. })));
        assert_eq!(s.list("a/").unwrap(), ["a/d.txt"]);
        // No temporary file is left behind.
        assert!(s.list("").unwrap().iter().all(|k| !k.ends_with(".tmp")));
    }

    #[test]
    fn rejects_keys_that_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        for key in ["", "../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", "./a"] {
            assert!(s.put(key, vec![]).is_err(), "{key:?}");
            assert!(s.get(key).is_err(), "{key:?}");
        }
    }
}
