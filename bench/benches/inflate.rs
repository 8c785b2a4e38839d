//! Inflater benchmarks: the two gzip inflaters the product uses, on generated flow-log text (gzip
//! level 6, as the compare dataset): zlib-rs through flate2, streamed in 8 MiB reads (the path for
//! objects of 32 MiB or more, never held whole), and libdeflate on the whole object
//! (`flowlog::gunzip`, the path for smaller objects and CloudWatch envelopes), each on one large
//! object and on 32 small ones; and the streaming reader the build uses (`flowlog::gz_reader`:
//! zlib-rs, or ISA-L when built with `--features flowlog/isal`; the bench name says which).
//! Throughput is of the inflated text. Every run checks the inflated length. ISA-L's `igzip` CLI is
//! measured beside them by bench/compare/run.sh (a floor row) and in docs/benchmarks.md.

use std::hint::black_box;
use std::io::{Read, Write};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowspike_bench::generate;

/// Lines of the large object (about 47 MB of text: the streamed path).
const LARGE: usize = 400_000;
/// Lines of each small object (about 1.5 MB of text, like one object of the compare dataset's
/// S3 layout) and their number.
const SMALL: usize = 12_500;
const SMALL_OBJECTS: usize = 32;

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(text).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// Reads `d` to its end in reads of `buf`'s size; returns the inflated length.
fn drain(mut d: impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    loop {
        let k = d.read(buf).expect("valid gzip");
        if k == 0 {
            return n;
        }
        n += k;
    }
}

/// Inflates with zlib-rs (flate2) in reads of `buf`'s size; returns the inflated length.
fn streamed(gz: &[u8], buf: &mut [u8]) -> usize {
    drain(flate2::read::MultiGzDecoder::new(gz), buf)
}

/// Inflates with `flowlog::gz_reader` in reads of `buf`'s size; returns the inflated length.
fn gz_reader(gz: &[u8], buf: &mut [u8]) -> usize {
    drain(flowlog::gz_reader(gz), buf)
}

fn inflate(c: &mut Criterion) {
    let product = format!("gz_reader_{}_streamed", flowlog::GZ_INFLATER.replace('-', ""));
    let mut buf = vec![0u8; 8 << 20];
    let mut group = c.benchmark_group("inflate");
    group.sample_size(20);

    let large = generate(LARGE, 42).data;
    let large_gz = gzip(&large);
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function("large_zlib_rs_streamed", |b| {
        b.iter(|| assert_eq!(streamed(black_box(&large_gz), &mut buf), large.len()))
    });
    group.bench_function(format!("large_{product}"), |b| {
        b.iter(|| assert_eq!(gz_reader(black_box(&large_gz), &mut buf), large.len()))
    });
    group.bench_function("large_libdeflate_whole", |b| {
        b.iter(|| {
            let out = flowlog::gunzip(black_box(&large_gz), u64::MAX).expect("valid gzip");
            assert_eq!(out.len(), large.len());
        })
    });

    let small: Vec<(usize, Vec<u8>)> = (0..SMALL_OBJECTS as u64)
        .map(|seed| {
            let text = generate(SMALL, seed).data;
            (text.len(), gzip(&text))
        })
        .collect();
    let small_bytes: usize = small.iter().map(|(n, _)| n).sum();
    group.throughput(Throughput::Bytes(small_bytes as u64));
    group.bench_function("small_objects_zlib_rs_streamed", |b| {
        b.iter(|| {
            for (n, gz) in &small {
                assert_eq!(streamed(black_box(gz), &mut buf), *n);
            }
        })
    });
    group.bench_function(format!("small_objects_{product}"), |b| {
        b.iter(|| {
            for (n, gz) in &small {
                assert_eq!(gz_reader(black_box(gz), &mut buf), *n);
            }
        })
    });
    group.bench_function("small_objects_libdeflate_whole", |b| {
        b.iter(|| {
            for (n, gz) in &small {
                let out = flowlog::gunzip(black_box(gz), u64::MAX).expect("valid gzip");
                assert_eq!(out.len(), *n);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, inflate);
criterion_main!(benches);
