//! Reproduces `greet2` / `sendName2` (seed 001, "Queue Exercise Solution"): the parent
//! sends five names, one at a time after a random pause, to a child that waits for each.
//!
//! ```python
//! def greet2(q):
//!     for i in range(5):
//!         print
//!         print "(child process) Waiting for name", i
//!         name = q.get()
//!         print "(child process) Well, hi", name
//!
//! def sendName2():
//!     q = Queue()
//!     p1 = Process(target=greet2, args=(q,))
//!     p1.start()
//!     for i in range(5):
//!         time.sleep(randint(1,4))
//!         print "(main process) Ok, I'll send the name"
//!         q.put("George"+str(i))
//! ```
//!
//! ```text
//!
//! (child process) Waiting for name 0
//! (main process) Ok, I'll send the name
//! (child process) Well, hi George0
//!
//! (child process) Waiting for name 1
//! ...
//! (child process) Well, hi George4
//! ```
//!
//! The seed sleeps 1–4 s per name; here each pause is 1–4 ticks of `SEND_NAME_TICK_MS`
//! milliseconds (default 200; 1000 gives the seed's timing).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use multiproc::{Process, Queue};

fn greet2(q: Queue<String>) -> multiproc::Result<()> {
    for i in 0..5 {
        println!();
        println!("(child process) Waiting for name {i}");
        let name = q.get()?;
        println!("(child process) Well, hi {name}");
    }
    Ok(())
}

/// `randint(1, 4)`, from std's randomly keyed hasher.
fn randint_1_4() -> u64 {
    let h = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    1 + h % 4
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let tick = std::env::var("SEND_NAME_TICK_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let q = Queue::new()?;
    let mut p1 = Process::new(greet2, q.clone());
    p1.start()?;
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(randint_1_4() * tick));
        println!("(main process) Ok, I'll send the name");
        q.put(format!("George{i}"))?;
    }
    p1.join()?;
    Ok(())
}
