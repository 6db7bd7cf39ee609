//! Reproduces `greet` / `sendName` (seed 001, "Communication"): a child blocks on
//! `q.get()` until the parent, after a pause, puts a name on the queue.
//!
//! ```python
//! def greet(q):
//!     print "(child process) Waiting for name..."
//!     name = q.get()
//!     print "(child process) Well, hi", name
//!
//! def sendName():
//!     q = Queue()
//!     p1 = Process(target=greet, args=(q,))
//!     p1.start()
//!     time.sleep(5) # wait for 5 seconds
//!     print "(parent process) Ok, I'll send the name"
//!     q.put("Jimmy")
//! ```
//!
//! ```text
//! (child process) Waiting for name...
//! (parent process) Ok, I'll send the name
//! (child process) Well, hi Jimmy
//! ```
//!
//! The seed waits 5 s; set `SEND_NAME_SECS` to change it (default 1, to keep the example
//! quick). The child sleeps in the kernel while it waits: it uses no CPU.

use std::time::Duration;

use multiproc::{Process, Queue};

fn greet(q: Queue<String>) -> multiproc::Result<()> {
    println!("(child process) Waiting for name...");
    let name = q.get()?;
    println!("(child process) Well, hi {name}");
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let secs = std::env::var("SEND_NAME_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let q = Queue::new()?;
    let mut p1 = Process::new(greet, q.clone());
    p1.start()?;
    std::thread::sleep(Duration::from_secs(secs));
    println!("(parent process) Ok, I'll send the name");
    q.put("Jimmy".to_string())?;
    p1.join()?; // Python waits for non-daemon children at exit; we say it explicitly
    Ok(())
}
