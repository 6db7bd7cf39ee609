//! `connection::wait` over connections, queues and process sentinels, across processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use multiproc::connection::{wait, Waitable};
use multiproc::{pipe, pipe_simplex, Connection, Error, Event, Process, Queue};

fn queue_then_pipe((go, conn, q): (Event, Connection<u32>, Queue<u32>)) {
    go.wait().unwrap();
    q.put(7).unwrap();
    let x = conn.recv().unwrap();
    conn.send(&(x + 7)).unwrap();
}

#[test]
fn wait_reports_each_object_as_it_becomes_ready() {
    multiproc::init();
    let go = Event::new().unwrap();
    let (conn, child_end) = pipe::<u32>().unwrap();
    let q = Queue::<u32>::new().unwrap();
    let mut p = Process::new(queue_then_pipe, (go.clone(), child_end, q.clone()));
    p.start().unwrap();
    let objects: [&dyn Waitable; 3] = [&conn, &q, &p];
    assert!(wait(&objects, Some(Duration::ZERO)).unwrap().is_empty());
    go.set();
    // The child puts an item, then blocks on the pipe: only the queue is ready.
    assert_eq!(wait(&objects, None).unwrap(), vec![1]);
    assert_eq!(q.get().unwrap(), 7);
    conn.send(&1).unwrap();
    // It answers on the pipe, then ends.
    assert!(wait(&objects, None).unwrap().contains(&0));
    assert_eq!(conn.recv().unwrap(), 8);
    assert_eq!(wait(&[&q, &p.sentinel().unwrap()], None).unwrap(), vec![1]);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // The child's end is closed: the end of file counts as ready.
    assert_eq!(wait(&objects, None).unwrap(), vec![0, 2]);
    assert!(matches!(conn.recv(), Err(Error::Eof)));
    assert!(zombies_of_me().is_empty());
}

#[test]
fn wait_times_out_with_nothing_ready() {
    multiproc::init();
    let (_a, b) = pipe::<u8>().unwrap();
    let q = Queue::<u8>::new().unwrap();
    // Descriptors only: the kernel waits.
    let t = Instant::now();
    assert!(wait(&[&b], Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
    // With a queue: looked at again until the deadline.
    let t = Instant::now();
    assert!(wait(&[&b, &q], Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
    // An empty list with a timeout just waits; without one it would never return.
    assert!(wait(&[], Some(Duration::from_millis(1)))
        .unwrap()
        .is_empty());
    assert!(matches!(wait(&[], None), Err(Error::InvalidOperation(_))));
}

fn nap(s: u64) {
    std::thread::sleep(Duration::from_secs(s));
}

fn send_on(c: Connection<u64>) {
    c.send(&(std::process::id() as u64)).unwrap();
}

#[test]
fn sentinel_of_a_killed_child_among_many_connections() {
    multiproc::init();
    let mut p = Process::new(nap, 60);
    p.start().unwrap();
    let fds = fd_count();
    // More objects than one poll mask holds.
    let pairs: Vec<(Connection<u64>, Connection<u64>)> =
        (0..40).map(|_| pipe::<u64>().unwrap()).collect();
    {
        let sentinel = p.sentinel().unwrap();
        let mut objects: Vec<&dyn Waitable> = pairs.iter().map(|(a, _)| a as _).collect();
        objects.push(&sentinel);
        assert!(wait(&objects, Some(Duration::ZERO)).unwrap().is_empty());
        p.kill().unwrap();
        assert_eq!(wait(&objects, None).unwrap(), vec![40]);
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-9));
    // A child writes on the 38th pipe.
    let mut q = Process::new(send_on, pairs[37].1.clone());
    q.start().unwrap();
    let objects: Vec<&dyn Waitable> = pairs.iter().map(|(a, _)| a as _).collect();
    assert_eq!(wait(&objects, None).unwrap(), vec![37]);
    assert_eq!(pairs[37].0.recv().unwrap(), u64::from(q.pid().unwrap()));
    q.join().unwrap();
    drop(objects);
    drop(pairs);
    drop(q);
    assert_eq!(fd_count(), fds);
}

#[test]
fn objects_that_cannot_be_waited_on_are_errors() {
    multiproc::init();
    let p = Process::new(nap, 1);
    assert!(p.sentinel().is_none());
    assert!(matches!(
        wait(&[&p], Some(Duration::ZERO)),
        Err(Error::NotStarted)
    ));
    let (_rx, tx) = pipe_simplex::<u8>().unwrap();
    assert!(matches!(
        wait(&[&tx], Some(Duration::ZERO)),
        Err(Error::InvalidOperation(_))
    ));
}

fn spawned_answer(x: u32) -> u32 {
    x * 2
}

#[test]
fn join_handles_and_closed_queues_are_ready() {
    multiproc::init();
    let h = multiproc::spawn(spawned_answer, 21).unwrap();
    let q = Queue::<u8>::new().unwrap();
    assert_eq!(wait(&[&q, &h], None).unwrap(), vec![1]);
    assert_eq!(h.join().unwrap(), 42);
    // A closed handle: its get would not block.
    q.close();
    assert_eq!(wait(&[&q], None).unwrap(), vec![0]);
}

/// Ready from its second look on: an object that becomes ready while `wait` looks at the
/// others (a message sent just before its sender exited, the exit seen after).
struct ReadyAfterFirstLook(std::cell::Cell<u32>);

impl multiproc::connection::Waitable for ReadyAfterFirstLook {
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    fn is_ready(&self) -> multiproc::Result<bool> {
        self.0.set(self.0.get() + 1);
        Ok(self.0.get() > 1)
    }
}

struct AlwaysReady;

impl multiproc::connection::Waitable for AlwaysReady {
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    fn is_ready(&self) -> multiproc::Result<bool> {
        Ok(true)
    }
}

#[test]
fn an_object_ready_before_the_one_found_ready_is_reported_with_it() {
    // The soak beside a second copy of the suite once saw `wait` report a child's exit
    // without the message it had sent just before: the pipe was looked at first, too early.
    let early = ReadyAfterFirstLook(std::cell::Cell::new(0));
    let objects: [&dyn Waitable; 2] = [&early, &AlwaysReady];
    assert_eq!(wait(&objects, None).unwrap(), vec![0, 1]);
}
