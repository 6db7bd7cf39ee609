//! Reproduces the hole diggers exercise (seed 001, "You try it: Digging Holes" and its
//! solution): ten workers, A to J, each in its own process, announce the hole they dig;
//! a `Lock` makes them take turns at standard output.
//!
//! ```python
//! def dig(workerName, holeID, lock):
//!     lock.acquire()
//!     print "Hiddy-ho! I'm worker", workerName, "and today I have to dig hole", holeID
//!     lock.release()
//!
//! def assignDiggers():
//!     lock = Lock()
//!     workerNames = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"]
//!     for holeID in range(len(workerNames)):
//!         Process(target=dig, args=(workerNames[holeID], holeID, lock)).start()
//! ```
//!
//! The order is arbitrary, for example:
//!
//! ```text
//! Hiddy-ho! I'm worker G and today I have to dig hole 6
//! Hiddy-ho! I'm worker A and today I have to dig hole 0
//! Hiddy-ho! I'm worker C and today I have to dig hole 2
//! ...
//! ```

use multiproc::{Lock, Process};

fn dig((worker_name, hole_id, lock): (String, usize, Lock)) -> multiproc::Result<()> {
    lock.acquire()?;
    println!("Hiddy-ho! I'm worker {worker_name} and today I have to dig hole {hole_id}");
    lock.release()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let lock = Lock::new()?;
    let worker_names = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"];
    let mut diggers = Vec::new();
    for (hole_id, name) in worker_names.iter().enumerate() {
        let mut p = Process::new(dig, (name.to_string(), hole_id, lock.clone()));
        p.start()?;
        diggers.push(p);
    }
    // Python's non-daemon children are joined at exit; here we say so.
    for p in diggers {
        p.join()?;
    }
    Ok(())
}
