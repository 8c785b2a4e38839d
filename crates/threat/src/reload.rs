//! Where lists come from, and their reload when they change.

use crate::{ThreatError, ThreatList, ThreatLists};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

/// A place a list is read from: a file here, an S3 object in `flowspike-aws`.
pub trait ListSource: Send + Sync {
    /// The list's name (the rows' `list`), unique among the sources of a [`Reloader`].
    fn name(&self) -> &str;
    /// A cheap token that changes whenever the content may have changed (a file's modification
    /// time and length; an object's ETag).
    fn fingerprint(&self) -> Result<String, ThreatError>;
    /// The whole content.
    fn read(&self) -> Result<Vec<u8>, ThreatError>;
}

/// The name of a list kept in the file (or object) named `file_name`: the name without its last
/// extension (`tor-exits.txt` → `tor-exits`, `a.b.txt` → `a.b`); a name without one, or one
/// that only starts with a dot, is itself.
///
/// ```
/// assert_eq!(flowspike_threat::list_name("tor-exits.txt"), "tor-exits");
/// assert_eq!(flowspike_threat::list_name("a.b.txt"), "a.b");
/// assert_eq!(flowspike_threat::list_name("custom"), "custom");
/// assert_eq!(flowspike_threat::list_name(".hidden"), ".hidden");
/// ```
pub fn list_name(file_name: &str) -> &str {
    match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file_name,
    }
}

/// A list in a local file; its fingerprint is the modification time (ns) and the length.
#[derive(Debug, Clone)]
pub struct FileSource {
    name: String,
    path: PathBuf,
}

impl FileSource {
    /// A file named after its file name (`tor-exits.txt` for `/etc/lists/tor-exits.txt`).
    pub fn new(path: impl Into<PathBuf>) -> FileSource {
        let path = path.into();
        let name = path.file_name().map_or_else(
            || path.to_string_lossy().into_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        FileSource { name, path }
    }

    /// A file named after its file name without the extension, [`list_name`] (`tor-exits` for
    /// `/etc/lists/tor-exits.txt`): how `--threat-list` names its lists.
    pub fn named_by_stem(path: impl Into<PathBuf>) -> FileSource {
        let path = path.into();
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = file
            .as_deref()
            .map_or_else(|| path.to_string_lossy().into_owned(), |f| list_name(f).to_owned());
        FileSource { name, path }
    }

    /// A file with a name of the caller's choosing.
    pub fn with_name(name: &str, path: impl Into<PathBuf>) -> FileSource {
        FileSource { name: name.to_owned(), path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> ThreatError {
        ThreatError::Io { path: self.path.clone(), source }
    }
}

impl ListSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint(&self) -> Result<String, ThreatError> {
        let m = std::fs::metadata(&self.path).map_err(|e| self.io(e))?;
        // A file system without modification times still changes the length on most edits.
        let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        Ok(format!("{}:{}", mtime.map_or(0, |d| d.as_nanos()), m.len()))
    }

    fn read(&self) -> Result<Vec<u8>, ThreatError> {
        std::fs::read(&self.path).map_err(|e| self.io(e))
    }
}

/// What the reloader last took from each source.
struct Loaded {
    /// Per source: the fingerprint of the content last tried (parsed or refused), `None`
    /// when it could not be read (tried again at the next call).
    fingerprints: Vec<Option<String>>,
    /// Per source: the list in force (the last content that parsed).
    lists: Vec<ThreatList>,
}

/// The sources and the lists compiled from them, reloaded when a source changes.
///
/// Shared by reference between threads: [`Reloader::current`] is a short lock and an `Arc`
/// clone, so workers take the lists once per batch or object, not per record.
pub struct Reloader {
    sources: Vec<Box<dyn ListSource>>,
    loaded: Mutex<Loaded>,
    current: Mutex<Arc<ThreatLists>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        f.debug_struct("Reloader").field("sources", &names).finish()
    }
}

impl Reloader {
    /// Reads and compiles every source; any error (unreadable, a bad line, more than 64 lists,
    /// two with one name) stops here.
    pub fn load(sources: Vec<Box<dyn ListSource>>) -> Result<Reloader, ThreatError> {
        let mut fingerprints = Vec::with_capacity(sources.len());
        let mut lists = Vec::with_capacity(sources.len());
        for s in &sources {
            // Fingerprint before reading: a change in between is seen at the next reload.
            fingerprints.push(Some(s.fingerprint()?));
            lists.push(ThreatList::parse(s.name(), &s.read()?)?);
        }
        let current = Arc::new(ThreatLists::new(lists.clone())?);
        Ok(Reloader {
            sources,
            loaded: Mutex::new(Loaded { fingerprints, lists }),
            current: Mutex::new(current),
        })
    }

