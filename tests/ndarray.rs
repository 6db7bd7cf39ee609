//! The `ndarray` feature across processes: arrays of every plain number type and random
//! shapes (1-D, 2-D, dynamic; row-major, column-major and strided) round-trip through queues,
//! pipes and pool tasks (property tests); `RawArray` and `SharedMemory` seen in place as
//! ndarray views, written by child processes and read by the parent.
#![cfg(feature = "ndarray")]

mod common;

use common::echo::{self, Echoed};

use multiproc::ndarray::{s, Array, Array1, Array2, ArrayD, Axis, IxDyn, ShapeBuilder};
use multiproc::shared_memory::SharedMemory;
use multiproc::{Error, Pool, RawArray};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone)]
enum Item {
    F64(Array2<f64>),
    F32(Array1<f32>),
    U8(ArrayD<u8>),
    I16(Array2<i16>),
    U32(ArrayD<u32>),
    I64(Array1<i64>),
    /// An array inside a struct, beside other fields.
    Frame {
        id: u64,
        pixels: Array2<u16>,
        label: String,
    },
}

impl Echoed for Item {
    fn same(&self, other: &Self) -> bool {
        same(self, other)
    }
}

/// Bit-exact equality (floats by their bits, so NaN payloads count), shapes included.
fn same(a: &Item, b: &Item) -> bool {
    fn bits<T: Copy, D: multiproc::ndarray::Dimension, U: PartialEq>(
        x: &Array<T, D>,
        y: &Array<T, D>,
        f: impl Fn(T) -> U,
    ) -> bool {
        x.shape() == y.shape() && x.iter().zip(y.iter()).all(|(&p, &q)| f(p) == f(q))
    }
    use Item::*;
    match (a, b) {
        (F64(x), F64(y)) => bits(x, y, f64::to_bits),
        (F32(x), F32(y)) => bits(x, y, f32::to_bits),
        (U8(x), U8(y)) => x == y,
        (I16(x), I16(y)) => x == y,
        (U32(x), U32(y)) => x == y,
        (I64(x), I64(y)) => x == y,
        (
            Frame { id, pixels, label },
            Frame {
                id: i2,
                pixels: p2,
                label: l2,
            },
        ) => id == i2 && pixels == p2 && label == l2,
        _ => false,
    }
}

