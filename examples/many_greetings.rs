//! Reproduces `sayHi2` / `manyGreetings` (manyGreetings.py) from the CSinParallel module
//! "Parallel Processes in Python" (seed 001, "Creating multiple child processes"):
//!
//! ```python
//! def sayHi2(n):
//!     print "Hi", n, "from process", current_process().pid
//!
//! def manyGreetings():
//!     print "Hi from process", current_process().pid, "(main process)"
//!     name = "Jimmy"
//!     p1 = Process(target=sayHi2, args=(name,))
//!     p2 = Process(target=sayHi2, args=(name,))
//!     p3 = Process(target=sayHi2, args=(name,))
//!     p1.start()
//!     p2.start()
//!     p3.start()
//! ```
//!
//! Output (pids and the order of the children's lines vary):
//!
//! ```text
//! Hi from process 3988 (main process)
//! Hi Jimmy from process 4828
//! Hi Jimmy from process 4829
//! Hi Jimmy from process 4830
//! ```

use multiproc::{current_process, Process};

fn say_hi2(n: String) {
    println!("Hi {} from process {}", n, current_process().pid());
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    println!("Hi from process {} (main process)", current_process().pid());
    let name = "Jimmy".to_string();
    let mut p1 = Process::new(say_hi2, name.clone());
    let mut p2 = Process::new(say_hi2, name.clone());
    let mut p3 = Process::new(say_hi2, name);
    p1.start()?;
    p2.start()?;
    p3.start()?;
    Ok(())
}
