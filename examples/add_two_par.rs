//! Reproduces `addTwoNumbers` / `addTwoPar` (seed 001, "Obtaining a Result from a Single
//! Child"): the parent reads two numbers, a child adds them and puts the sum on a queue,
//! the parent gets it and prints it.
//!
//! ```python
//! def addTwoNumbers(a, b, q):
//!     # sleep(5) # In case you want to slow things down to see what is happening.
//!     q.put(a+b)
//!
//! def addTwoPar():
//!     x = input("Enter first number: ")
//!     y = input("Enter second number: ")
//!     q = Queue()
//!     p1 = Process(target=addTwoNumbers, args=(x, y, q))
//!     p1.start()
//!     # p1.join()
//!     result = q.get()
//!     print "The sum is:", result
//! ```
//!
//! ```text
//! $ printf '3\n4\n' | cargo run --example add_two_par
//! Enter first number: Enter second number: The sum is: 7
//! ```
//!
//! As the seed explains, no `join` is needed: `get` already waits for the child's result.

use std::io::{BufRead, Write};

use multiproc::{Error, Process, Queue};

fn add_two_numbers((a, b, q): (f64, f64, Queue<f64>)) -> multiproc::Result<()> {
    q.put(a + b)
}

/// Python's `input(prompt)`, reading a number.
fn input(prompt: &str) -> multiproc::Result<f64> {
    print!("{prompt}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    line.trim()
        .parse()
        .map_err(|_| Error::InvalidOperation(format!("not a number: {:?}", line.trim())))
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let x = input("Enter first number: ")?;
    let y = input("Enter second number: ")?;
    let q = Queue::new()?;
    let mut p1 = Process::new(add_two_numbers, (x, y, q.clone()));
    p1.start()?;
    // p1.join()
    let result = q.get()?;
    println!("The sum is: {result}");
    p1.join()?;
    Ok(())
}
