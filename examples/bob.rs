//! Reproduces the worksheet's "How many times will "bob" print?" program (seed 004,
//! worksheet "Process Pools"):
//!
//! ```python
//! def Printer():
//!     print( "bob" )
//! def spawnProcesses( ):
//!     print( "bob" )
//!     for i in range(0, 2):
//!         p = multiprocessing.Process(target=Printer)
//!         p.start()
//! def main():
//!     for i in range(0, 4):
//!         p = multiprocessing.Process(target=spawnProcesses)
//!         p.start()
//! ```
//!
//! Answer: C) 12. `main` starts 4 processes; each of them prints "bob" once (4) and starts
//! 2 processes of its own that print "bob" once each (4 × 2 = 8): 4 + 8 = 12. Processes
//! start processes exactly as the main program does, and, as in Python, a process waits
//! for its own (non-daemon) children before it exits, so all 12 lines appear before the
//! program ends.
//!
//! ```text
//! $ cargo run --example bob
//! bob
//! bob
//! ... (12 lines in all)
//! ```
//!
//! `cargo run --example bob -- --count` prints which process printed each line, and the
//! total.

use multiproc::{current_process, Process};

fn printer(_: ()) {
    say("bob");
}

fn spawn_processes(_: ()) {
    say("bob");
    for _ in 0..2 {
        let mut p = Process::new(printer, ());
        if let Err(e) = p.start() {
            eprintln!("cannot start a printer: {e}");
        }
    }
}

fn say(word: &str) {
    if std::env::var_os("BOB_VERBOSE").is_some() {
        let me = current_process();
        let parent = multiproc::parent_process().map_or(0, |p| p.pid());
        println!("{word}  ({} pid {}, parent {parent})", me.name(), me.pid());
    } else {
        println!("{word}");
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let verbose = std::env::args().any(|a| a == "--count");
    if verbose {
        // Children inherit the environment, so they print the details too.
        std::env::set_var("BOB_VERBOSE", "1");
    }
    let mut started = Vec::new();
    for _ in 0..4 {
        let mut p = Process::new(spawn_processes, ());
        p.start()?;
        started.push(p);
    }
    if verbose {
        for p in &started {
            p.join()?;
        }
        println!("bob was printed 4 + 4 × 2 = 12 times");
    }
    Ok(())
}
