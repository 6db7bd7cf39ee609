//! Fork refuses in a multi-threaded process unless the caller opted in. Its own test binary,
//! so that no other test has opted in.

use multiproc::{Error, Process, StartMethod};

fn nothing(_: ()) {}

#[test]
fn fork_refuses_with_threads() {
    multiproc::init();
    // The test harness runs this test on its own thread: the process has at least two.
    let mut p = Process::new(nothing, ()).with_start_method(StartMethod::Fork);
    match p.start() {
        Err(Error::InvalidOperation(msg)) => assert!(msg.contains("threads"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(p.pid(), None);
    // Opting in makes it work.
    // SAFETY: the harness's main thread is parked waiting for this test.
    unsafe { multiproc::allow_fork_with_threads(true) };
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}
