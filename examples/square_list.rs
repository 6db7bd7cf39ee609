//! Reproduces the notebook's `squareList` program (seed 003, "notebook", cells
//! In [11]–[16]): a child changes *its own copy* of a global; the parent's stays empty,
//! because parent and child have separate memory.
//!
//! ```python
//! result=[]
//!
//! def squareList(mylist):
//!     global result
//!     for num in mylist:
//!         result.append(num*num)
//!     print("Result {}".format(result))#not empty
//!
//! mylist = [1,2,3,4]
//! p1 = multiprocessing.Process(target=squareList,args=(mylist,))
//! p1.start()
//! p1.join()
//!
//! result #Empty as it belongs to parent process
//! ```
//!
//! ```text
//! Result [1, 4, 9, 16]
//! []
//! ```
//!
//! The fix — shared memory with `Value`/`Array`, or a `Manager` list — is the notebook's
//! next program.

use std::sync::Mutex;

use multiproc::Process;

static RESULT: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn square_list(mylist: Vec<i64>) {
    let mut result = RESULT.lock().unwrap_or_else(|p| p.into_inner());
    for num in mylist {
        result.push(num * num);
    }
    println!("Result {:?}", *result); // not empty
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let mylist = vec![1, 2, 3, 4];
    let mut p1 = Process::new(square_list, mylist);
    p1.start()?;
    p1.join()?;

    // Empty: RESULT belongs to the parent; the child appended to its own copy.
    println!("{:?}", *RESULT.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(())
}
