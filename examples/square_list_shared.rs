//! Reproduces the notebook's shared-memory `squareList` (seed 003, "Shared Memory", cells
//! In [17]–[20]): the child writes the squares into a shared `Array` and their sum into a
//! shared `Value`, and this time the parent sees them.
//!
//! ```python
//! def squareList(mylist,result,squaresum):
//!     for idx,num in enumerate(mylist):
//!         result[idx] = num*num
//!     squaresum.value=sum(result)
//!
//! mylist=[1,2,3,4]
//! result=multiprocessing.Array('i',4) #i=int, 4=size
//! square_sum = multiprocessing.Value('i')
//! p1=multiprocessing.Process(target=squareList,args=(mylist,result,square_sum))
//! p1.start()
//! p1.join()
//! print(square_sum.value)
//! for i in result:
//!     print(i)
//! ```
//!
//! ```text
//! 30
//! 1
//! 4
//! 9
//! 16
//! ```

use multiproc::{Array, Process, Value};

fn square_list((mylist, result, square_sum): (Vec<i32>, Array<i32>, Value<i32>)) {
    for (idx, num) in mylist.iter().enumerate() {
        result.set(idx, num * num);
    }
    square_sum.set(result.to_vec().iter().sum());
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let mylist = vec![1, 2, 3, 4];
    let result = Array::<i32>::new(4)?; // 'i' = i32, 4 = size
    let square_sum = Value::new(0i32)?;
    let mut p1 = Process::new(square_list, (mylist, result.clone(), square_sum.clone()));
    p1.start()?;
    p1.join()?;

    // The parent's handles see what the child wrote: this is shared memory.
    println!("{}", square_sum.get());
    for i in result.to_vec() {
        println!("{i}");
    }
    Ok(())
}
