//! The structural scan of a block of text: 64 bytes at a time, bitmasks of spaces, line ends and
//! unusual bytes (SSE2 on x86_64, byte by byte elsewhere), then a walk over the set bits that hands every
//! line to the decoder with its field ends already found.
//!
//! Splitting line by line (`memchr` for the line end, then the line's fields) touches every byte
//! twice and pays a call per line; this pass touches every byte once and spends a few instructions
//! per delimiter. Lines holding an unusual byte (control bytes, `\r`, DEL, anything non-ASCII) are
//! handed over without field ends: the decoder gives them to [`crate::LineParser`], which
//! validates them exactly, so the result is the same as parsing every line with it.

use std::net::Ipv4Addr;

/// A value's start and end offsets in a text.
pub(crate) type Span = (usize, usize);

/// Bitmasks of one 64-byte chunk: bit `i` describes byte `i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Masks {
    /// `' '`.
    pub space: u64,
    /// `'\n'`.
    pub newline: u64,
    /// Bytes the fast path does not take: below 0x20 except `'\n'`, DEL (0x7f) and 0x80 or more.
    pub odd: u64,
}

/// How 64-byte chunks are classified: chosen once per block of text, so that the whole walk
/// (and the decoder inlined into it) is compiled for the instructions the CPU has.
pub(crate) trait Classifier: Copy {
    /// The CPU counts a word's bits in one instruction (`popcnt`): the walk then stores a
    /// chunk's field ends four at a time, with no test per space.
    const POPCNT: bool = false;

    /// The masks of `chunk`; equal to [`classify_naive`].
    fn classify(self, chunk: &[u8; 64]) -> Masks;

    /// The value masks of `chunk` (a window of a line's numeric fields); equal to
    /// [`value_masks_naive`].
    fn value_masks(self, chunk: &[u8; 64]) -> ValueMasks;

    /// [`crate::parse_ipv4`], with no run-time check of the CPU where the classifier proves it.
    fn ipv4(self, b: &[u8]) -> Option<std::net::Ipv4Addr>;

    /// [`Classifier::ipv4`] of the bytes `s..e` of `text`, which may be read past `e` (a line's
    /// value, `text` running on to the end of its block): one 16-byte load where the classifier
    /// can.
    #[inline(always)]
    fn ipv4_at(self, text: &[u8], s: usize, e: usize) -> Option<std::net::Ipv4Addr> {
        self.ipv4(text.get(s..e).unwrap_or_default())
    }

    /// [`Classifier::ipv4_at`] of two values of `text` (the ranges `a` and `b`, such as a line's
    /// `srcaddr` and `dstaddr`): both at once where the classifier can.
    #[inline(always)]
    fn ipv4_pair_at(self, text: &[u8], a: Span, b: Span) -> [Option<Ipv4Addr>; 2] {
        [self.ipv4_at(text, a.0, a.1), self.ipv4_at(text, b.0, b.1)]
    }
}

/// Bitmasks of one 64-byte window of a line's values, for the checks of numeric fields made while
/// the line is still in cache (`crate::validate`): bit `i` describes byte `i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ValueMasks {
    /// ASCII digits and `-`: the bytes a numeric field may hold (`-` only alone: absent).
    pub digit_or_dash: u64,
    /// `-`.
    pub dash: u64,
    /// `' '`.
    pub space: u64,
}

/// The reference for [`Classifier::value_masks`]: byte by byte.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(crate) fn value_masks_naive(chunk: &[u8; 64]) -> ValueMasks {
    let mut m = ValueMasks::default();
    for (i, &b) in chunk.iter().enumerate() {
        m.digit_or_dash |= u64::from(b.is_ascii_digit() || b == b'-') << i;
        m.dash |= u64::from(b == b'-') << i;
        m.space |= u64::from(b == b' ') << i;
    }
    m
}

/// The classifier every CPU runs: SSE2 on x86_64 (part of every x86_64 CPU), byte by byte
/// elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Baseline;

impl Classifier for Baseline {
    #[inline(always)]
    fn classify(self, chunk: &[u8; 64]) -> Masks {
        classify(chunk)
    }

    #[inline(always)]
    fn value_masks(self, chunk: &[u8; 64]) -> ValueMasks {
        value_masks(chunk)
    }

    #[inline(always)]
    fn ipv4(self, b: &[u8]) -> Option<std::net::Ipv4Addr> {
        crate::record::parse_ipv4(b)
    }
}

