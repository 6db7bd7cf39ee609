//! The items of the codec's property tests (tests/codec.rs, tests/heap.rs): vectors of every
//! plain number type, strings, byte strings, and these inside structs, tuples and enums,
//! of random sizes, with bit-exact equality.

use super::echo::Echoed;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Item {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Text(String),
    Bytes(ByteBuf),
    /// Numbers inside a struct inside an enum.
    Record {
        id: u64,
        data: Vec<f64>,
        name: String,
    },
    /// Inside a tuple, next to a boxed slice.
    Tuple((u32, Vec<i16>, Box<[u64]>)),
    Stop,
}

impl Echoed for Item {
    fn same(&self, other: &Self) -> bool {
        same(self, other)
    }
}

/// Bit-exact equality (floats by their bits, so NaN payloads count).
pub fn same(a: &Item, b: &Item) -> bool {
    fn f32s(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
    fn f64s(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }
    use Item::*;
    match (a, b) {
        (U8(x), U8(y)) => x == y,
        (U16(x), U16(y)) => x == y,
        (U32(x), U32(y)) => x == y,
        (U64(x), U64(y)) => x == y,
        (I8(x), I8(y)) => x == y,
        (I16(x), I16(y)) => x == y,
        (I32(x), I32(y)) => x == y,
        (I64(x), I64(y)) => x == y,
        (F32(x), F32(y)) => f32s(x) == f32s(y),
        (F64(x), F64(y)) => f64s(x) == f64s(y),
        (Text(x), Text(y)) => x == y,
        (Bytes(x), Bytes(y)) => x == y,
        (
            Record { id, data, name },
            Record {
                id: i2,
                data: d2,
                name: n2,
            },
        ) => id == i2 && f64s(data) == f64s(d2) && name == n2,
        (Tuple((a1, b1, c1)), Tuple((a2, b2, c2))) => a1 == a2 && b1 == b2 && c1 == c2,
        (Stop, Stop) => true,
        _ => false,
    }
}

/// Random bytes from a seed (xorshift): fast enough for 4 MiB per case.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

pub fn nums<T: bytemuck::Pod>(seed: u64, size: usize) -> Vec<T> {
    let n = size / std::mem::size_of::<T>();
    let b = bytes(seed, n * std::mem::size_of::<T>());
    let mut v = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&b);
    v
}

/// A string of about `size` bytes with one-, two-, three- and four-byte characters.
pub fn text(seed: u64, size: usize) -> String {
    const CHARS: [char; 6] = ['a', 'Z', '7', 'é', '€', '🦀'];
    let mut s = String::with_capacity(size + 4);
    for b in bytes(seed, size) {
        if s.len() >= size {
            break;
        }
        s.push(CHARS[b as usize % CHARS.len()]);
    }
    s
}

pub fn make(kind: u8, size: usize, seed: u64) -> Item {
    match kind % 14 {
        0 => Item::U8(nums(seed, size)),
        1 => Item::U16(nums(seed, size)),
        2 => Item::U32(nums(seed, size)),
        3 => Item::U64(nums(seed, size)),
        4 => Item::I8(nums(seed, size)),
        5 => Item::I16(nums(seed, size)),
        6 => Item::I32(nums(seed, size)),
        7 => Item::I64(nums(seed, size)),
        8 => Item::F32(nums(seed, size)),
        9 => Item::F64(nums(seed, size)),
        10 => Item::Text(text(seed, size)),
        11 => Item::Bytes(ByteBuf::from(bytes(seed, size))),
        12 => Item::Record {
            id: seed,
            data: nums(seed, size),
            name: text(seed ^ 1, size % 100),
        },
        _ => Item::Tuple((
            seed as u32,
            nums(seed, size / 2),
            nums::<u64>(seed ^ 2, size / 2).into_boxed_slice(),
        )),
    }
}

/// Items of every kind, of sizes from 0 to 4 MiB (small sizes drawn often too).
pub fn items() -> impl Strategy<Value = Item> {
    let size = prop_oneof![0usize..64, 0usize..(64 << 10), 0usize..=(4 << 20)];
    (any::<u8>(), size, any::<u64>()).prop_map(|(k, n, s)| make(k, n, s))
}
