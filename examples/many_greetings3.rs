//! Reproduces `sayHi3` / `manyGreetings3` from the CSinParallel module "Parallel Processes
//! in Python" (seed 001, "Execution Order and Resource Contention" — named processes whose
//! order of execution is not guaranteed):
//!
//! ```python
//! def sayHi3(personName):
//!     print "Hi", personName, "from process", current_process().name, "- pid", current_process().pid
//!
//! def manyGreetings3():
//!     print "Hi from process", current_process().pid, "(parent process)"
//!     personName = "Jimmy"
//!     for i in range(10):
//!         Process(target=sayHi3, args=(personName,), name=str(i)).start()
//! ```
//!
//! Only the parent's line is sure to come first; the children greet in whatever order the
//! operating system runs them, for example:
//!
//! ```text
//! Hi from process 3988 (parent process)
//! Hi Jimmy from process 8 - pid 3564
//! Hi Jimmy from process 2 - pid 6884
//! Hi Jimmy from process 0 - pid 5164
//! ...
//! ```
//!
//! (Each `println!` is one `write` of a whole line, so lines do not get garbled as the
//! seed's Python 2 output did; their order still varies. The lock that orders them is
//! the seed's next program, `manyGreetings4`.)

use multiproc::{current_process, Process};

fn say_hi3(person_name: String) {
    let me = current_process();
    println!(
        "Hi {} from process {} - pid {}",
        person_name,
        me.name(),
        me.pid()
    );
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    println!(
        "Hi from process {} (parent process)",
        current_process().pid()
    );
    let person_name = "Jimmy".to_string();
    for i in 0..10 {
        Process::new(say_hi3, person_name.clone())
            .with_name(i.to_string())
            .start()?;
    }
    Ok(())
}