/// The AVX2 classifier: 32 bytes per instruction instead of 16. A value exists only on a CPU
/// that has AVX2, BMI1, BMI2 and POPCNT ([`Avx2::detect`]; every CPU with AVX2 that AWS runs has
/// the other three), which is what makes its use, and code compiled for those three, sound.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2(());

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// `Some` when this CPU has AVX2, BMI1, BMI2 and POPCNT (the checks are cached by the
    /// standard library).
    #[inline]
    pub(crate) fn detect() -> Option<Avx2> {
        use std::arch::is_x86_feature_detected as has;
        (has!("avx2") && has!("bmi1") && has!("bmi2") && has!("popcnt")).then_some(Avx2(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Classifier for Avx2 {
    const POPCNT: bool = true;

    #[inline(always)]
    #[allow(unsafe_code)] // reason: calling an AVX2 function; `self` proves the CPU has AVX2
    fn classify(self, chunk: &[u8; 64]) -> Masks {
        // SAFETY: an `Avx2` value is only made by `Avx2::detect`, after the CPU reported AVX2.
        unsafe { classify_avx2(chunk) }
    }

    #[inline(always)]
    #[allow(unsafe_code)] // reason: calling an AVX2 function; `self` proves the CPU has AVX2
    fn value_masks(self, chunk: &[u8; 64]) -> ValueMasks {
        // SAFETY: an `Avx2` value is only made by `Avx2::detect`, after the CPU reported AVX2.
        unsafe { value_masks_avx2(chunk) }
    }

    #[inline(always)]
    #[allow(unsafe_code)] // reason: calling an SSSE3 function; `self` proves the CPU has AVX2
    fn ipv4(self, b: &[u8]) -> Option<std::net::Ipv4Addr> {
        // SAFETY: an `Avx2` value exists only on a CPU with AVX2, which includes SSSE3.
        unsafe { crate::record::parse_ipv4_ssse3(b) }
    }

    #[inline(always)]
    #[allow(unsafe_code)] // reason: calling an SSSE3 function; `self` proves the CPU has AVX2
    fn ipv4_at(self, text: &[u8], s: usize, e: usize) -> Option<std::net::Ipv4Addr> {
        // SAFETY: an `Avx2` value exists only on a CPU with AVX2, which includes SSSE3.
        unsafe { crate::record::parse_ipv4_ssse3_at(text, s, e) }
    }

    #[inline(always)]
    #[allow(unsafe_code)] // reason: calling an AVX2 function; `self` proves the CPU has AVX2
    fn ipv4_pair_at(self, text: &[u8], a: Span, b: Span) -> [Option<Ipv4Addr>; 2] {
        let (na, nb) = (a.1.wrapping_sub(a.0), b.1.wrapping_sub(b.0));
        let window = |s: usize| text.get(s..).and_then(|t| t.first_chunk::<16>());
        match (window(a.0), window(b.0)) {
            (Some(wa), Some(wb)) if (7..=15).contains(&na) && (7..=15).contains(&nb) => {
                // SAFETY: an `Avx2` value is only made by `Avx2::detect`, after the CPU reported
                // AVX2 and BMI1.
                unsafe { ipv4_pair_avx2(wa, na as u32, wb, nb as u32) }
            }
            _ => [self.ipv4_at(text, a.0, a.1), self.ipv4_at(text, b.0, b.1)],
        }
    }
}

/// The digits' places of every IPv4 layout (4 octets of 1 to 3 digits), by the hash of its key
/// ([`ipv4_layout_slot`]): the layout of an address of `n` bytes with dots at `p1`, `p2` and
/// `p3` has the key `1 << p1 | 1 << p2 | 1 << p3 | 1 << n`, which tells the 81 layouts apart.
#[cfg(target_arch = "x86_64")]
struct Ipv4Layouts {
    /// The shuffle that puts each octet's hundreds, tens and ones in bytes 0 to 2 of its 4
    /// (zeros, `0x80`, before a short octet's first digit and in byte 3).
    shuffle: [[u8; 16]; 256],
    /// The key of the layout in the slot; 0 (no layout's) in the 175 empty slots.
    key: [u16; 256],
}

/// The slot of an IPv4 layout's key in [`IPV4_LAYOUTS`]: a multiplicative hash under which the
/// 81 keys fall in distinct slots (checked when the table is built).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
const fn ipv4_layout_slot(key: u32) -> usize {
    (key.wrapping_mul(0xe07b_db9f) >> 24) as usize
}

/// Built at compile time; a collision of two layouts' slots stops the build.
#[cfg(target_arch = "x86_64")]
static IPV4_LAYOUTS: Ipv4Layouts = {
    let mut t = Ipv4Layouts { shuffle: [[0x80; 16]; 256], key: [0; 256] };
    let mut layout = 0;
    while layout < 81 {
        // The octets' lengths, 1 to 3 each.
        let lens = [1 + layout % 3, 1 + layout / 3 % 3, 1 + layout / 9 % 3, 1 + layout / 27];
        let mut shuffle = [0x80u8; 16];
        let (mut start, mut key) = (0, 0u32);
        let mut k = 0;
        while k < 4 {
            let len = lens[k];
            let mut j = 3 - len;
            while j < 3 {
                // The digit weighted `10^(2 - j)`.
                shuffle[4 * k + j] = (start + len + j - 3) as u8;
                j += 1;
            }
            // The octet's end: a dot, or the address's end.
            key |= 1 << (start + len);
            start += len + 1;
            k += 1;
        }
        let slot = ipv4_layout_slot(key);
        assert!(t.key[slot] == 0, "two IPv4 layouts in one slot");
        t.key[slot] = key as u16;
        t.shuffle[slot] = shuffle;
        layout += 1;
    }
    t
};

/// [`crate::parse_ipv4`] of the first `na` bytes of `a` and the first `nb` of `b` (7 to 15 each;
/// the bytes past them may be anything), one address per 128-bit lane.
///
/// An address is its 4 octets of 1 to 3 digits (no leading zero) separated by 3 dots, each octet
/// at most 255: the positions of its dots and its length are the key of its layout, whose
/// shuffle in [`IPV4_LAYOUTS`] puts each octet's digits in place (a key not in the table is no
/// address); the masks of digits, dots and zeros check the rest of both addresses at once, then
/// the octets' values (the digits placed, weighted 100, 10 and 1) their range.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1")]
#[inline]
#[allow(unsafe_code)] // reason: unaligned vector loads from 16-byte arrays
unsafe fn ipv4_pair_avx2(a: &[u8; 16], na: u32, b: &[u8; 16], nb: u32) -> [Option<Ipv4Addr>; 2] {
    use std::arch::x86_64::{
        _mm256_cmpeq_epi8, _mm256_cmpgt_epi32, _mm256_extract_epi32, _mm256_loadu2_m128i,
        _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_packs_epi32, _mm256_packus_epi16, _mm256_set1_epi16, _mm256_set1_epi32,
        _mm256_set1_epi8, _mm256_setr_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_sub_epi8,
    };
    // SAFETY: two unaligned 16-byte loads of 16-byte arrays.
    let v = unsafe { _mm256_loadu2_m128i(b.as_ptr().cast(), a.as_ptr().cast()) };
    // Bit `i` of a mask: byte `i` of `a` (bits 0 to 15) or byte `i - 16` of `b` (16 to 31).
    let bits = |x| _mm256_movemask_epi8(x) as u32;
    let inside = ((1u32 << na) - 1) | ((1u32 << nb) - 1) << 16;
    // Digit values; a digit is a byte at most 9 above '0' (unsigned).
    let d = _mm256_sub_epi8(v, _mm256_set1_epi8(b'0' as i8));
    let digit = bits(_mm256_cmpeq_epi8(_mm256_min_epu8(d, _mm256_set1_epi8(9)), d)) & inside;
    let dot = bits(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'.' as i8))) & inside;
    let zero = bits(_mm256_cmpeq_epi8(d, _mm256_setzero_si256())) & inside;
    // Each address's layout: its key found in the table means 3 dots and octets of 1 to 3
    // bytes (`na` is at most 15: the key fits 16 bits).
    let (key_a, key_b) = (dot & 0xffff | 1 << na, dot >> 16 | 1 << nb);
    let (slot_a, slot_b) = (ipv4_layout_slot(key_a), ipv4_layout_slot(key_b));
    let t = &IPV4_LAYOUTS;
    let (shape_a, shape_b) = (u32::from(t.key[slot_a]) == key_a, u32::from(t.key[slot_b]) == key_b);
    // Bytes other than digits and dots, and leading zeros (an octet's first byte `0` with a
    // digit after it). Bit 15 is never inside (`na` is at most 15), so no octet of `a` goes on
    // into `b`.
    let mut bad = inside & !(digit | dot);
    bad |= (dot << 1 | 1 | 1 << 16) & zero & digit >> 1;
    // SAFETY: two unaligned 16-byte loads of 16-byte arrays.
    let shuffle = unsafe {
        _mm256_loadu2_m128i(t.shuffle[slot_b].as_ptr().cast(), t.shuffle[slot_a].as_ptr().cast())
    };
    let placed = _mm256_shuffle_epi8(d, shuffle);
    let weights = _mm256_setr_epi8(
        100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0,
        100, 10, 1, 0, 100, 10, 1, 0,
    );
    let octets = _mm256_madd_epi16(_mm256_maddubs_epi16(placed, weights), _mm256_set1_epi16(1));
    bad |= bits(_mm256_cmpgt_epi32(octets, _mm256_set1_epi32(255)));
    let packed = _mm256_packus_epi16(_mm256_packs_epi32(octets, octets), _mm256_setzero_si256());
    let value = |x: i32| Ipv4Addr::from((x as u32).to_le_bytes());
    [
        (shape_a && bad & 0xffff == 0).then(|| value(_mm256_extract_epi32::<0>(packed))),
        (shape_b && bad >> 16 == 0).then(|| value(_mm256_extract_epi32::<4>(packed))),
    ]
}

/// [`Classifier::value_masks`] with AVX2: per 32 bytes, an add and a compare for digits and two
/// compares for `-` and spaces.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)] // reason: unaligned vector loads from a 64-byte array
unsafe fn value_masks_avx2(chunk: &[u8; 64]) -> ValueMasks {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
    };
    // SAFETY: both 32-byte loads lie inside the 64-byte array; `loadu` takes any alignment.
    let (lo, hi) = unsafe {
        let p = chunk.as_ptr().cast::<__m256i>();
        (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
    };
    let bits = |lo, hi| {
        u64::from(_mm256_movemask_epi8(lo) as u32)
            | u64::from(_mm256_movemask_epi8(hi) as u32) << 32
    };
    // Digits: `b + 0x46` is above 0x75 as a signed byte exactly for 0x30..=0x39 (0x76..=0x7f).
    let (shift, limit) = (_mm256_set1_epi8(0x46), _mm256_set1_epi8(0x75));
    let digit = |v| _mm256_cmpgt_epi8(_mm256_add_epi8(v, shift), limit);
    let (dash, sp) = (_mm256_set1_epi8(b'-' as i8), _mm256_set1_epi8(b' ' as i8));
    let (dash_lo, dash_hi) = (_mm256_cmpeq_epi8(lo, dash), _mm256_cmpeq_epi8(hi, dash));
    ValueMasks {
        digit_or_dash: bits(
            _mm256_or_si256(digit(lo), dash_lo),
            _mm256_or_si256(digit(hi), dash_hi),
        ),
        dash: bits(dash_lo, dash_hi),
        space: bits(_mm256_cmpeq_epi8(lo, sp), _mm256_cmpeq_epi8(hi, sp)),
    }
}

/// The masks of `chunk` with AVX2: per 32 bytes, two compares for spaces and line ends and an
/// add and a compare for odd bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)] // reason: unaligned vector loads from a 64-byte array
unsafe fn classify_avx2(chunk: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256,
        _mm256_movemask_epi8, _mm256_set1_epi8,
    };
    // SAFETY: both 32-byte loads lie inside the 64-byte array; `loadu` takes any alignment.
    let (lo, hi) = unsafe {
        let p = chunk.as_ptr().cast::<__m256i>();
        (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
    };
    let bits = |lo, hi| {
        u64::from(_mm256_movemask_epi8(lo) as u32)
            | u64::from(_mm256_movemask_epi8(hi) as u32) << 32
    };
    let (sp, nl) = (_mm256_set1_epi8(b' ' as i8), _mm256_set1_epi8(b'\n' as i8));
    // Odd: `b + 1` below 0x21 as a signed byte takes exactly the bytes below 0x20, DEL (0x7f
    // becomes -128) and 0x80 or more (negative, or 0 for 0xff).
    let (one, limit) = (_mm256_set1_epi8(1), _mm256_set1_epi8(0x21));
    let odd = |v| _mm256_cmpgt_epi8(limit, _mm256_add_epi8(v, one));
    let newline = bits(_mm256_cmpeq_epi8(lo, nl), _mm256_cmpeq_epi8(hi, nl));
    Masks {
        space: bits(_mm256_cmpeq_epi8(lo, sp), _mm256_cmpeq_epi8(hi, sp)),
        newline,
        odd: bits(odd(lo), odd(hi)) & !newline,
    }
}

/// The masks of `chunk` (SSE2, part of every x86_64 CPU).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
#[allow(unsafe_code)] // reason: calling an SSE2 function; the build configuration has SSE2
pub(crate) fn classify(chunk: &[u8; 64]) -> Masks {
    // SAFETY: `classify_sse2` needs SSE2, which this build configuration enables (the cfg above),
    // as every x86_64 target does.
    unsafe { classify_sse2(chunk) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn classify_sse2(chunk: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8};
    let mut m = Masks::default();
    for (k, part) in chunk.chunks_exact(16).enumerate() {
        let (v, odd) = load_sse2(part);
        let bits = |x| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
        m.space |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8)));
        m.newline |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)));
        m.odd |= bits(odd);
    }
    m.odd &= !m.newline;
    m
}

