//! The notebook's "Method 2: Server Process": a list of records shared through a manager.
//! `insert_record` runs in one process and adds Jeff; `print_records` runs in another and
//! prints all four records.
//!
//! Python:
//! ```python
//! with multiprocessing.Manager() as manager:
//!     records = manager.list([('Sam',10),('Adam',9),('Kevin',9)])
//!     new_record = ('Jeff',8)
//!     p1 = multiprocessing.Process(target=insertRecord, args=(new_record,records))
//!     p2 = multiprocessing.Process(target=printRecords, args=(records,))
//!     p1.start(); p1.join()
//!     p2.start(); p2.join()
//! ```

use multiproc::manager::ListProxy;
use multiproc::{Manager, Process};

type Record = (String, u32);

fn print_records(records: ListProxy<Record>) {
    for (name, score) in records.iter().expect("read the records") {
        println!("Name: {name}\nScore: {score}\n");
    }
}

fn insert_record((record, records): (Record, ListProxy<Record>)) {
    records.push(record).expect("append the record");
    println!("New record inserted");
}

fn main() -> multiproc::Result<()> {
    multiproc::init();

    let manager = Manager::start()?; // stopped when `manager` is dropped
    let records = manager.list(vec![
        ("Sam".to_string(), 10),
        ("Adam".to_string(), 9),
        ("Kevin".to_string(), 9),
    ])?;
    let new_record = ("Jeff".to_string(), 8);

    let mut p1 = Process::new(insert_record, (new_record, records.clone()));
    let mut p2 = Process::new(print_records, records.clone());
    p1.start()?;
    p1.join()?;

    p2.start()?;
    p2.join()?;
    Ok(())
}
