//! Where flow-log objects come from: local directories or S3, walked with date pruning.

use std::path::{Path, PathBuf};

/// One object of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key (S3) or path (local) of the object, as [`Archive::get`] takes it.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Errors of an [`Archive`].
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A local I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An error of a remote archive (S3), with bucket and key in the message.
    #[error("{0}")]
    Remote(String),
}

/// A tree of flow-log objects (a local directory or an S3 bucket).
pub trait Archive: Send + Sync {
    /// Every object whose key starts with `prefix` (recursively), sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ArchiveError>;
    /// The immediate "sub-directories" of `prefix` (which ends in `/` or is empty), each ending in `/`.
    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, ArchiveError>;
    /// The whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError>;
    /// The object as a stream (large objects are read in blocks); by default [`Archive::get`] whole.
    fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>, ArchiveError> {
        Ok(Box::new(std::io::Cursor::new(self.get(key)?)))
    }
    /// A human-readable location of `key` for messages (`s3://bucket/key`, a path).
    fn location(&self, key: &str) -> String;
    /// The object mapped into memory, when it is a local file that can be mapped; `None` (the
    /// default) when it must be read through [`Archive::open`].
    fn map(&self, _key: &str) -> Option<memmap2::Mmap> {
        None
    }
}

/// The local file system as an [`Archive`]; keys are paths with `/` separators.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalArchive;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.display().to_string(), source }
}

impl LocalArchive {
    fn walk(dir: &Path, out: &mut Vec<ObjectInfo>) -> Result<(), ArchiveError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        entries.sort();
        for p in entries {
            let meta = std::fs::metadata(&p).map_err(io_err(&p))?;
            if meta.is_dir() {
                Self::walk(&p, out)?;
            } else if meta.is_file() {
                out.push(ObjectInfo { key: p.to_string_lossy().into_owned(), size: meta.len() });
            }
        }
        Ok(())
    }
}

impl Archive for LocalArchive {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ArchiveError> {
        let p = Path::new(prefix);
        let meta = std::fs::metadata(p).map_err(io_err(p))?;
        let mut out = Vec::new();
        if meta.is_dir() {
            Self::walk(p, &mut out)?;
        } else {
            out.push(ObjectInfo { key: prefix.to_string(), size: meta.len() });
        }
        Ok(out)
    }

    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let p = Path::new(prefix);
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).map_err(io_err(p))? {
            let e = e.map_err(io_err(p))?;
            if std::fs::metadata(e.path()).map_err(io_err(&e.path()))?.is_dir() {
                let mut s = e.path().to_string_lossy().into_owned();
                s.push('/');
                out.push(s);
            }
        }
        out.sort();
        Ok(out)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        std::fs::read(key).map_err(io_err(Path::new(key)))
    }

    fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>, ArchiveError> {
        Ok(Box::new(std::fs::File::open(key).map_err(io_err(Path::new(key)))?))
    }

    fn location(&self, key: &str) -> String {
        key.to_string()
    }

    /// Regular files only; anything that cannot be mapped (a pipe, a special file, an error) is
    /// left to [`Archive::open`], which reports errors.
    #[allow(unsafe_code)] // reason: mapping a file is unsafe by contract; see SAFETY
    fn map(&self, key: &str) -> Option<memmap2::Mmap> {
        let file = std::fs::File::open(key).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        // SAFETY: the mapping is read-only (a shared mapping with PROT_READ); its bytes are only
        // read as `&[u8]` while the `Mmap` lives. The one hazard is another process changing the file meanwhile: a
        // replay reads archives that are not written while they are read, and
        // `StreamSettings::map_files` (`--no-mmap`) turns mapping off where that is not so.
        unsafe { memmap2::Mmap::map(&file) }.ok()
    }
}

/// A partial date read from the path segments of a flow-log key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PathDate {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
    hour: Option<u32>,
}

impl PathDate {
    /// Reads one segment (without `/`): `2026`, `03`, `year=2026`, `month=03`, `day=05`, `hour=14`,
    /// `dt=2026-03-05`. Plain numbers are taken in order year, month, day, hour once a year was seen.
    /// Returns `None` when the segment is not a date part.
    fn push(mut self, seg: &str) -> Option<PathDate> {
        let num = |s: &str, len: usize| -> Option<u32> {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
        };
        if let Some((k, v)) = seg.split_once('=') {
            match k {
                "year" => self.year = Some(num(v, 4)? as i32),
                "month" => self.month = Some(num(v, 2)?),
                "day" => self.day = Some(num(v, 2)?),
                "hour" => self.hour = Some(num(v, 2)?),
                "dt" | "date" => {
                    let mut it = v.split('-');
                    self.year = Some(num(it.next()?, 4)? as i32);
                    self.month = Some(num(it.next()?, 2)?);
                    self.day = Some(num(it.next()?, 2)?);
                }
                _ => return None,
            }
            return Some(self);
        }
        if self.year.is_none() {
            self.year = Some(num(seg, 4)? as i32);
        } else if self.month.is_none() {
            self.month = Some(num(seg, 2)?);
        } else if self.day.is_none() {
            self.day = Some(num(seg, 2)?);
        } else if self.hour.is_none() {
            self.hour = Some(num(seg, 2)?);
        } else {
            return None;
        }
        Some(self)
    }

