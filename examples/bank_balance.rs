//! Reproduces the notebook's bank balance (seed 003, "Process Syncronization between the
//! processes", cells In [94]–[101]): one process withdraws 1 a thousand times, another
//! deposits 1 a thousand times, each change under a `Lock`; the balance ends where it
//! started.
//!
//! ```python
//! def withdraw(balance,lock):
//!     for _ in range(1000):
//!         lock.acquire()
//!         balance.value=balance.value-1
//!         lock.release()
//!
//! def deposit(balance,lock):
//!     for _ in range(1000):
//!         lock.acquire()
//!         balance.value=balance.value+1
//!         lock.release()
//!
//! def perform_transaction():
//!     balance = multiprocessing.Value('i',100)
//!     lock = multiprocessing.Lock()
//!     p1 = multiprocessing.Process(target=withdraw,args=(balance,lock))
//!     p2 = multiprocessing.Process(target=deposit,args=(balance,lock))
//!     p1.start(); p2.start(); p1.join(); p2.join()
//!     print("Balance: {}".format(balance.value))
//!
//! for _ in range(10):
//!     perform_transaction()
//! ```
//!
//! ```text
//! Balance: 100      (ten times)
//! ```

use multiproc::{Lock, Process, Value};

fn withdraw((balance, lock): (Value<i32>, Lock)) -> multiproc::Result<()> {
    for _ in 0..1000 {
        lock.acquire()?;
        balance.set(balance.get() - 1);
        lock.release()?;
    }
    Ok(())
}

fn deposit((balance, lock): (Value<i32>, Lock)) -> multiproc::Result<()> {
    for _ in 0..1000 {
        lock.acquire()?;
        balance.set(balance.get() + 1);
        lock.release()?;
    }
    Ok(())
}

fn perform_transaction() -> multiproc::Result<()> {
    let balance = Value::new(100i32)?;
    let lock = Lock::new()?;
    let mut p1 = Process::new(withdraw, (balance.clone(), lock.clone()));
    let mut p2 = Process::new(deposit, (balance.clone(), lock.clone()));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!("Balance: {}", balance.get());
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    for _ in 0..10 {
        perform_transaction()?;
    }
    Ok(())
}