/// The first 16 bytes of `part` as a vector, and the lanes of those that are not printable ASCII
/// (below 0x20, `'\n'` included; DEL; 0x80 or more): the one definition of an odd byte that
/// [`classify`] and [`string_stop`] share.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
#[allow(unsafe_code)] // reason: an unaligned vector load from a slice checked to hold 16 bytes
fn load_sse2(part: &[u8]) -> (std::arch::x86_64::__m128i, std::arch::x86_64::__m128i) {
    use std::arch::x86_64::{_mm_add_epi8, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_set1_epi8};
    let part = &part[..16];
    // SAFETY: `part` holds 16 bytes (the slice above); `loadu` takes any alignment.
    let v = unsafe { _mm_loadu_si128(part.as_ptr().cast()) };
    // As in `classify_avx2`: `b + 1` below 0x21 (signed) is exactly an odd byte.
    let odd = _mm_cmpgt_epi8(_mm_set1_epi8(0x21), _mm_add_epi8(v, _mm_set1_epi8(1)));
    (v, odd)
}

/// The value masks of `chunk` (SSE2, part of every x86_64 CPU).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
#[allow(unsafe_code)] // reason: calling an SSE2 function; the build configuration has SSE2
pub(crate) fn value_masks(chunk: &[u8; 64]) -> ValueMasks {
    // SAFETY: as in `classify`: this build configuration has SSE2.
    unsafe { value_masks_sse2(chunk) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
#[allow(unsafe_code)] // reason: unaligned vector loads from a 64-byte array
fn value_masks_sse2(chunk: &[u8; 64]) -> ValueMasks {
    use std::arch::x86_64::{
        _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8,
    };
    let mut m = ValueMasks::default();
    for (k, part) in chunk.chunks_exact(16).enumerate() {
        // SAFETY: `part` holds 16 bytes (`chunks_exact`); `loadu` takes any alignment.
        let v = unsafe { _mm_loadu_si128(part.as_ptr().cast()) };
        let bits = |x| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
        // As in `value_masks_avx2`.
        let digit = _mm_cmpgt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x46)), _mm_set1_epi8(0x75));
        let dash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8));
        m.digit_or_dash |= bits(_mm_or_si128(digit, dash));
        m.dash |= bits(dash);
        m.space |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8)));
    }
    m
}

