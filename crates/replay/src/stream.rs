//! Large objects: read in blocks of whole lines (inflating gzip on the fly) so that one big file
//! is parsed on every core and never held whole in memory.
//!
//! A reader thread cuts the (decompressed) text at line ends into blocks of about
//! [`StreamSettings::block_bytes`];
//! the rayon workers decode blocks in any order with `flowlog::for_each_text_block`, assuming the
//! format the object starts with (its header line, else the configured format). A block that holds a
//! header line of another format (concatenated objects of different formats) makes that assumption
//! wrong for the blocks after it: the object's partial counts are then dropped and the object is read
//! again, sequentially, carrying the format from block to block. So the result is always that of
//! `flowlog::for_each_record` over the whole object; the parallel path is only a speed-up.
//!
//! Plain-text local files are not read at all: they are mapped into memory
//! ([`Archive::map`]) and the blocks are ranges of the mapping, so the text is neither copied by
//! `read(2)` nor held in freshly allocated buffers (on a VM whose fresh pages the hypervisor backs
//! on first touch, both were a quarter of a replay's CPU time). The reader thread asks the kernel
//! to map the pages of each block not yet in the page cache before handing it on
//! (`MADV_POPULATE_READ`), so the disk reads happen ahead of the parsers; cached text is left to
//! the parsers' own page faults, which cost less CPU than mapping it ahead on a third thread.

use std::io::{BufRead, BufReader, Read};
use std::ops::{Deref, Range};
use std::sync::{Arc, Mutex};

use memmap2::{Advice, Mmap, UncheckedAdvice};

use flowlog::{Format, Framing};

use crate::archive::{Archive, ArchiveError};

/// When objects are read in blocks, and how big the blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Objects at least this large (stored size) are read in blocks (default 32 MiB).
    pub min_object_bytes: u64,
    /// Target size of one block of decompressed text (default 8 MiB).
    pub block_bytes: usize,
    /// Map plain-text local files into memory instead of reading them (default true). A file that
    /// another process truncates while it is mapped makes this process fail with `SIGBUS`; turn
    /// this off for files that may change during a replay.
    pub map_files: bool,
}

impl Default for StreamSettings {
    fn default() -> StreamSettings {
        StreamSettings { min_object_bytes: 32 << 20, block_bytes: 8 << 20, map_files: true }
    }
}

