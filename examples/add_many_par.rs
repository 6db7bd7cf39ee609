//! Reproduces `addManyNumbers` / `addManyPar` (seed 001, "Using a Queue to Merge Multiple
//! Child Process Results"): two children each add up half a million random numbers and
//! put their sums on one queue; the parent takes both and prints the total.
//!
//! ```python
//! def addManyNumbers(numNumbers, q):
//!     s = 0
//!     for i in range(numNumbers):
//!         s = s + randint(1, 100)
//!     q.put(s)
//!
//! def addManyPar():
//!     totalNumNumbers = 1000000
//!     q = Queue()
//!     p1 = Process(target=addManyNumbers, args=(totalNumNumbers/2, q))
//!     p2 = Process(target=addManyNumbers, args=(totalNumNumbers/2, q))
//!     p1.start()
//!     p2.start()
//!     answerA = q.get()
//!     answerB = q.get()
//!     print "Sum:", answerA + answerB
//! ```
//!
//! ```text
//! Sum: 50498937
//! ```
//!
//! Which child's sum is `answer_a` is not determined (whichever finishes first); addition
//! does not care.

use std::hash::{BuildHasher, Hasher};

use multiproc::{Process, Queue};

/// A small xorshift generator seeded from std's randomly keyed hasher.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Rng(seed | 1)
    }

    /// `randint(lo, hi)`: inclusive at both ends.
    fn randint(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

fn add_many_numbers((num_numbers, q): (u64, Queue<u64>)) -> multiproc::Result<()> {
    let mut rng = Rng::new();
    let mut s = 0;
    for _ in 0..num_numbers {
        s += rng.randint(1, 100);
    }
    q.put(s)
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let total_num_numbers = 1_000_000;
    let q = Queue::new()?;
    let mut p1 = Process::new(add_many_numbers, (total_num_numbers / 2, q.clone()));
    let mut p2 = Process::new(add_many_numbers, (total_num_numbers / 2, q.clone()));
    p1.start()?;
    p2.start()?;
    let answer_a = q.get()?;
    let answer_b = q.get()?;
    println!("Sum: {}", answer_a + answer_b);
    p1.join()?;
    p2.join()?;
    Ok(())
}
