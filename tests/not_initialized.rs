//! Starting a process before `multiproc::init()` is a clear error, not a child that runs the
//! parent's `main` again (Python raises `RuntimeError` where the `if __name__ ==
//! '__main__':` guard is missing: `TestNoForkBomb`). Its own test binary, so that no other
//! test has called `init()`.

use multiproc::{Error, Process};

fn nothing(_: ()) {}

#[test]
fn starting_a_process_without_init_is_a_clear_error() {
    let mut p = Process::new(nothing, ());
    let e = p.start().unwrap_err();
    assert!(matches!(e, Error::NotInitialized), "{e:?}");
    assert!(e.to_string().contains("multiproc::init()"), "{e}");
    assert_eq!(p.pid(), None);
    let r = multiproc::spawn(nothing, ());
    assert!(matches!(r, Err(Error::NotInitialized)), "{:?}", r.err());
    let r = multiproc::Pool::new(1);
    assert!(matches!(r, Err(Error::NotInitialized)), "{:?}", r.err());
    let r = multiproc::Manager::start();
    assert!(matches!(r, Err(Error::NotInitialized)), "{:?}", r.err());
    let r = multiproc::shared_memory::SharedMemory::create(None, 16);
    assert!(matches!(r, Err(Error::NotInitialized)), "{:?}", r.err());
    assert!(multiproc::active_children().is_empty());
}