/// Block buffers handed back after counting, reused by the readers: a fresh 8 MiB buffer per block
/// costs the kernel zeroing its pages whenever the allocator has returned freed memory to the
/// system (docs/benchmarks-history.md, 2026-11-23 19:38 UTC).
#[derive(Debug)]
pub struct BlockPool {
    free: Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl BlockPool {
    /// A pool that keeps at most `max` idle buffers.
    pub fn new(max: usize) -> BlockPool {
        BlockPool { free: Mutex::new(Vec::new()), max }
    }

    /// An empty buffer with at least `capacity` bytes of room.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match reused {
            Some(mut b) => {
                b.clear();
                b.reserve(capacity);
                b
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Returns a block's buffer for reuse (dropped when the pool is full; a mapped block has none).
    pub fn give(&self, mut data: BlockData) {
        let BlockData::Owned(buf) = &mut data else { return };
        let buf = std::mem::take(buf);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.max {
            free.push(buf);
        }
    }
}

/// One block of whole lines of a streamed object.
#[derive(Debug)]
pub struct TextBlock {
    /// 0-based position of the block in the object.
    pub seq: u64,
    /// Offset of the block's first byte in the decompressed text.
    pub offset: u64,
    /// The lines (ending at a line end, except perhaps the object's last line).
    pub data: BlockData,
}

/// The bytes of a [`TextBlock`]: a buffer of its own, or a range of a mapped file.
#[derive(Debug)]
pub enum BlockData {
    /// Read (and perhaps inflated) into a buffer of the [`BlockPool`].
    Owned(Vec<u8>),
    /// A range of a file mapped into memory, shared by the object's blocks.
    Mapped(Arc<Mmap>, Range<usize>),
}

/// The page size assumed when releasing a block's pages (x86-64 and most of arm64): a larger real
/// page only makes the release cover part of a neighbour's page, which it faults in again.
const PAGE: usize = 4096;

impl Drop for BlockData {
    /// A mapped block releases the page-table entries of its whole pages once counted, so they
    /// are torn down a block at a time on the workers, not all at once (the whole file's) by the
    /// last worker when the mapping is dropped.
    #[allow(unsafe_code)] // reason: MADV_DONTNEED is an "unchecked" advice in memmap2; see SAFETY
    fn drop(&mut self) {
        let BlockData::Mapped(map, range) = self else { return };
        let (start, end) = (range.start.next_multiple_of(PAGE), range.end / PAGE * PAGE);
        if end > start {
            // SAFETY: `map` is a read-only shared mapping of a file: MADV_DONTNEED drops only this
            // process's page-table entries for those pages, and any later read of them (a
            // neighbouring block, when the real page is larger than `PAGE`) faults them in again
            // from the page cache with the same bytes. No reference into this block outlives it.
            let _ = unsafe {
                map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

impl Deref for BlockData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            BlockData::Owned(v) => v,
            BlockData::Mapped(map, range) => &map[range.clone()],
        }
    }
}

/// The outcome of [`read_blocks`].
#[derive(Debug)]
pub enum Streamed {
    /// Every block was emitted.
    Done {
        /// Blocks emitted.
        blocks: u64,
    },
    /// The object is not line text (JSON envelopes, KPL, Parquet, nested gzip: the framing found);
    /// nothing was emitted, so it must be read whole.
    NotText(Framing),
    /// The receiver stopped; the remaining blocks were not read.
    Stopped,
}

/// Errors while reading a streamed object (blocks emitted before it have been counted).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The object could not be opened.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Reading or inflating failed (corrupt or truncated gzip, I/O error).
    #[error("read error after {offset} bytes of text: {source}")]
    Read {
        /// Decompressed bytes read before the error.
        offset: u64,
        /// The cause.
        source: std::io::Error,
    },
}

/// The format an object starts with: its first non-blank line if that is a header, else `fallback`.
pub fn initial_format(first_block: &[u8], fallback: &Format) -> Format {
    let first_line = first_block
        .split(|b| *b == b'\n')
        .find(|l| !l.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')));
    first_line.and_then(flowlog::header_format).unwrap_or_else(|| fallback.clone())
}

/// Reads object `key` of `archive` as text blocks and hands each to `emit` (which returns false to
/// stop). `framing` is the configured framing: only `Auto`, `Lines` and `Gzip` can stream.
/// `max_line` bounds how far past `settings.block_bytes` a block grows while looking for a line
/// end. Block buffers come from `pool` (give them back when done with them). Plain text that the
/// archive can map (`settings.map_files`) is cut into ranges of the mapping instead.
pub fn read_blocks(
    pool: &BlockPool,
    archive: &dyn Archive,
    key: &str,
    framing: Framing,
    settings: &StreamSettings,
    max_line: usize,
    mut emit: impl FnMut(TextBlock) -> bool,
) -> Result<Streamed, StreamError> {
    if !matches!(framing, Framing::Auto | Framing::Lines | Framing::Gzip) {
        return Ok(Streamed::NotText(framing));
    }
    let block_bytes = settings.block_bytes.max(1);
    if settings.map_files && framing != Framing::Gzip {
        if let Some(map) = archive.map(key) {
            match stored_head(framing, &map[..map.len().min(HEAD_BYTES)]) {
                StoredHead::Lines => {
                    return Ok(cut_mapped(Arc::new(map), block_bytes, max_line, &mut emit))
                }
                StoredHead::NotText(inner) => return Ok(Streamed::NotText(inner)),
                StoredHead::Gzip => {} // inflated as a stream, below
            }
        }
    }
    let mut raw = BufReader::with_capacity(HEAD_BYTES, archive.open(key)?);
    let head = raw.fill_buf().map_err(|source| StreamError::Read { offset: 0, source })?;
    match stored_head(framing, head) {
        StoredHead::Lines => {
            return cut_blocks(pool, unbuffered(raw), block_bytes, max_line, &mut emit)
        }
        StoredHead::NotText(inner) => return Ok(Streamed::NotText(inner)),
        StoredHead::Gzip => {}
    }
    let mut text = BufReader::with_capacity(HEAD_BYTES, flowlog::gz_reader(raw));
    let head = text.fill_buf().map_err(|source| StreamError::Read { offset: 0, source })?;
    let inner = Framing::detect(head);
    if inner != Framing::Lines {
        return Ok(Streamed::NotText(inner));
    }
    cut_blocks(pool, unbuffered(text), block_bytes, max_line, &mut emit)
}

/// The rest of `r`'s stream without its buffer in the way: what it has buffered (the head it was
/// asked for), then the inner reader. Blocks are read straight into their buffers: through the
/// `BufReader`, the small first reads of every block (`read_to_end` starts small and doubles)
/// were copied twice, once into its buffer and once out of it.
fn unbuffered<R: Read>(r: BufReader<R>) -> impl Read {
    std::io::Cursor::new(r.buffer().to_vec()).chain(r.into_inner())
}

/// How much of an object's start decides its framing (the first buffer of a read object).
const HEAD_BYTES: usize = 1 << 20;

/// What the start of a stored object (mapped or read) says to do with it.
enum StoredHead {
    /// Inflate it as a stream (the configured framing, or the gzip magic).
    Gzip,
    /// Cut it into blocks of lines as it is.
    Lines,
    /// Not line text (`Auto` framing found JSON, KPL or Parquet): read it whole.
    NotText(Framing),
}

fn stored_head(framing: Framing, head: &[u8]) -> StoredHead {
    let inner = Framing::detect(head);
    if framing == Framing::Gzip || inner == Framing::Gzip {
        StoredHead::Gzip
    } else if framing == Framing::Auto && inner != Framing::Lines {
        StoredHead::NotText(inner)
    } else {
        StoredHead::Lines
    }
}

/// Cuts a mapped file into blocks of whole lines: each ends at the last line end within
/// `block_bytes`, or within `block_bytes + max_line` when a line is longer, or there when none is
/// found (as [`cut_blocks`] does). Before a block is emitted, its pages are mapped ahead
/// (`MADV_POPULATE_READ`) unless sampled pages show it is in the page cache already; the parsers
/// fault in whatever was not mapped.
fn cut_mapped(
    map: Arc<Mmap>,
    block_bytes: usize,
    max_line: usize,
    emit: &mut impl FnMut(TextBlock) -> bool,
) -> Streamed {
    let len = map.len();
    let (mut pos, mut seq) = (0usize, 0u64);
    while pos < len {
        let end = if len - pos <= block_bytes {
            len
        } else {
            let last_end =
                |limit: usize| memchr::memrchr(b'\n', &map[pos..limit]).map(|i| pos + i + 1);
            match last_end(pos + block_bytes) {
                Some(end) => end,
                None => {
                    let hard = pos.saturating_add(block_bytes).saturating_add(max_line).min(len);
                    if hard == len {
                        len
                    } else {
                        last_end(hard).unwrap_or(hard)
                    }
                }
            }
        };
        // Only a hint: the parsers fault in whatever this did not map. Text already in the page
        // cache is left to the parsers' own page faults, which map 16 pages at a time (fault-around):
        // mapping it here costs more CPU on a third thread that competes with the parsers
        // (docs/benchmarks-history.md, 2026-12-02 17:19–20:00 UTC).
        if !sampled_pages_cached(&map, pos, end) {
            let _ = map.advise_range(Advice::PopulateRead, pos, end - pos);
        }
        let data = BlockData::Mapped(map.clone(), pos..end);
        if !emit(TextBlock { seq, offset: pos as u64, data }) {
            return Streamed::Stopped;
        }
        seq += 1;
        pos = end;
    }
    Streamed::Done { blocks: seq }
}

/// Whether the first, middle and last pages of `map[start..end]` are in the page cache (`mincore`);
/// false when that cannot be told (another OS, an error, a kernel that reports only this
/// process's mapped pages), so the caller maps the block ahead as if it were on disk.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // reason: `mincore` on pages of a live mapping; see SAFETY
fn sampled_pages_cached(map: &Mmap, start: usize, end: usize) -> bool {
    if end <= start {
        return true;
    }
    [start, start + (end - start) / 2, end - 1].into_iter().all(|at| {
        let page = at / PAGE * PAGE;
        let mut state = 0u8;
        // SAFETY: `page` is a multiple of `PAGE` inside the mapping, whose start is page-aligned,
        // so `[page, page + 1)` lies in mapped memory; `mincore` only writes one byte per page of
        // the range (one here) into `state`. A real page larger than `PAGE` makes the address
        // unaligned: `mincore` then fails with EINVAL and this answers false.
        let ok =
            unsafe { libc::mincore(map.as_ptr().add(page) as *mut libc::c_void, 1, &mut state) };
        ok == 0 && state & 1 == 1
    })
}

#[cfg(not(target_os = "linux"))]
fn sampled_pages_cached(_map: &Mmap, _start: usize, _end: usize) -> bool {
    false
}

/// Cuts `r` into blocks of whole lines.
fn cut_blocks(
    pool: &BlockPool,
    mut r: impl Read,
    block_bytes: usize,
    max_line: usize,
    emit: &mut impl FnMut(TextBlock) -> bool,
) -> Result<Streamed, StreamError> {
    let mut offset = 0u64;
    let mut seq = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = pool.take(block_bytes + max_line + 4096);
        buf.append(&mut carry);
        let eof = fill(&mut r, &mut buf, block_bytes, offset)?;
        if buf.is_empty() {
            return Ok(Streamed::Done { blocks: seq });
        }
        let mut eof = eof;
        // Find the last line end; look further (up to one maximal line) if the block has none.
        let cut = loop {
            if eof {
                break buf.len();
            }
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => break i + 1,
                None if buf.len() >= block_bytes + max_line => break buf.len(),
                None => {
                    let target = buf.len() + max_line;
                    eof = fill(&mut r, &mut buf, target, offset)?;
                }
            }
        };
        carry.extend_from_slice(&buf[cut..]);
        buf.truncate(cut);
        let len = buf.len() as u64;
        if !emit(TextBlock { seq, offset, data: BlockData::Owned(buf) }) {
            return Ok(Streamed::Stopped);
        }
        seq += 1;
        offset += len;
        if eof && carry.is_empty() {
            return Ok(Streamed::Done { blocks: seq });
        }
    }
}

/// Reads from `r` until `buf` holds `target` bytes or the input ends; true at end of input.
/// Reads straight into `buf`'s spare capacity (no intermediate copy).
fn fill(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    target: usize,
    offset: u64,
) -> Result<bool, StreamError> {
    while buf.len() < target {
        let want = (target - buf.len()) as u64;
        match r.by_ref().take(want).read_to_end(buf) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(StreamError::Read { offset: offset + buf.len() as u64, source })
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::LocalArchive;
    use std::io::Write;

    fn blocks_of(
        path: &std::path::Path,
        framing: Framing,
        map_files: bool,
    ) -> (Vec<TextBlock>, Streamed) {
        let mut out = Vec::new();
        let r = read_blocks(
            &pool(),
            &LocalArchive,
            path.to_str().unwrap(),
            framing,
            &StreamSettings { map_files, ..StreamSettings::default() },
            64 << 10,
            |b| {
                out.push(b);
                true
            },
        )
        .unwrap();
        (out, r)
    }

    fn pool() -> BlockPool {
        BlockPool::new(4)
    }

    fn lines(n: usize) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n");
        for i in 0..n {
            writeln!(
                s,
                "2 123 eni-{i} 10.0.0.{} 8.8.8.8 1 53 17 1 60 1700000000 1700000060 REJECT OK",
                i % 250
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn blocks_are_whole_lines_and_reassemble_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let text = lines(300_000); // ~27 MB: several blocks
        let plain = dir.path().join("a.log");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("a.log.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&text[..text.len() / 2]).unwrap();
        let mut first = e.finish().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&text[text.len() / 2..]).unwrap();
        first.extend(e.finish().unwrap()); // two gzip members
        std::fs::write(&gz, first).unwrap();
        let cases = [(&plain, Framing::Auto), (&plain, Framing::Lines), (&gz, Framing::Auto)];
        for ((path, framing), map_files) in
            cases.into_iter().chain([(&gz, Framing::Gzip)]).flat_map(|c| [(c, false), (c, true)])
        {
            let (blocks, r) = blocks_of(path, framing, map_files);
            // Only plain text is mapped; gzip is always inflated into buffers.
            let mapped = map_files && path == &plain;
            assert!(
                blocks.iter().all(|b| matches!(b.data, BlockData::Mapped(..)) == mapped),
                "{path:?} {framing:?} map_files {map_files}"
            );
            assert!(matches!(r, Streamed::Done { blocks: n } if n == blocks.len() as u64), "{r:?}");
            assert!(blocks.len() >= 3, "{}", blocks.len());
            let mut joined = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(b.seq, i as u64);
                assert_eq!(b.offset, joined.len() as u64);
                assert_eq!(b.data.last(), Some(&b'\n'));
                joined.extend_from_slice(&b.data);
            }
            assert!(joined == text, "reassembled text differs for {path:?} {map_files}");
        }
    }

    #[test]
    fn json_and_missing_newline_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("a.json");
        std::fs::write(&json, br#"{"message":"x"}"#).unwrap();
        let tail = dir.path().join("b.log");
        std::fs::write(&tail, b"a\nb").unwrap();
        let empty = dir.path().join("c.log");
        std::fs::write(&empty, b"").unwrap();
        for map_files in [false, true] {
            assert!(matches!(
                blocks_of(&json, Framing::Auto, map_files).1,
                Streamed::NotText(Framing::Firehose)
            ));
            let (blocks, _) = blocks_of(&tail, Framing::Lines, map_files);
            assert_eq!(blocks.len(), 1);
            assert_eq!(&*blocks[0].data, b"a\nb");
            assert!(matches!(
                blocks_of(&empty, Framing::Lines, map_files),
                (b, Streamed::Done { blocks: 0 }) if b.is_empty()
            ));
        }
    }

    /// Mapped blocks follow the rules of read ones: whole lines up to `block_bytes`, a longer line
    /// whole up to `block_bytes + max_line`, a line longer than that cut there.
    #[test]
    fn mapped_blocks_are_cut_at_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        for i in 0..3_000usize {
            text.extend(std::iter::repeat_n(b'x', (i * 7919) % 300));
            text.push(b'\n');
            if i == 1_000 {
                text.extend(std::iter::repeat_n(b'y', 6_000)); // longer than block + max_line
                text.push(b'\n');
            }
            if i == 2_000 {
                text.extend(std::iter::repeat_n(b'z', 3_000)); // longer than a block only
                text.push(b'\n');
            }
        }
        text.extend_from_slice(b"no line end");
        let path = dir.path().join("m.log");
        std::fs::write(&path, &text).unwrap();
        let max_line = 2_048;
        // Blocks smaller than a page, and blocks of many pages (whose whole pages a dropped
        // block releases).
        for (block_bytes, map_files) in [(2_048, false), (2_048, true), (40_000, true)] {
            let settings = StreamSettings { min_object_bytes: 0, block_bytes, map_files };
            let mut blocks = Vec::new();
            let r = read_blocks(
                &pool(),
                &LocalArchive,
                path.to_str().unwrap(),
                Framing::Auto,
                &settings,
                max_line,
                |b| {
                    blocks.push(b);
                    true
                },
            )
            .unwrap();
            assert!(matches!(r, Streamed::Done { blocks: n } if n == blocks.len() as u64));
            let mut joined = Vec::new();
            let last = blocks.len() - 1;
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(b.offset, joined.len() as u64);
                assert!(b.data.len() <= block_bytes + max_line, "block {i}: {}", b.data.len());
                if i < last && b.data.last() != Some(&b'\n') {
                    // Only the overlong line may be cut inside.
                    assert_eq!(b.data.len(), block_bytes + max_line, "block {i} ({map_files})");
                    assert!(b.data.iter().all(|c| *c == b'y'), "block {i} ({map_files})");
                }
                joined.extend_from_slice(&b.data);
            }
            assert!(joined == text, "map_files {map_files}");
            assert!(
                block_bytes > 3_000 || blocks.iter().any(|b| b.data.len() > block_bytes),
                "the 3,000-byte line is whole"
            );
            assert_eq!(blocks.iter().all(|b| matches!(b.data, BlockData::Mapped(..))), map_files);
            // Dropping a block releases its pages; its neighbours (sharing partial pages with
            // it) still read their own bytes.
            let kept: Vec<TextBlock> = blocks.into_iter().step_by(2).collect();
            for b in &kept {
                let at = b.offset as usize;
                assert!(*b.data == text[at..at + b.data.len()], "block at {at} ({map_files})");
            }
        }
    }

