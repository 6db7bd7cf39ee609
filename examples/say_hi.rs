//! Reproduces `sayHi` / `procEx` (basic1.py) and `procEx2` from the CSinParallel module
//! "Parallel Processes in Python" (seed 001, sections "Making a Process" and "Creating
//! multiple child processes"):
//!
//! ```python
//! from multiprocessing import *
//!
//! def sayHi():
//!     print "Hi from process", current_process().pid
//!
//! def procEx():
//!     print "Hi from process", current_process().pid, "(parent process)"
//!     otherProc = Process(target=sayHi, args=())
//!     otherProc.start()
//!
//! def procEx2():
//!     print "Hi from process", current_process().pid, "(parent process)"
//!     p1 = Process(target=sayHi, args=())
//!     p2 = Process(target=sayHi, args=())
//!     p3 = Process(target=sayHi, args=())
//!     p1.start()
//!     p2.start()
//!     p3.start()
//! ```
//!
//! `cargo run --example say_hi` runs `procEx`:
//!
//! ```text
//! Hi from process 3988 (parent process)
//! Hi from process 4828
//! ```
//!
//! `cargo run --example say_hi -- 3` runs `procEx2` (three children, in any order).
//!
//! As in Python, the program does not end before its (non-daemon) children: they are
//! joined when `main` returns.

use multiproc::{current_process, Process};

fn say_hi(_: ()) {
    println!("Hi from process {}", current_process().pid());
}

fn proc_ex() -> multiproc::Result<()> {
    println!(
        "Hi from process {} (parent process)",
        current_process().pid()
    );
    let mut other_proc = Process::new(say_hi, ());
    other_proc.start()?;
    Ok(())
}

fn proc_ex2() -> multiproc::Result<()> {
    println!(
        "Hi from process {} (parent process)",
        current_process().pid()
    );
    let mut p1 = Process::new(say_hi, ());
    let mut p2 = Process::new(say_hi, ());
    let mut p3 = Process::new(say_hi, ());
    p1.start()?;
    p2.start()?;
    p3.start()?;
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    match std::env::args().nth(1).as_deref() {
        Some("3") | Some("procEx2") => proc_ex2(),
        _ => proc_ex(),
    }
}
