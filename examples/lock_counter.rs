//! Reproduces the notebook's "Thread Synchronization" counter (seed 003, cells
//! In [129]–[131]): two threads each increment a shared `x` 100000 times under a lock;
//! every iteration prints 200000. Beside it, the same program with two *processes*, which
//! needs the counter in shared memory (a `RawValue`) and a process-shared `Lock`.
//!
//! ```python
//! x=0
//! def increment(lock):
//!     global x
//!     lock.acquire()
//!     x+=1
//!     lock.release()
//!
//! def thread_task(lock):
//!     for _ in range(100000):
//!         increment(lock)
//!
//! def main_task():
//!     global x
//!     x=0
//!     lock=threading.Lock()
//!     t1=threading.Thread(target=thread_task,args=(lock,))
//!     t2=threading.Thread(target=thread_task,args=(lock,))
//!     t1.start(); t2.start(); t1.join(); t2.join()
//!
//! for i in range(10):
//!     main_task()
//!     print("Iteration {0}: x:{1}".format(i,x))
//! ```
//!
//! ```text
//! Iteration 0: x:200000
//! ...
//! Iteration 9: x:200000
//! Processes, iteration 0: x:200000
//! ...
//! ```

use std::sync::{Arc, Mutex};

use multiproc::{Lock, Process, RawValue};

fn thread_task(x: &Mutex<u64>) {
    for _ in 0..100_000 {
        // `increment`: std's Mutex is the lock, and owns the data it guards.
        *x.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }
}

fn main_task() -> u64 {
    let x = Arc::new(Mutex::new(0u64));
    let t1 = {
        let x = x.clone();
        std::thread::spawn(move || thread_task(&x))
    };
    let t2 = {
        let x = x.clone();
        std::thread::spawn(move || thread_task(&x))
    };
    let _ = t1.join();
    let _ = t2.join();
    let v = *x.lock().unwrap_or_else(|p| p.into_inner());
    v
}

fn process_task((x, lock): (RawValue<u64>, Lock)) -> multiproc::Result<()> {
    for _ in 0..100_000 {
        lock.acquire()?;
        x.set(x.get() + 1);
        lock.release()?;
    }
    Ok(())
}

fn main_task_processes() -> multiproc::Result<u64> {
    let x = RawValue::new(0u64)?;
    let lock = Lock::new()?;
    let mut p1 = Process::new(process_task, (x.clone(), lock.clone()));
    let mut p2 = Process::new(process_task, (x.clone(), lock.clone()));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(x.get())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    for i in 0..10 {
        println!("Iteration {i}: x:{}", main_task());
    }
    for i in 0..10 {
        println!("Processes, iteration {i}: x:{}", main_task_processes()?);
    }
    Ok(())
}
