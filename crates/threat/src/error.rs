//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong reading, compiling or decoding threat lists and their rows.
#[derive(Debug, thiserror::Error)]
pub enum ThreatError {
    /// A line of a list is neither an IP address nor a CIDR network.
    #[error("threat list {list}: line {line}: {reason}: {text:?}")]
    Parse {
        /// The list's name.
        list: String,
        /// 1-based line number.
        line: usize,
        /// The line's text (cut at 80 bytes), comments and surrounding blanks removed.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// More lists than a [`crate::ListMask`] has bits.
    #[error("{count} threat lists given, at most {max} are supported")]
    TooManyLists {
        /// Lists given.
        count: usize,
        /// The limit, [`crate::MAX_LISTS`].
        max: usize,
    },
    /// Two lists have the same name (rows are keyed by it).
    #[error("two threat lists are named {name:?}")]
    DuplicateName {
        /// The name given twice.
        name: String,
    },
    /// A list file could not be read or its metadata not taken.
    #[error("threat list {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A [`crate::ListSource`] other than a file failed (S3 and the like).
    #[error("threat list {name}: {message}")]
    Source {
        /// The source's name.
        name: String,
        /// What failed, with whatever locates it (bucket and key).
        message: String,
    },
    /// A column of a match batch is missing, mistyped or holds a value no row can have.
    #[error("threat match rows: column {column}: row {row}: {message}")]
    Column {
        /// The column.
        column: &'static str,
        /// The row in the batch (0 when the whole column is wrong).
        row: usize,
        /// What is wrong.
        message: String,
    },
}
