//! The worksheet "Process Pools": `printer` takes one argument — a tuple of a string and a
//! count — and a pool of 2 processes maps it over two tuples.
//!
//! ```python
//! def printer(args):
//!     stringToPrint, numTimes = args
//!     for i in range(numTimes):
//!         print(stringToPrint)
//! def main():
//!     p = multiprocessing.Pool(processes=2)
//!     p.map(printer, [("She loves me.", 10), ("She loves me not.", 10)])
//! ```
//!
//! The two workers print at the same time, so the lines of the two strings interleave
//! differently from run to run. `starmap` is the same call under Python's other name.
//!
//! Run with `cargo run --example pool_printer`.

use multiproc::Pool;

fn printer((string_to_print, num_times): (String, usize)) {
    for _ in 0..num_times {
        println!("{string_to_print}");
        // A tiny pause, so the two workers' lines visibly interleave.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let p = Pool::new(2)?;
    let tuples = vec![
        ("She loves me.".to_string(), 10),
        ("She loves me not.".to_string(), 10),
    ];
    p.map(printer, tuples.clone())?;
    println!("--- and again with starmap ---");
    p.starmap(printer, tuples)?;
    Ok(())
}
