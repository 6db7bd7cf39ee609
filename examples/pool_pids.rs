//! The notebook's "Pooling between the processes": `square` prints its input and the pid of
//! the process running it — first in a plain loop (one pid), then with `Pool().map` (the
//! pool's worker pids, in whatever order the workers get to them), and the result list.
//!
//! ```python
//! def square(n):
//!     print(n,":",os.getpid())
//!     return n*n
//! mylist=[1,2,3,4,5]
//! result=[]
//! for num in mylist:
//!     result.append(square(num))
//! p = multiprocessing.Pool()
//! result = p.map(square,mylist)
//! result   # [1, 4, 9, 16, 25]
//! ```
//!
//! Run with `cargo run --example pool_pids`.

use multiproc::Pool;

fn square(n: u64) -> u64 {
    println!("{} : {}", n, std::process::id());
    n * n
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let mylist = vec![1, 2, 3, 4, 5];

    let mut result = Vec::new();
    for &num in &mylist {
        result.push(square(num));
    }
    println!();

    // Pool() uses cpu_count() processes; chunks of one item so every worker gets some.
    let p = Pool::default();
    let result = p.map_chunked(square, mylist, 1)?;
    println!("{result:?}");
    Ok(())
}
