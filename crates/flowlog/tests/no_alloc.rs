//! Proves the invariant "parsing allocates nothing per record": a counting global allocator
//! around the line parser and `for_each_record` on plain lines.
#![allow(
    unsafe_code,
    reason = "a GlobalAlloc impl is unsafe by definition; it only forwards to System"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use flowlog::{for_each_record, DecodeOptions, Field, FlowRecord, Format, LineError, LineParser};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Only the measuring thread counts: the test harness's own threads allocate at times of
    // their choosing (progress output under load), which made the count flaky.
    static MEASURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted() -> bool {
    MEASURED.try_with(|m| m.get()).unwrap_or(false)
}

// The counter is only read after the measured work on the same thread; Relaxed is enough.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

struct Sum(u64, u64);

impl flowlog::RecordSink for Sum {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.0 += rec.bytes().ok().flatten().unwrap_or(0);
        if let (Ok(Some(a)), Ok(Some(_)), Ok(Some(_))) = (rec.srcaddr(), rec.dstaddr(), rec.start())
        {
            self.1 += u64::from(a.is_ipv4());
        }
        let _ = (rec.action(), rec.log_status(), rec.interface_id(), rec.raw(Field::Version));
    }
    fn malformed(&mut self, _: &LineError) {
        self.1 += 1000;
    }
}

fn lines(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let src = if i % 7 == 0 {
            "2001:db8::1".to_string()
        } else {
            format!("10.0.{}.{}", i % 250, i % 200)
        };
        v.extend_from_slice(
            format!("2 123456789010 eni-0abc {src} 8.8.8.8 443 {i} 6 10 {} 1418530010 1418530070 {} OK\n", i * 10, if i % 3 == 0 { "REJECT" } else { "ACCEPT" })
                .as_bytes(),
        );
    }
    v
}

#[test]
fn no_allocation_per_record() {
    MEASURED.with(|m| m.set(true));
    let format = Format::default_v2();
    let small = lines(10);
    let big = lines(10_000);
    let mut parser = LineParser::new();
    // Warm the offset buffer.
    let _ = parser.parse(small.split(|b| *b == b'\n').next().unwrap(), &format, 1, 1 << 16);

    let before = allocs();
    let mut total = 0u64;
    for (i, line) in big.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let rec = parser.parse(line, &format, i as u64 + 1, 1 << 16).expect("valid");
        total += rec.bytes().unwrap().unwrap();
        let _ = (rec.srcaddr().unwrap(), rec.dstaddr().unwrap(), rec.action().unwrap());
    }
    assert_eq!(allocs() - before, 0, "LineParser allocated per record");
    assert!(total > 0);

    // for_each_record on plain lines: a fixed number of allocations, whatever the line count.
    let opts = DecodeOptions::default();
    let count = |input: &[u8]| {
        let mut sink = Sum(0, 0);
        let before = allocs();
        let s = for_each_record(input, &opts, &mut sink).unwrap();
        (allocs() - before, s.records, sink.1)
    };
    let (a_small, n_small, ok_small) = count(&small);
    let (a_big, n_big, ok_big) = count(&big);
    assert_eq!((n_small, n_big), (10, 10_000));
    assert!(ok_small > 0 && ok_big > 0 && ok_big < 10_000);
    assert_eq!(a_small, a_big, "for_each_record allocations grow with the record count");
}
