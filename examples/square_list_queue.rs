//! Reproduces the notebook's queue producer/consumer (seed 003, "Communication Between
//! Processes", cells In [23]–[26]): `square_list` puts squares on a queue, `print_list`
//! prints what it finds there.
//!
//! ```python
//! def square_list(mylist,q):
//!     for num in mylist:
//!         q.put(num*num) #putting messages in queue
//!
//! def print_list(q):
//!     while not q.empty():
//!         print(q.get()) #get messages
//!
//! q = multiprocessing.Queue()
//! p1 = multiprocessing.Process(target=square_list,args=([1,2,3,4],q))
//! p2 = multiprocessing.Process(target=print_list,args=(q,))
//! p1.start()
//! p2.start()
//! p1.join()
//! p2.join()
//! ```
//!
//! ```text
//! 1
//! 4
//! 9
//! 16
//! ```
//!
//! The notebook starts both processes at once, and `print_list` stops at the first moment
//! it sees the queue empty: it prints everything only because CPython's second process
//! happens to start after the first has put its items. Here processes start in about a
//! millisecond, so the race is real; this version starts the consumer once the producer
//! has finished (joining it first is safe: `put` returns when the item is in shared
//! memory), which makes `empty()` a reliable end signal.

use multiproc::{Process, Queue};

fn square_list((mylist, q): (Vec<i64>, Queue<i64>)) -> multiproc::Result<()> {
    for num in mylist {
        q.put(num * num)?; // putting messages in queue
    }
    Ok(())
}

fn print_list(q: Queue<i64>) -> multiproc::Result<()> {
    while !q.empty() {
        println!("{}", q.get()?); // get messages
    }
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let q = Queue::new()?;
    let mut p1 = Process::new(square_list, (vec![1, 2, 3, 4], q.clone()));
    let mut p2 = Process::new(print_list, q.clone());
    p1.start()?;
    p1.join()?;
    p2.start()?;
    p2.join()?;
    Ok(())
}
