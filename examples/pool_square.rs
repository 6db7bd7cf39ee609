//! The slides' Pool class ("Multiprocessing in Python"): `apply`, `map`, `apply_async` and
//! `map_async` with `square` and `cube` on a pool of 4 processes.
//!
//! ```python
//! pool = mp.Pool(processes=4)
//! results = [pool.apply(square, args=(x,)) for x in range(1,7)]
//! print(results)
//! results = pool.map(square, range(1,7))
//! print(results)
//! results = [pool.apply_async(cube, args=(x,)) for x in range(1,7)]
//! output = [p.get() for p in results]
//! print(output)
//! ```
//!
//! Run with `cargo run --example pool_square`.

use multiproc::Pool;

fn square(x: i64) -> i64 {
    x * x
}

fn cube(x: i64) -> i64 {
    x * x * x
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let pool = Pool::new(4)?;

    // apply: one call at a time, each waits for its result (so the results are in order).
    let results: Vec<i64> = (1..7)
        .map(|x| pool.apply(square, x))
        .collect::<multiproc::Result<_>>()?;
    println!("{results:?}");

    // map: the whole range at once, results in input order.
    let results = pool.map(square, 1..7)?;
    println!("{results:?}");

    // apply_async: start them all, then collect the answers.
    let results: Vec<_> = (1..7).map(|x| pool.apply_async(cube, x)).collect();
    let output: Vec<i64> = results
        .iter()
        .map(|p| p.get())
        .collect::<multiproc::Result<_>>()?;
    println!("{output:?}");

    // map_async: the same for a whole list.
    let r = pool.map_async(cube, 1..7);
    println!("{:?}", r.get()?);

    pool.close();
    pool.join()
}