    /// The half-open range of unix seconds this partial date covers, or `None` if no year is known.
    fn range(&self) -> Option<(i64, i64)> {
        use chrono::{Datelike, NaiveDate};
        let y = self.year?;
        let (start, end) = match (self.month, self.day) {
            (None, _) => (NaiveDate::from_ymd_opt(y, 1, 1)?, NaiveDate::from_ymd_opt(y + 1, 1, 1)?),
            (Some(m), None) => {
                let s = NaiveDate::from_ymd_opt(y, m, 1)?;
                let e = if m == 12 {
                    NaiveDate::from_ymd_opt(y + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(s.year(), m + 1, 1)?
                };
                (s, e)
            }
            (Some(m), Some(d)) => {
                let s = NaiveDate::from_ymd_opt(y, m, d)?;
                (s, s.succ_opt()?)
            }
        };
        let secs = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp());
        let (s, e) = (secs(start)?, secs(end)?);
        match (self.day, self.hour) {
            (Some(_), Some(h)) => Some((s + i64::from(h) * 3600, s + i64::from(h + 1) * 3600)),
            _ => Some((s, e)),
        }
    }
}

/// How much slack to keep around `--from/--to` when pruning by path date: AWS names and places an
/// object by the end of its delivery window, so records of an hour can sit in the next hour's or the
/// next day's prefix.
const PRUNE_SLACK_SECS: i64 = 2 * 3600;

/// Lists every object under `root`, skipping whole date prefixes (`YYYY/MM/DD/`, `year=`/`month=`/
/// `day=`/`hour=`, `HH/`) that lie entirely outside `[from, to)` (unix seconds; `None` = open).
///
/// Without bounds this is `archive.list(root)`.
pub fn discover(
    archive: &dyn Archive,
    root: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Vec<ObjectInfo>, ArchiveError> {
    if from.is_none() && to.is_none() {
        return archive.list(root);
    }
    let mut out = Vec::new();
    let last_segment = root.rsplit('/').next().unwrap_or_default();
    if last_segment.contains('.') {
        // A single object (a local file, an S3 key) is read whatever its date. (Only names that look
        // like files are checked, so that a large prefix is not listed twice.)
        let found = archive.list(root);
        if let Ok([only]) = found.as_deref() {
            if only.key == root {
                return found;
            }
        }
    }
    let mut root = root.to_string();
    if !root.is_empty() && !root.ends_with('/') {
        root.push('/');
    }
    walk_pruned(archive, &root, PathDate::default(), from, to, &mut out)?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn walk_pruned(
    archive: &dyn Archive,
    prefix: &str,
    date: PathDate,
    from: Option<i64>,
    to: Option<i64>,
    out: &mut Vec<ObjectInfo>,
) -> Result<(), ArchiveError> {
    // Once the date is fully known (to the day or hour), list everything below at once.
    if date.day.is_some() {
        out.extend(archive.list(prefix)?);
        return Ok(());
    }
    // Objects directly at this level.
    out.extend(archive.list(prefix)?.into_iter().filter(|o| !o.key[prefix.len()..].contains('/')));
    for sub in archive.list_prefixes(prefix)? {
        let seg = sub[prefix.len()..].trim_end_matches('/');
        let next = date.push(seg).unwrap_or(date);
        if let Some((s, e)) = next.range() {
            let before = to.is_some_and(|t| s - PRUNE_SLACK_SECS >= t);
            let after = from.is_some_and(|f| e + PRUNE_SLACK_SECS <= f);
            if before || after {
                continue;
            }
        }
        walk_pruned(archive, &sub, next, from, to, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn path_dates() {
        let check = |segs: &[&str], want: Option<(&str, &str)>| {
            let mut d = PathDate::default();
            for s in segs {
                d = d.push(s).unwrap_or(d);
            }
            assert_eq!(d.range(), want.map(|(a, b)| (ts(a), ts(b))), "{segs:?}");
        };
        check(&["AWSLogs", "123", "vpcflowlogs", "us-east-1"], None);
        check(&["2026"], Some(("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")));
        check(&["2026", "12"], Some(("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")));
        check(&["2026", "02", "28"], Some(("2026-02-28T00:00:00Z", "2026-03-01T00:00:00Z")));
        check(
            &["year=2026", "month=03", "day=05", "hour=14"],
            Some(("2026-03-05T14:00:00Z", "2026-03-05T15:00:00Z")),
        );
        check(&["dt=2026-03-05"], Some(("2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z")));
        check(&["2026", "13"], None);
    }

    #[test]
    fn discover_prunes_days_outside_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("AWSLogs/1/vpcflowlogs/us-east-1/2026/03");
        for d in ["01", "02", "03", "04"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
            std::fs::write(base.join(d).join(format!("f{d}.log.gz")), b"x").unwrap();
        }
        let root = format!("{}/", dir.path().display());
        let all = discover(&LocalArchive, &root, None, None).unwrap();
        assert_eq!(all.len(), 4);
        let some = discover(
            &LocalArchive,
            &root,
            Some(ts("2026-03-02T05:00:00Z")),
            Some(ts("2026-03-03T01:00:00Z")),
        )
        .unwrap();
        let names: Vec<_> =
            some.iter().map(|o| o.key.rsplit('/').next().unwrap().to_string()).collect();
        assert_eq!(names, ["f02.log.gz", "f03.log.gz"]);
        // A single file is read whatever its date.
        let one = format!("{}/01/f01.log.gz", base.display());
        let got = discover(&LocalArchive, &one, Some(ts("2027-01-01T00:00:00Z")), None).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, one);
    }
}
