//! Reproduces `sayHi4` / `manyGreetings4` (seed 001, "Using a Lock to Control Printing"):
//! ten processes greet, taking turns at standard output through one shared `Lock` — the
//! conch shell of the seed's analogy. The lock is created in the parent and passed to
//! each child, so they all hold the *same* lock.
//!
//! ```python
//! def sayHi4(lock, name):
//!     lock.acquire()
//!     print "Hi", name, "from process", current_process().pid
//!     lock.release()
//!
//! def manyGreetings4():
//!     lock1 = Lock()
//!     print "Hi from process", current_process().pid, "(main process)"
//!     for i in range(10):
//!         Process(target=sayHi4, args=(lock1, "p"+str(i))).start()
//! ```
//!
//! ```text
//! Hi from process 3988 (main process)
//! Hi p3 from process 5236
//! Hi p0 from process 5164
//! ...                       (order arbitrary, lines never mixed)
//! ```

use multiproc::{current_process, Lock, Process};

fn say_hi4((lock, name): (Lock, String)) -> multiproc::Result<()> {
    let _conch = lock.lock()?;
    println!("Hi {name} from process {}", current_process().pid());
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let lock1 = Lock::new()?;
    println!("Hi from process {} (main process)", current_process().pid());
    let mut ps = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(say_hi4, (lock1.clone(), format!("p{i}")));
        p.start()?;
        ps.push(p);
    }
    for p in ps {
        p.join()?;
    }
    Ok(())
}
