//! Property-test drivers shared by tests/codec.rs and tests/ndarray.rs: random items sent to
//! a child that echoes them (through a queue, a pipe) or to a pool worker must come back
//! bit-exact.

use std::fmt::Debug;

use multiproc::{Connection, Pool, Process, Queue};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An item type the drivers send (wrapped in `Some`; `None` ends an echo child).
pub trait Echoed: Serialize + DeserializeOwned + Clone + Debug + Send + 'static {
    /// Bit-exact equality (floats by their bits, so NaN payloads count).
    fn same(&self, other: &Self) -> bool;
}

pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// The start of an item's debug form, to name a failing one.
pub fn kind<T: Debug>(i: &T) -> String {
    format!("{i:?}").chars().take(60).collect()
}

pub fn echo_queue<T: Echoed>((inq, outq): (Queue<Option<T>>, Queue<T>)) {
    while let Some(v) = inq.get().unwrap() {
        outq.put(v).unwrap();
    }
}

pub fn echo_pipe<T: Echoed>(c: Connection<Option<T>>) {
    while let Some(v) = c.recv().unwrap() {
        c.send(&Some(v)).unwrap();
    }
}

pub fn echo<T>(v: T) -> T {
    v
}

/// `cases` items from `items` through a queue to a child and back through another.
pub fn through_a_queue<T: Echoed>(items: impl Strategy<Value = T>, cases: u32) {
    multiproc::init();
    let (a, b) = (Queue::new().unwrap(), Queue::new().unwrap());
    let mut p = Process::new(echo_queue::<T>, (a.clone(), b.clone()));
    p.start().unwrap();
    runner(cases)
        .run(&items, |item| {
            a.put(Some(item.clone())).unwrap();
            let back = b.get().unwrap();
            prop_assert!(item.same(&back), "{}", kind(&item));
            Ok(())
        })
        .unwrap();
    a.put(None).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// `cases` items from `items` through a pipe to a child and back.
pub fn through_a_pipe<T: Echoed>(items: impl Strategy<Value = T>, cases: u32) {
    multiproc::init();
    let (here, there) = multiproc::pipe::<Option<T>>().unwrap();
    let mut p = Process::new(echo_pipe::<T>, there);
    p.start().unwrap();
    runner(cases)
        .run(&items, |item| {
            here.send(&Some(item.clone())).unwrap();
            let back = here.recv().unwrap();
            prop_assert!(back.is_some_and(|b| item.same(&b)), "{}", kind(&item));
            Ok(())
        })
        .unwrap();
    here.send(&None).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// `cases` items from `items` as the argument and result of `pool.apply`.
pub fn through_a_pool<T: Echoed>(pool: &Pool, items: impl Strategy<Value = T>, cases: u32) {
    runner(cases)
        .run(&items, |item| {
            let back = pool.apply(echo::<T>, item.clone()).unwrap();
            prop_assert!(item.same(&back), "{}", kind(&item));
            Ok(())
        })
        .unwrap();
}
