//! Reproduces the slides' `rand_string` program (seed 002, "The Process class"): four
//! processes each put a random string of length 5 on a shared `Queue`; the parent joins
//! them, then takes the four results off the queue.
//!
//! ```python
//! def rand_string(length, output):
//!     rand_str = ''.join(random.choice(string.ascii_lowercase + string.ascii_uppercase
//!                                      + string.digits) for i in range(length))
//!     output.put(rand_str)
//!
//! output = mp.Queue()
//! processes = [mp.Process(target=rand_string, args=(5, output)) for x in range(4)]
//! for p in processes:
//!     p.start()
//! for p in processes:
//!     p.join()
//! results = [output.get() for p in processes]
//! print(results)
//! ```
//!
//! ```text
//! ["yzQfA", "PQpTd", "SHZYV", "lVLTd"]
//! ```
//!
//! Joining the children before taking their results is safe here: `put` returns once the
//! string is in the queue's shared memory (CPython's `Queue` can deadlock in this pattern
//! when the items are large, because its feeder thread must flush them first).

use std::hash::{BuildHasher, Hasher};

use multiproc::{Process, Queue};

const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A random number from std's randomly keyed hasher (no extra dependency needed).
fn random(i: usize) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(i);
    h.finish()
}

fn rand_string((length, output): (usize, Queue<String>)) -> multiproc::Result<()> {
    let rand_str: String = (0..length)
        .map(|i| CHARS[(random(i) % CHARS.len() as u64) as usize] as char)
        .collect();
    output.put(rand_str)
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let output = Queue::new()?;
    let mut processes: Vec<Process> = (0..4)
        .map(|_| Process::new(rand_string, (5, output.clone())))
        .collect();
    for p in &mut processes {
        p.start()?;
    }
    for p in &processes {
        p.join()?;
    }
    let results = processes
        .iter()
        .map(|_| output.get())
        .collect::<multiproc::Result<Vec<String>>>()?;
    println!("{results:?}");
    Ok(())
}