/// Random numbers from a seed (xorshift), fast enough for 4 MiB per case.
fn rand(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// A random 2-D array of `rows × cols`, in row-major order, column-major order, or as a
/// transposed or strided copy (`layout` picks), so that every layout is sent.
fn matrix<T: Clone>(rows: usize, cols: usize, layout: u8, mut f: impl FnMut() -> T) -> Array2<T> {
    match layout % 4 {
        0 => Array2::from_shape_simple_fn((rows, cols), f),
        1 => Array2::from_shape_simple_fn((rows, cols).f(), f),
        2 => Array2::from_shape_simple_fn((cols, rows), f).reversed_axes(),
        _ => {
            let wide = Array2::from_shape_simple_fn((rows, 2 * cols), &mut f);
            wide.slice_move(s![.., ..;2])
        }
    }
}

/// An item of kind `kind` holding about `bytes` bytes, of a random shape.
fn make(kind: u8, bytes: usize, seed: u64, layout: u8) -> Item {
    let mut r = rand(seed);
    let mut split = |n: usize| -> (usize, usize) {
        // A random factor pair near n (rows may be 0).
        let rows = if n == 0 {
            (r() % 3) as usize
        } else {
            1 + (r() as usize % n.min(64))
        };
        (rows, n.checked_div(rows).unwrap_or(0))
    };
    let mut g = rand(seed ^ 0x9e37);
    match kind % 7 {
        0 => {
            let (a, b) = split(bytes / 8);
            Item::F64(matrix(a, b, layout, || f64::from_bits(g())))
        }
        1 => Item::F32(Array1::from_shape_simple_fn(bytes / 4, || {
            f32::from_bits(g() as u32)
        })),
        2 => {
            // 1 to 4 dimensions.
            let nd = 1 + (seed % 4) as usize;
            let mut dims = vec![1usize; nd];
            let mut left = bytes.max(1);
            for d in dims.iter_mut().take(nd - 1) {
                *d = 1 + (g() as usize % 8);
                left /= *d;
            }
            dims[nd - 1] = left;
            Item::U8(ArrayD::from_shape_simple_fn(IxDyn(&dims), || g() as u8))
        }
        3 => {
            let (a, b) = split(bytes / 2);
            Item::I16(matrix(a, b, layout, || g() as i16))
        }
        4 => {
            let a = ArrayD::from_shape_simple_fn(IxDyn(&[bytes / 4]), || g() as u32);
            Item::U32(a)
        }
        5 => Item::I64(Array1::from_shape_simple_fn(bytes / 8, || g() as i64)),
        _ => {
            let (a, b) = split(bytes / 2);
            Item::Frame {
                id: seed,
                pixels: matrix(a, b, layout, || g() as u16),
                label: format!("frame {seed}"),
            }
        }
    }
}

/// Items of every kind, 0 to 4 MiB (small sizes drawn often too), every layout.
fn items() -> impl Strategy<Value = Item> {
    let size = prop_oneof![0usize..64, 0usize..(64 << 10), 0usize..=(4 << 20)];
    (any::<u8>(), size, any::<u64>(), any::<u8>()).prop_map(|(k, n, s, l)| make(k, n, s, l))
}

#[test]
fn arrays_of_random_shapes_round_trip_bit_exact_through_a_queue() {
    echo::through_a_queue(items(), 40);
}

#[test]
fn arrays_of_random_shapes_round_trip_bit_exact_through_a_pipe() {
    echo::through_a_pipe(items(), 30);
}

#[test]
fn arrays_round_trip_as_pool_arguments_and_results() {
    multiproc::init();
    let pool = Pool::new(1).unwrap();
    echo::through_a_pool(&pool, items(), 15);
    pool.close();
    pool.join().unwrap();
}

// --- views of shared memory --------------------------------------------------------------

const ROWS: usize = 24;
const COLS: usize = 1000;

/// A pool task: fills row `i` of the shared matrix through a mutable view of that row only.
fn fill_row((m, i): (RawArray<f64>, usize)) -> u32 {
    // SAFETY: each task writes its own row, and no process reads the matrix until `map`
    // has returned (every row written).
    let mut row = unsafe { m.as_array_view_mut(i * COLS, COLS) }.unwrap();
    for (j, x) in row.iter_mut().enumerate() {
        *x = (i * COLS + j) as f64 * 0.5;
    }
    std::process::id()
}

#[test]
fn pool_workers_fill_rows_of_a_raw_array_through_views() {
    multiproc::init();
    let m = RawArray::<f64>::new(ROWS * COLS).unwrap();
    let pool = Pool::new(3).unwrap();
    let pids = pool
        .map(fill_row, (0..ROWS).map(|i| (m.clone(), i)))
        .unwrap();
    assert!(pids.iter().all(|&p| p != std::process::id()));
    // SAFETY: every writer has finished (map returned); nobody writes any more.
    let v = unsafe { m.as_array_view(0, (ROWS, COLS)) }.unwrap();
    let want = Array2::from_shape_fn((ROWS, COLS), |(i, j)| (i * COLS + j) as f64 * 0.5);
    assert_eq!(v, want);
    // The safe copy agrees, and a column-major view sees the same memory transposed.
    assert_eq!(m.to_ndarray((ROWS, COLS)).unwrap(), want);
    // SAFETY: as above.
    let t = unsafe { m.as_array_view(0, (COLS, ROWS).f()) }.unwrap();
    assert_eq!(t, want.t());
    pool.close();
    pool.join().unwrap();
}

/// A child: writes a block of a named shared memory block through a view, then tells the
/// parent (a result the parent waits for orders the writes before its reads).
fn write_block((name, offset, value): (String, usize, i32)) -> i32 {
    let shm = SharedMemory::attach(&name).unwrap();
    // SAFETY: the parent reads the block only after this function has returned; nobody else
    // writes these bytes, and nobody truncates the block meanwhile.
    {
        let mut b = unsafe { shm.as_array_view_mut::<i32, _, _>(offset, (4, 8)) }.unwrap();
        for ((i, j), x) in b.indexed_iter_mut() {
            *x = value + (i * 8 + j) as i32;
        }
    }
    // SAFETY: as above (the view reads what this process just wrote).
    let again = unsafe { shm.as_array_view::<i32, _, _>(offset, 32) }.unwrap();
    again.sum()
}

#[test]
fn children_write_a_shared_memory_block_through_views() {
    multiproc::init();
    let shm = SharedMemory::create(None, 4 * 64 + 16).unwrap();
    let pool = Pool::new(2).unwrap();
    // Two children, each its own half (from byte 16, then byte 16 + 128).
    let sums = pool
        .map(
            write_block,
            [
                (shm.name().to_string(), 16, 100),
                (shm.name().to_string(), 16 + 128, -100),
            ],
        )
        .unwrap();
    assert_eq!(sums, vec![32 * 100 + 496, -32 * 100 + 496]);
    // SAFETY: both writers are done (map returned); nobody writes or truncates now.
    let v = unsafe { shm.as_array_view::<i32, _, _>(16, (2, 4, 8)) }.unwrap();
    assert_eq!(v[[0, 0, 0]], 100);
    assert_eq!(v[[0, 3, 7]], 131);
    assert_eq!(v[[1, 0, 0]], -100);
    assert_eq!(v.index_axis(Axis(0), 1).sum(), -32 * 100 + 496);
    let mut bytes = vec![0u8; 16];
    shm.read_at(0, &mut bytes).unwrap();
    assert_eq!(bytes, vec![0; 16], "bytes before the views untouched");
    pool.close();
    pool.join().unwrap();
    shm.unlink().unwrap();
}

#[test]
fn views_outside_the_memory_or_misaligned_are_refused() {
    multiproc::init();
    let a = RawArray::<u16>::new(10).unwrap();
    // SAFETY (every view below): nothing else has `a` or the block.
    unsafe {
        assert!(a.as_array_view(0, (2, 5)).is_ok());
        assert!(matches!(
            a.as_array_view(1, (2, 5)),
            Err(Error::InvalidOperation(_))
        ));
        assert!(a.as_array_view_mut(11, 0).is_err());
        assert!(a.as_array_view(0, (usize::MAX, 2)).is_err());
        assert!(a.as_array_view(10, 0).unwrap().is_empty());
    }
    assert!(a.to_ndarray((3, 3)).is_err());
    let shm = SharedMemory::create(None, 64).unwrap();
    unsafe {
        assert!(shm.as_array_view::<f64, _, _>(0, 8).is_ok());
        assert!(
            shm.as_array_view::<f64, _, _>(8, 8).is_err(),
            "past the end"
        );
        assert!(shm.as_array_view::<f64, _, _>(4, 2).is_err(), "misaligned");
        assert!(shm.as_array_view_mut::<u8, _, _>(63, (1, 1)).is_ok());
    }
    shm.unlink().unwrap();
}