/// The value masks of `chunk` (portable: byte by byte).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
pub(crate) fn value_masks(chunk: &[u8; 64]) -> ValueMasks {
    value_masks_naive(chunk)
}

/// The masks of `chunk` (portable: byte by byte).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
pub(crate) fn classify(chunk: &[u8; 64]) -> Masks {
    classify_naive(chunk)
}

/// The reference for [`classify`]: byte by byte.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(crate) fn classify_naive(chunk: &[u8; 64]) -> Masks {
    let mut m = Masks::default();
    for (i, &b) in chunk.iter().enumerate() {
        m.space |= u64::from(b == b' ') << i;
        m.newline |= u64::from(b == b'\n') << i;
        m.odd |= u64::from((b < 0x20 && b != b'\n') || b >= 0x7f) << i;
    }
    m
}

/// The offset of the first byte of `s` that ends a run of plain JSON string contents: `"`, `\\`,
/// or a byte that is not printable ASCII (below 0x20, DEL, 0x80 or more); `None` if there is none.
///
/// This is the JSON envelope scanner's inner loop ([`crate::envelope`]): one pass that both finds
/// the end of a string and checks its bytes, 16 at a time, with no call per string.
#[inline]
pub(crate) fn string_stop(s: &[u8]) -> Option<usize> {
    let mut chunks = s.chunks_exact(16);
    let mut base = 0;
    for chunk in &mut chunks {
        let chunk: &[u8; 16] = chunk.try_into().unwrap_or(&[b'A'; 16]);
        let m = stop_mask(chunk);
        if m != 0 {
            return Some(base + m.trailing_zeros() as usize);
        }
        base += 16;
    }
    let rest = chunks.remainder();
    // Padding that stops nothing.
    let mut buf = [b'A'; 16];
    buf[..rest.len()].copy_from_slice(rest);
    let m = stop_mask(&buf);
    (m != 0).then(|| base + m.trailing_zeros() as usize)
}

