//! The interface ids of one (hour, source) key: one id inline, else a sorted vector.

/// Interface ids of one key: sorted, deduplicated, at most the cap (the lowest kept).
#[derive(Debug, Clone)]
pub(crate) enum Interfaces {
    None,
    /// One id of at most [`INLINE_ID`] bytes, stored in the key itself: a source address belongs
    /// to one network interface (`eni-` and 17 hex digits = 21 bytes), so this is nearly every key.
    One {
        len: u8,
        bytes: [u8; INLINE_ID],
    },
    Many(Vec<Box<[u8]>>),
}

/// Longest interface id kept inline.
const INLINE_ID: usize = 23;

impl Interfaces {
    pub(crate) fn len(&self) -> usize {
        match self {
            Interfaces::None => 0,
            Interfaces::One { .. } => 1,
            Interfaces::Many(v) => v.len(),
        }
    }

    /// Calls `f` with every id, in byte order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&[u8])) {
        match self {
            Interfaces::None => {}
            Interfaces::One { len, bytes } => f(&bytes[..usize::from(*len)]),
            Interfaces::Many(v) => v.iter().for_each(|b| f(b)),
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, id: &[u8], cap: usize) {
        match self {
            Interfaces::None if cap > 0 && id.len() <= INLINE_ID => {
                let mut bytes = [0; INLINE_ID];
                bytes[..id.len()].copy_from_slice(id);
                // Cannot truncate: id.len() <= INLINE_ID < 256.
                *self = Interfaces::One { len: id.len() as u8, bytes };
            }
            Interfaces::One { len, bytes } if bytes[..usize::from(*len)] == *id => {}
            Interfaces::None | Interfaces::One { .. } => {
                let mut v: Vec<Box<[u8]>> = Vec::new();
                self.for_each(|b| v.push(b.into()));
                *self = Interfaces::Many(v);
                self.add(id, cap);
            }
            Interfaces::Many(v) => {
                if let Err(pos) = v.binary_search_by(|x| (**x).cmp(id)) {
                    if pos < cap {
                        v.insert(pos, id.into());
                        v.truncate(cap);
                    }
                }
            }
        }
    }
}
