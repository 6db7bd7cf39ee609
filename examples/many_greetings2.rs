//! Reproduces `manyGreetings2` from the CSinParallel module "Parallel Processes in Python"
//! (seed 001, "Creating multiple child processes, part 2" — a variable number of anonymous
//! processes):
//!
//! ```python
//! def manyGreetings2():
//!     name = raw_input("Enter your name: ")
//!     numProc = input("How many processes? ")
//!     for i in range(numProc):
//!         (Process(target=sayHi2, args=(name,))).start()
//! ```
//!
//! ```text
//! $ cargo run --example many_greetings2
//! Enter your name: Ann
//! How many processes? 4
//! Hi Ann from process 5101
//! Hi Ann from process 5103
//! Hi Ann from process 5102
//! Hi Ann from process 5104
//! ```
//!
//! The answers may also be given on the command line (`-- Ann 4`), or piped in.

use std::io::{BufRead, Write};

use multiproc::{current_process, Process};

fn say_hi2(n: String) {
    println!("Hi {} from process {}", n, current_process().pid());
}

fn ask(prompt: &str) -> String {
    print!("{prompt}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim().to_string()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| ask("Enter your name: "));
    let answer = args.next().unwrap_or_else(|| ask("How many processes? "));
    let num_proc: usize = match answer.parse() {
        Ok(n) => n,
        Err(_) => {
            eprintln!("{answer:?} is not a number of processes");
            std::process::exit(2);
        }
    };
    for _ in 0..num_proc {
        // An anonymous process: started and never stored. It is joined when main returns.
        Process::new(say_hi2, name.clone()).start()?;
    }
    Ok(())
}