/// Bit `i` set when byte `i` of `chunk` is `"`, `\\` or not printable ASCII (SSE2).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
#[allow(unsafe_code)] // reason: calling an SSE2 function; the build configuration has SSE2
fn stop_mask(chunk: &[u8; 16]) -> u32 {
    // SAFETY: `stop_mask_sse2` needs SSE2, which this build configuration enables (the cfg
    // above), as every x86_64 target does.
    unsafe { stop_mask_sse2(chunk) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn stop_mask_sse2(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
    let (v, odd) = load_sse2(chunk);
    let quote = _mm_or_si128(
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
    );
    _mm_movemask_epi8(_mm_or_si128(odd, quote)) as u32
}

/// Bit `i` set when byte `i` of `chunk` is `"`, `\\` or not printable ASCII (portable).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn stop_mask(chunk: &[u8; 16]) -> u32 {
    chunk.iter().enumerate().fold(0, |m, (i, &b)| {
        m | (u32::from(b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b)) << i)
    })
}

/// Room for field ends: lines with more fields than this are handed over without them.
pub(crate) const MAX_ENDS: usize = crate::format::MAX_FORMAT_FIELDS;

/// What [`walk_lines`] hands over for one line.
pub(crate) enum Line<'a, 'e> {
    /// The line holds only printable ASCII and at most [`MAX_ENDS`] fields: the end offset of
    /// every field (relative to the line; the last one is the line's length), and the text from
    /// the line's start to the end of the block (the line is its prefix), so that the value checks
    /// may read whole 64-byte windows past the line's end without copying it.
    Plain(&'a [u8], &'e [u32], &'a [u8]),
    /// Anything else: the decoder validates it exactly.
    Other(&'a [u8]),
}

/// What [`walk_lines`] hands each line to.
///
/// A trait rather than a closure: the decoder's implementation is `#[inline(always)]`, so that the
/// whole per-line work lands in the walk's function, compiled for its instructions (a closure is
/// a function of its own, without the caller's `#[target_feature]`, and would call the AVX2 value
/// check out of line). Closures implement it too (tests).
pub(crate) trait OnLine {
    /// One line, in order.
    fn line(&mut self, line: Line<'_, '_>);
}

impl<F: FnMut(Line<'_, '_>)> OnLine for F {
    #[inline(always)]
    fn line(&mut self, line: Line<'_, '_>) {
        self(line)
    }
}

/// Calls `on_line` for every line of `text` (split at `'\n'`, the line end not included; a last
/// line without one counts too), in order. Lines longer than `u32::MAX - 1` bytes are [`Line::Other`].
///
/// The naive equivalent: `text.split(|b| *b == b'\n')` without the empty piece after a final `\n`,
/// with the offsets of the spaces of each printable-ASCII line.
///
/// `ends` is the caller's room for field ends, reused across calls: a CloudWatch Logs envelope
/// calls this once per log event (one line each), which must not cost a fresh buffer every time.
#[inline(always)]
pub(crate) fn walk_lines<C: Classifier>(
    classifier: C,
    text: &[u8],
    ends: &mut [u32; MAX_ENDS],
    mut on_line: impl OnLine,
) {
    let mut w = Walker { ends, n: 0, pos: 0, odd: false };
    let mut chunks = text.chunks_exact(64);
    let mut base = 0usize;
    for chunk in &mut chunks {
        let chunk: &[u8; 64] = chunk.try_into().unwrap_or(&[b'A'; 64]);
        w.chunk(text, classifier.classify(chunk), base, C::POPCNT, &mut on_line);
        base += 64;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Padding that is neither a delimiter nor odd.
        let mut buf = [b'A'; 64];
        buf[..rest.len()].copy_from_slice(rest);
        w.chunk(text, classifier.classify(&buf), base, C::POPCNT, &mut on_line);
    }
    if w.pos < text.len() {
        w.emit(text, text.len(), &mut on_line);
    }
}

struct Walker<'e> {
    /// Field ends of the current line so far (offsets from its start).
    ends: &'e mut [u32; MAX_ENDS],
    /// Spaces seen in the current line (may exceed the room in `ends`).
    n: usize,
    /// Start of the current line.
    pos: usize,
    /// The current line holds an odd byte.
    odd: bool,
}

impl Walker<'_> {
    #[inline(always)]
    fn chunk(
        &mut self,
        text: &[u8],
        m: Masks,
        base: usize,
        popcnt: bool,
        on_line: &mut impl OnLine,
    ) {
        let (mut space, mut odd, mut newline) = (m.space, m.odd, m.newline);
        while newline != 0 {
            let i = newline.trailing_zeros();
            let below = (1u64 << i) - 1;
            self.spaces(space & below, base, popcnt);
            self.odd |= odd & below != 0;
            let through = below | (1u64 << i);
            space &= !through;
            odd &= !through;
            newline &= newline - 1;
            self.emit(text, base + i as usize, on_line);
            self.pos = base + i as usize + 1;
        }
        self.spaces(space, base, popcnt);
        self.odd |= odd != 0;
    }