    /// The lists in force.
    pub fn current(&self) -> Arc<ThreatLists> {
        // A panic elsewhere cannot leave the `Arc` half-written: the poisoned value is whole.
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the sources whose fingerprint changed and, when any of them parsed, compiles and
    /// installs new lists. `Ok(true)` when the lists in force changed.
    ///
    /// A source that fails keeps its previous list: the others' changes are still installed
    /// and the first error is returned (for the caller to log). A content that does not parse
    /// is not read again until its fingerprint changes; a source that could not be read is
    /// tried again at the next call.
    pub fn reload_if_changed(&self) -> Result<bool, ThreatError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let mut first_error = None;
        let mut changed = false;
        for (i, s) in self.sources.iter().enumerate() {
            let fp = match s.fingerprint() {
                Ok(fp) => fp,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if loaded.fingerprints.get(i).and_then(Option::as_ref) == Some(&fp) {
                continue;
            }
            let parsed = match s.read() {
                Ok(text) => {
                    // Refused content is remembered: the same bad file is reported once.
                    if let Some(slot) = loaded.fingerprints.get_mut(i) {
                        *slot = Some(fp);
                    }
                    ThreatList::parse(s.name(), &text)
                }
                Err(e) => Err(e),
            };
            match parsed {
                Ok(list) => {
                    if loaded.lists.get(i) != Some(&list) {
                        if let Some(slot) = loaded.lists.get_mut(i) {
                            *slot = list;
                            changed = true;
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if changed {
            // Names and count are those of the first load, which compiled: this cannot fail,
            // but an error would keep the old lists like any other.
            let lists = ThreatLists::new(loaded.lists.clone())?;
            *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(lists);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(changed),
        }
    }

    /// The sources' names, in bit order.
    pub fn names(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    /// Writes `text` and moves the modification time forward, so the change is seen even on a
    /// file system with coarse timestamps.
    fn write(path: &Path, text: &str, tick: u64) {
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + tick)).unwrap();
    }

    #[test]
    fn reload_picks_a_changed_file_and_keeps_the_old_lists_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("tor.txt"), dir.path().join("custom.txt"));
        write(&a, "1.1.1.1\n", 0);
        write(&b, "2.2.2.0/24\n", 0);
        let r = Reloader::load(vec![
            Box::new(FileSource::new(&a)),
            Box::new(FileSource::with_name("mine", &b)),
        ])
        .unwrap();
        let first = r.current();
        assert_eq!(first.names(), ["tor.txt", "mine"]);
        assert_eq!(first.matches(ip("1.1.1.1")), 0b01);
        assert_eq!(first.matches(ip("2.2.2.9")), 0b10);
        assert!(!r.reload_if_changed().unwrap(), "nothing changed");
        assert!(Arc::ptr_eq(&first, &r.current()));

        write(&a, "1.1.1.1\n3.3.3.3\n", 1);
        assert!(r.reload_if_changed().unwrap());
        let second = r.current();
        assert_eq!(second.matches(ip("3.3.3.3")), 0b01);
        assert_eq!(first.matches(ip("3.3.3.3")), 0, "a taken Arc is not changed under its holder");

        // A bad `tor.txt` keeps its previous list while a good change of `mine` is installed.
        write(&a, "1.1.1.1\nnot-an-ip\n", 2);
        write(&b, "4.4.4.4\n", 2);
        let e = r.reload_if_changed().unwrap_err();
        assert!(matches!(&e, ThreatError::Parse { line: 2, .. }), "{e}");
        let third = r.current();
        assert_eq!(third.matches(ip("3.3.3.3")), 0b01, "old tor list kept");
        assert_eq!(third.matches(ip("4.4.4.4")), 0b10, "new custom list installed");
        assert_eq!(third.matches(ip("2.2.2.9")), 0);
        // The same bad content is reported once.
        assert!(!r.reload_if_changed().unwrap());

        // A missing file is an error each time, with the old list kept, until it is back.
        std::fs::remove_file(&a).unwrap();
        assert!(matches!(r.reload_if_changed(), Err(ThreatError::Io { .. })));
        assert!(matches!(r.reload_if_changed(), Err(ThreatError::Io { .. })));
        assert_eq!(r.current().matches(ip("3.3.3.3")), 0b01);
        write(&a, "5.5.5.5\n", 3);
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(r.current().matches(ip("5.5.5.5")), 0b01);
        assert_eq!(r.current().matches(ip("3.3.3.3")), 0);
    }

    #[test]
    fn first_load_errors_stop() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        write(&a, "10.0.0.0/8\n10.0.0.0/40\n", 0);
        let e = Reloader::load(vec![Box::new(FileSource::new(&a))]).unwrap_err();
        assert!(e.to_string().contains("a.txt: line 2"), "{e}");
        let missing = Reloader::load(vec![Box::new(FileSource::new(dir.path().join("none")))]);
        assert!(matches!(missing, Err(ThreatError::Io { .. })));
        write(&a, "1.2.3.4\n", 0);
        let dup = Reloader::load(vec![
            Box::new(FileSource::new(&a)),
            Box::new(FileSource::with_name("a.txt", &a)),
        ]);
        assert!(matches!(dup, Err(ThreatError::DuplicateName { .. })));
    }
}
