//! Reproduces the notebook's first program (seed 003, "notebook", cells In [5]–[10]):
//!
//! ```python
//! multiprocessing.cpu_count()
//!
//! def print_square(n):
//!     print(os.getpid())
//!     print("Square:",n*n)
//!
//! def print_cube(n):
//!     print(os.getpid())
//!     print("Cube:",n*n*n)
//!
//! p1 = multiprocessing.Process(target=print_cube,args=(3,))
//! p2 = multiprocessing.Process(target=print_square,args=(4,))
//! p1.start()
//! p2.start()
//! p1.join() #Waits the program until process is completed
//! p2.join()
//! print("Done")
//!
//! p1.is_alive()
//! ```
//!
//! Output (pids differ from run to run; the two children may interleave):
//!
//! ```text
//! 2
//! 4964
//! Cube: 27
//! 4967
//! Square: 16
//! Done
//! false
//! ```
//!
//! Run with `cargo run --example print_square_cube`.

use multiproc::Process;

fn print_square(n: i64) {
    println!("{}", std::process::id());
    println!("Square: {}", n * n);
}

fn print_cube(n: i64) {
    println!("{}", std::process::id());
    println!("Cube: {}", n * n * n);
}

fn main() -> multiproc::Result<()> {
    multiproc::init();

    println!("{}", multiproc::cpu_count());

    // Once p1 and p2 are started they cannot be started again: a second `start` is
    // `Error::AlreadyStarted`. To run them again, create new `Process` values.
    let mut p1 = Process::new(print_cube, 3);
    let mut p2 = Process::new(print_square, 4);

    p1.start()?;
    p2.start()?;
    p1.join()?; // waits until the process has completed
    p2.join()?;
    println!("Done"); // both p1 and p2 are complete here

    println!("{}", p1.is_alive());
    Ok(())
}