    /// Records the spaces of `bits` (at `base`) as field ends of the current line; `popcnt`:
    /// the CPU has the instruction ([`Classifier::POPCNT`]).
    #[inline(always)]
    fn spaces(&mut self, mut bits: u64, base: usize, popcnt: bool) {
        // `base + bit - pos` is below the line's length; lines too long for u32 are `Other`.
        let rel = base.wrapping_sub(self.pos) as u32;
        // A local counter (not `self.n`, which the stores into `ends` would make the compiler
        // reload).
        let mut n = self.n;
        if let Some(room) = self.ends.get_mut(n..n + 64) {
            if popcnt {
                // Four ends per step, with no test per space: the slots past the count get junk
                // (`trailing_zeros` of nothing left), which nothing reads before the next spaces
                // or the line's end overwrite them. At most 64 bits: `(k + j) & 63` is `k + j`,
                // and spares a bounds check per store.
                let count = bits.count_ones() as usize;
                let mut k = 0;
                while k < count {
                    for j in 0..4 {
                        room[(k + j) & 63] = rel.wrapping_add(bits.trailing_zeros());
                        bits &= bits.wrapping_sub(1);
                    }
                    k += 4;
                }
                n += count;
            } else {
                // No population count (not in the x86_64 baseline): a test per space.
                let mut k = 0;
                while bits != 0 {
                    room[k & 63] = rel.wrapping_add(bits.trailing_zeros());
                    k += 1;
                    bits &= bits - 1;
                }
                n += k;
            }
        } else {
            // Near the room's end: count past it without storing (the line will be `Other`).
            while bits != 0 {
                if let Some(slot) = self.ends.get_mut(n) {
                    *slot = rel.wrapping_add(bits.trailing_zeros());
                }
                n += 1;
                bits &= bits - 1;
            }
        }
        self.n = n;
    }

