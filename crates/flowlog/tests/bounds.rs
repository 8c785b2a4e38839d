//! Resource bounds: inflating a gzip bomb takes no more memory than the decompression limit
//! (plus a small constant), measured with a counting global allocator (live bytes and their peak).
#![allow(
    unsafe_code,
    reason = "a GlobalAlloc impl is unsafe by definition; it only forwards to System"
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{gzip, Collect};
use flowlog::{for_each_record, DecodeError, DecodeOptions, Framing};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    // Relaxed: the tests read the counters on the thread that did the work, after it (and run one
    // at a time, `SERIAL`); the peak is a maximum, which `fetch_max` keeps exact.
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY (of each method): forwards the caller's contract to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a change of capacity in place: what is bounded is the buffers' capacity. (An
        // allocator that moves a large block by copying briefly holds the old one too; glibc moves
        // large blocks with mremap, without a copy.)
        match new_size.checked_sub(layout.size()) {
            Some(more) => grow(more),
            None => {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests of this binary measure one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` and returns its result and the peak of live heap bytes above those live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

/// What the inflaters and the decoder may hold besides the output buffer: inflater state and
/// windows, the input's view, small buffers.
const SLACK: usize = 1 << 20;

/// Regression (#28 item 6): inflating grew its buffer by doubling (`read_to_end`) up to twice the
/// limit: with a limit of 10 MB a bomb took 16 MiB. Every inflate path (one member: libdeflate
/// sized by the trailer, falling back to the streaming inflater when the trailer lies; several
/// members: streaming) now holds at most the limit, plus a constant.
#[test]
fn a_gzip_bomb_takes_no_more_than_the_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limit: u64 = 10_000_000;
    let text = vec![b'\n'; 40 << 20];
    let one = gzip(&text);
    // Two members: never taken for one (the streaming inflater from the start).
    let mut two = gzip(&text[..1 << 20]);
    two.extend_from_slice(&one);
    // One member whose trailer claims 100 bytes: libdeflate is tried with a 100-byte buffer.
    let mut lying = one.clone();
    let n = lying.len();
    lying[n - 4..].copy_from_slice(&100u32.to_le_bytes());
    // One member within the limit: accepted, and held at its size.
    let fits = gzip(&text[..9_000_000]);
    for (name, input) in [("one member", &one), ("two members", &two), ("lying trailer", &lying)] {
        for framing in [Framing::Auto, Framing::Lines] {
            let opts =
                DecodeOptions { framing, max_decompressed_bytes: limit, ..Default::default() };
            let (result, peak) =
                peak_during(|| for_each_record(input, &opts, &mut Collect::default()));
            let err = result.unwrap_err();
            assert!(
                matches!(err, DecodeError::DecompressionLimit { limit: l } if l == limit),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("exceeds the limit of 10000000 bytes"), "{err}");
            assert!(peak <= limit as usize + SLACK, "{name}, {framing}: peak {peak} bytes");
        }
        let (result, peak) = peak_during(|| flowlog::gunzip(input, limit));
        assert!(matches!(result, Err(DecodeError::DecompressionLimit { .. })), "{name}");
        assert!(peak <= limit as usize + SLACK, "{name}, gunzip: peak {peak} bytes");
    }
    let opts = DecodeOptions { max_decompressed_bytes: limit, ..Default::default() };
    let (result, peak) = peak_during(|| for_each_record(&fits, &opts, &mut Collect::default()));
    assert_eq!(result.unwrap().decoded_bytes, 9_000_000);
    assert!(peak <= limit as usize + SLACK, "within the limit: peak {peak} bytes");
}
