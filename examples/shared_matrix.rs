//! Pool workers fill the rows of one shared matrix in place; the parent then reads it as an
//! ndarray matrix (the `ndarray` feature). Python's version of the pattern:
//!
//! ```python
//! shm = shared_memory.SharedMemory(create=True, size=rows * cols * 8)
//! def fill(i):
//!     m = np.ndarray((rows, cols), dtype=np.float64, buffer=shared_memory.SharedMemory(name).buf)
//!     m[i, :] = ...
//! pool.map(fill, range(rows))
//! ```
//!
//! Here the matrix is a [`RawArray`]: anonymous shared memory, nothing left in /dev/shm.
//! Each task views only its own row, mutably; the parent views the whole matrix only after
//! `map` has returned. Those two facts are what make the `unsafe` views sound (see
//! `RawArray::as_array_view_mut`): no element is written while another process reads or
//! writes it.
//!
//! Run with `cargo run --release --features ndarray --example shared_matrix`.

use multiproc::ndarray::{Array1, Array2, Axis};
use multiproc::{Pool, RawArray};

const ROWS: usize = 200;
const COLS: usize = 300;

/// Row `i` of the matrix: `m[i][j] = i * j + 0.5`.
fn row(i: usize) -> Array1<f64> {
    Array1::from_shape_fn(COLS, |j| (i * j) as f64 + 0.5)
}

/// A pool task: computes row `i` and writes it into the shared matrix in place.
fn fill_row((matrix, i): (RawArray<f64>, usize)) -> u32 {
    // SAFETY: this task is the only one that touches row `i`, and the parent reads the
    // matrix only after every task has finished.
    let mut view = unsafe { matrix.as_array_view_mut(i * COLS, COLS) }.expect("row in range");
    view.assign(&row(i));
    std::process::id()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let matrix = RawArray::<f64>::new(ROWS * COLS)?;
    let pool = Pool::new(4)?;
    let mut pids = pool.map(fill_row, (0..ROWS).map(|i| (matrix.clone(), i)))?;
    pool.close();
    pool.join()?;
    pids.sort_unstable();
    pids.dedup();

    // SAFETY: every worker has finished (map returned): nobody writes the matrix any more.
    let m = unsafe { matrix.as_array_view(0, (ROWS, COLS)) }?;
    let expected = Array2::from_shape_fn((ROWS, COLS), |(i, j)| (i * j) as f64 + 0.5);
    println!(
        "matrix {ROWS} x {COLS} filled in place by {} worker processes",
        pids.len()
    );
    println!("every element as expected: {}", m == expected);
    println!("sum of row 10: {}", m.index_axis(Axis(0), 10).sum());
    println!("sum of all: {}", m.sum());
    Ok(())
}