    /// Hands over the line from `pos` to `end` and resets for the next one.
    #[inline(always)]
    fn emit(&mut self, text: &[u8], end: usize, on_line: &mut impl OnLine) {
        let line = &text[self.pos..end];
        if !self.odd && self.n < MAX_ENDS && line.len() < u32::MAX as usize {
            self.ends[self.n] = line.len() as u32;
            on_line.line(Line::Plain(line, &self.ends[..=self.n], &text[self.pos..]));
        } else {
            on_line.line(Line::Other(line));
        }
        self.n = 0;
        self.odd = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines_with<C: Classifier>(c: C, text: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u32>>)> {
        let mut out = Vec::new();
        walk_lines(c, text, &mut [0; MAX_ENDS], |l: Line<'_, '_>| match l {
            Line::Plain(l, e, _) => out.push((l.to_vec(), Some(e.to_vec()))),
            Line::Other(l) => out.push((l.to_vec(), None)),
        });
        out
    }

    /// The lines as every classifier this CPU can run sees them; they must agree.
    fn lines(text: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u32>>)> {
        let out = lines_with(Baseline, text);
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = Avx2::detect() {
            assert_eq!(lines_with(avx2, text), out, "AVX2 and baseline walks differ");
        }
        out
    }

    fn naive(text: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u32>>)> {
        let mut pieces: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        if pieces.last().is_some_and(|l| l.is_empty()) {
            pieces.pop();
        }
        pieces
            .into_iter()
            .map(|l| {
                let plain = l.iter().all(|b| (0x20..0x7f).contains(b))
                    && l.iter().filter(|b| **b == b' ').count() < MAX_ENDS;
                let ends = plain.then(|| {
                    let mut e: Vec<u32> =
                        (0..l.len()).filter(|i| l[*i] == b' ').map(|i| i as u32).collect();
                    e.push(l.len() as u32);
                    e
                });
                (l.to_vec(), ends)
            })
            .collect()
    }

    #[test]
    fn examples() {
        let e = |s: &[u8]| assert_eq!(lines(s), naive(s), "{:?}", String::from_utf8_lossy(s));
        e(b"");
        e(b"\n");
        e(b"\n\n");
        e(b"a b c");
        e(b"a b c\n");
        e(b"a b c\r\nd e\n");
        e(b"x\xffy z\nok line\n");
        e(&[b'x'; 200]);
        let long: Vec<u8> = (0..300).map(|i| if i % 7 == 0 { b' ' } else { b'z' }).collect();
        e(&long);
        let many: Vec<u8> = std::iter::repeat_n(&b"a "[..], 1500).flatten().copied().collect();
        e(&many);
        // Runs of 7, 8, 9, 15, 16, 17 and 64 spaces starting at every offset of a chunk (runs that
        // fill or cross a chunk, then lines that start right after them).
        for k in [7usize, 8, 9, 15, 16, 17, 64] {
            for shift in 0..64 {
                let mut t = vec![b'x'; shift];
                t.extend(std::iter::repeat_n(b' ', k));
                t.extend_from_slice(b"y\nz w\n");
                e(&t);
            }
        }
    }

    #[test]
    fn every_byte_value_at_every_offset_classifies_as_naive() {
        for b in 0..=255u8 {
            for i in 0..64 {
                let mut chunk = [b'a'; 64];
                chunk[i] = b;
                chunk[63 - i] = b;
                assert_eq!(classify(&chunk), classify_naive(&chunk), "byte {b:#x} at {i}");
                let values = value_masks_naive(&chunk);
                assert_eq!(Baseline.value_masks(&chunk), values, "byte {b:#x} at {i}");
                #[cfg(target_arch = "x86_64")]
                if let Some(avx2) = Avx2::detect() {
                    assert_eq!(avx2.classify(&chunk), classify_naive(&chunk), "byte {b:#x} at {i}");
                    assert_eq!(avx2.value_masks(&chunk), values, "byte {b:#x} at {i}");
                }
            }
        }
    }

    /// Addresses of every octet's length, at and past 255.
    const V4: &str = "(25[0-9]|2[0-4][0-9]|1?[0-9]{1,2})(\\.(25[0-9]|2[0-4][0-9]|1?[0-9]{1,2})){3}";

    /// `(a, b)` read by [`Classifier::ipv4_pair_at`] of every classifier this CPU runs (from
    /// `a b` followed by `after`), which must agree with [`crate::parse_ipv4`] of each.
    fn pair_agrees(a: &str, b: &str, after: &str) -> Result<(), TestCaseError> {
        let text = format!("{a} {b}{after}");
        let (ra, rb) = ((0, a.len()), (a.len() + 1, a.len() + 1 + b.len()));
        let want = [crate::parse_ipv4(a.as_bytes()), crate::parse_ipv4(b.as_bytes())];
        prop_assert_eq!(Baseline.ipv4_pair_at(text.as_bytes(), ra, rb), want, "{:?}", text);
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = Avx2::detect() {
            prop_assert_eq!(avx2.ipv4_pair_at(text.as_bytes(), ra, rb), want, "{:?}", text);
        }
        Ok(())
    }

    #[test]
    fn ipv4_pairs_are_parse_ipv4s() {
        let values = [
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "1.2.3.4",
            "192.168.100.200",
            "256.1.1.1",
            "1.256.1.1",
            "1.1.1.256",
            "300.1.1.1",
            "249.250.251.252",
            "199.99.9.0",
            "01.2.3.4",
            "1.02.3.4",
            "1.2.3.00",
            "1.2.3.040",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4.",
            "1234.1.1.1",
            "1.2.3.4444",
            "1.2.3.a",
            "1.2.3.-",
            "1.2:3.4",
            "2001:db8::1",
            "-",
            "",
            "1.2.3.4 ",
            "12.34.56.78",
            "123.123.123.123",
            "9.9.9.9",
        ];
        for a in values {
            for b in values {
                for after in ["", " 443 49152 6", "\n"] {
                    pair_agrees(a, b, after).unwrap();
                }
            }
        }
    }

    /// Every layout of [`IPV4_LAYOUTS`] (octets of 1 to 3 digits), with octets at and past their
    /// limits and with leading zeros, in either lane.
    #[test]
    fn ipv4_pairs_of_every_layout_are_parse_ipv4s() {
        let octets = ["0", "9", "10", "99", "100", "255", "256", "999", "00", "01", "000", "012"];
        for (i, w) in octets.iter().enumerate() {
            for x in octets {
                for y in octets {
                    for z in octets {
                        let a = format!("{w}.{x}.{y}.{z}");
                        // The other lane: a fixed address, or one of the others.
                        let b = format!("{z}.{y}.{x}.{}", octets[(i + 1) % octets.len()]);
                        pair_agrees(&a, "10.0.0.1", " 443").unwrap();
                        pair_agrees("192.168.0.1", &a, "").unwrap();
                        pair_agrees(&a, &b, "\n").unwrap();
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn ipv4_pair_agrees(
            a in prop_oneof![V4, "[0-9.]{1,16}"],
            b in prop_oneof![V4, "[0-9.]{1,16}", "[ -~]{0,16}"],
            after in "[ -~]{0,20}",
        ) {
            pair_agrees(&a, &b, &after)?;
        }

        #[test]
        fn classify_agrees(bytes in proptest::collection::vec(any::<u8>(), 64)) {
            let chunk: [u8; 64] = bytes.try_into().unwrap();
            prop_assert_eq!(classify(&chunk), classify_naive(&chunk));
            prop_assert_eq!(Baseline.value_masks(&chunk), value_masks_naive(&chunk));
            #[cfg(target_arch = "x86_64")]
            if let Some(avx2) = Avx2::detect() {
                prop_assert_eq!(avx2.classify(&chunk), classify_naive(&chunk));
                prop_assert_eq!(avx2.value_masks(&chunk), value_masks_naive(&chunk));
            }
        }

        #[test]
        fn string_stop_is_the_first_quote_backslash_or_odd_byte(
            text in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(0x7f), Just(b'a'), Just(b' '), any::<u8>()], 0..100),
            plain in 0usize..80,
        ) {
            // A run of plain bytes first, so stops fall at every offset of a chunk.
            let text = [vec![b'x'; plain], text].concat();
            let naive = text.iter().position(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b));
            prop_assert_eq!(string_stop(&text), naive);
        }

        #[test]
        fn walk_agrees_with_split(
            text in proptest::collection::vec(
                prop_oneof![Just(b' '), Just(b'\n'), Just(b'a'), Just(b'\r'), any::<u8>()], 0..400)
        ) {
            prop_assert_eq!(lines(&text), naive(&text));
        }
    }
}