    #[test]
    fn truncated_gzip_is_an_error_after_the_good_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&lines(300_000)).unwrap();
        let gz = e.finish().unwrap();
        let path = dir.path().join("t.log.gz");
        std::fs::write(&path, &gz[..gz.len() * 3 / 4]).unwrap();
        let mut n = 0;
        let r = read_blocks(
            &pool(),
            &LocalArchive,
            path.to_str().unwrap(),
            Framing::Auto,
            &StreamSettings::default(),
            64 << 10,
            |_| {
                n += 1;
                true
            },
        );
        assert!(matches!(r, Err(StreamError::Read { .. })), "{r:?}");
        assert!(n >= 1);
    }

    #[test]
    fn initial_format_reads_a_header_or_falls_back() {
        let custom = Format::parse("srcaddr dstaddr action").unwrap();
        assert_eq!(
            initial_format(b"\n\nsrcaddr dstaddr action\n1 2 3\n", &Format::default_v2()),
            custom
        );
        assert_eq!(initial_format(b"2 123 eni-1\n", &custom), custom);
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)] // reason: mapping a temporary file nothing else changes
    fn pages_just_written_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, vec![b'x'; 5 * PAGE + 100]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the file lives in a private temporary directory and is not changed while mapped.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        // Written pages are in the page cache (dirty or not): no mapping ahead is needed.
        assert!(sampled_pages_cached(&map, 0, map.len()));
        assert!(sampled_pages_cached(&map, PAGE + 7, 3 * PAGE));
        assert!(sampled_pages_cached(&map, 10, 10));
    }
}
