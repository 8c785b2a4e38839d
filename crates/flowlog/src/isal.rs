//! A streaming multi-member gzip reader on ISA-L's inflater (`isal_inflate`: Intel's assembly
//! kernels; faster than zlib-rs streamed by a margin that depends on the compressor that wrote the
//! data: docs/benchmarks.md, *Inflaters (criterion)*). Built only with
//! the `isal` feature, which builds ISA-L from the source `isal-sys` ships (needs `nasm`,
//! `autoconf`, `automake`, `libtool` and `make`).
//!
//! The `isal-rs` crate's reader is not used: it loops forever on a truncated stream (no input
//! left, no output made, member not finished) and its inflate state is private. This one stops
//! with an error instead: a member that ends early is `UnexpectedEof`, damaged data `InvalidData`
//! (as zlib-rs reports them), and it checks every member's CRC-32 and length (ISA-L's
//! `ISAL_GZIP` mode). The property tests in `gz.rs` compare it with zlib-rs on valid,
//! concatenated, truncated and damaged streams.
#![allow(unsafe_code)] // reason: FFI calls into ISA-L; each block states why it is sound

use std::io::{self, BufRead, Read};

use isal_sys::igzip_lib as ffi;

/// Reads the inflated text of one or more concatenated gzip members from `R`.
pub struct IsalGzReader<R> {
    inner: R,
    /// Boxed: tens of KiB of decoding tables and history.
    state: Box<ffi::inflate_state>,
    /// The current member ended; the next byte of input (if any) starts another.
    member_done: bool,
}

impl<R: BufRead> IsalGzReader<R> {
    /// A reader of the gzip stream `inner`.
    pub fn new(inner: R) -> IsalGzReader<R> {
        // SAFETY: `inflate_state` is a C struct of integers, pointers (null is valid before
        // `isal_inflate_init`), arrays and a union of integers: all-zero bytes are a valid
        // value, and `isal_inflate_init` then initialises it as ISA-L requires.
        let mut state: Box<ffi::inflate_state> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `state` points to a live, writable `inflate_state`.
        unsafe { ffi::isal_inflate_init(&mut *state) };
        state.crc_flag = ffi::ISAL_GZIP;
        IsalGzReader { inner, state, member_done: false }
    }

    fn finished(&self) -> bool {
        self.state.block_state == ffi::isal_block_state_ISAL_BLOCK_FINISH
    }
}

impl<R: BufRead> Read for IsalGzReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // Larger requests are served in several calls (ISA-L counts in u32).
        let room = out.len().min(u32::MAX as usize);
        loop {
            if self.member_done {
                if self.inner.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                // SAFETY: `state` is initialised; reset keeps it so for a new member.
                unsafe { ffi::isal_inflate_reset(&mut *self.state) };
                self.state.crc_flag = ffi::ISAL_GZIP;
                self.member_done = false;
            }
            let input = self.inner.fill_buf()?;
            let at_eof = input.is_empty();
            let avail_in = input.len().min(u32::MAX as usize);
            self.state.next_in = input.as_ptr().cast_mut();
            self.state.avail_in = avail_in as u32;
            self.state.next_out = out.as_mut_ptr();
            self.state.avail_out = room as u32;
            // SAFETY: `next_in`/`avail_in` describe `input`, alive until `consume` below, and
            // ISA-L only reads through `next_in` (the pointer is `*mut` in its C API only);
            // `next_out`/`avail_out` describe `out`, writable and alive for the call. ISA-L keeps
            // no pointer into either buffer across calls (partial headers and history are copied
            // into `state`), and both pointers are reset before every call.
            let rc = unsafe { ffi::isal_inflate(&mut *self.state) };
            let left = self.state.avail_in as usize;
            let made = room - self.state.avail_out as usize;
            self.state.next_in = std::ptr::null_mut();
            self.state.next_out = std::ptr::null_mut();
            if left > avail_in {
                // ISA-L rewound its bit buffer past the start of this call's input, into bytes of
                // an earlier call that are consumed already (seen on damaged input): the stream
                // cannot go on, and there is nothing to consume.
                let what = if rc == ffi::ISAL_DECOMP_OK as i32 {
                    "inflate rewound past its input".to_string()
                } else {
                    describe(rc)
                };
                return Err(io::Error::new(io::ErrorKind::InvalidData, what));
            }
            let used = avail_in - left;
            self.inner.consume(used);
            if rc != ffi::ISAL_DECOMP_OK as i32 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, describe(rc)));
            }
            if self.finished() {
                self.member_done = true;
            }
            if made > 0 {
                return Ok(made);
            }
            if self.member_done {
                continue;
            }
            if at_eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "gzip stream ends inside a member",
                ));
            }
            if used == 0 {
                // Input and room, yet nothing used or made: never loop on it.
                return Err(io::Error::new(io::ErrorKind::InvalidData, "inflate made no progress"));
            }
        }
    }
}

/// The message for an ISA-L inflate error code.
fn describe(rc: i32) -> String {
    let what = match rc {
        ffi::ISAL_INVALID_BLOCK => "invalid deflate block",
        ffi::ISAL_INVALID_SYMBOL => "invalid deflate symbol",
        ffi::ISAL_INVALID_LOOKBACK => "invalid distance too far back",
        ffi::ISAL_INVALID_WRAPPER => "invalid gzip header",
        ffi::ISAL_UNSUPPORTED_METHOD => "unsupported compression method",
        ffi::ISAL_INCORRECT_CHECKSUM => "corrupt gzip trailer (crc32 or length mismatch)",
        r if r == ffi::ISAL_NEED_DICT as i32 => "deflate stream needs a dictionary",
        _ => "inflate error",
    };
    format!("{what} (isa-l code {rc})")
}
