//! Reproduces `slowpoke` / `haveToWait` (seed 001, "Coordination of Processes: The Join
//! Method"): the parent waits with `join` for a slow child; the child takes a `Lock`
//! around its printing.
//!
//! ```python
//! def slowpoke(lock):
//!     time.sleep(10)
//!     lock.acquire()
//!     print "Slowpoke: Ok, I'm coming"
//!     lock.release()
//!
//! def haveToWait():
//!     lock = Lock()
//!     p1 = Process(target=slowpoke, args=(lock,))
//!     p1.start()
//!     print "Waiter: Any day now..."
//!     p1.join()
//!     print "Waiter: Finally! Geez."
//! ```
//!
//! ```text
//! Waiter: Any day now...
//! Slowpoke: Ok, I'm coming
//! Waiter: Finally! Geez.
//! ```
//!
//! The seed sleeps 10 s; set `SLOWPOKE_SECS` to change it (default 2, to keep the
//! example quick).

use std::time::Duration;

use multiproc::{Lock, Process};

fn slowpoke((lock, secs): (Lock, u64)) -> multiproc::Result<()> {
    std::thread::sleep(Duration::from_secs(secs));
    lock.acquire()?;
    println!("Slowpoke: Ok, I'm coming");
    lock.release()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let secs = std::env::var("SLOWPOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let lock = Lock::new()?;
    let mut p1 = Process::new(slowpoke, (lock.clone(), secs));
    p1.start()?;
    println!("Waiter: Any day now...");
    p1.join()?;
    println!("Waiter: Finally! Geez.");
    Ok(())
}
