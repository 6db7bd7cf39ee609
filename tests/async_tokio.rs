//! The async forms (the `tokio` feature): queues, pipes, events and pool results awaited
//! from a single-threaded runtime while other processes produce, and cancel safety.
#![cfg(feature = "tokio")]

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::*;
use multiproc::{pipe, Connection, Error, Event, Pool, Queue};

/// How long a child waits for the parent's go-ahead before it reports that the parent's
/// runtime must have been blocked (instead of hanging the test).
const PATIENCE: Duration = Duration::from_secs(60);
/// What a child sends instead of its data when the go-ahead never came.
const BLOCKED: u64 = u64::MAX;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` once, outside any waker's interest.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// The producer child: once `go` is set, 100 items on the queue, a message on the pipe
/// and the answer to the parent's question, then sets `done`.
fn produce((q, conn, go, done): (Queue<u64>, Connection<String>, Event, Event)) {
    if !go.wait_timeout(PATIENCE).unwrap() {
        q.put(BLOCKED).unwrap();
        return;
    }
    for i in 0..100 {
        q.put(i).unwrap();
    }
    conn.send(&"from the child".to_string()).unwrap();
    let question = conn.recv().unwrap();
    conn.send(&format!("{question}: 42")).unwrap();
    done.set();
}

/// A pool task that returns once `go` is set.
fn wait_then_answer(go: Event) -> u64 {
    if go.wait_timeout(PATIENCE).unwrap() {
        7
    } else {
        BLOCKED
    }
}

#[test]
fn a_current_thread_runtime_awaits_a_queue_a_pipe_an_event_and_a_pool_result() {
    multiproc::init();
    let q = Queue::new().unwrap();
    let (here, there) = pipe::<String>().unwrap();
    let (go, done, go_pool) = (
        Event::new().unwrap(),
        Event::new().unwrap(),
        Event::new().unwrap(),
    );
    let child = multiproc::spawn(produce, (q.clone(), there, go.clone(), done.clone())).unwrap();
    let pool = Pool::new(1).unwrap();
    let result = pool.apply_async(wait_then_answer, go_pool.clone());
    runtime().block_on(async {
        // Every wait below starts before its producer may go on: the producers are let go
        // by the second branch, which runs on this same thread only if the first gives the
        // thread back while it waits.
        let consume = async {
            let mut items = Vec::new();
            for _ in 0..100 {
                items.push(q.get_async().await.unwrap());
            }
            let first = here.recv_async().await.unwrap();
            let answer = result.get_async().await.unwrap();
            here.send(&"the question".to_string()).unwrap();
            let second = here.recv_async().await.unwrap();
            done.wait_async().await.unwrap();
            (items, first, answer, second)
        };
        let release = async {
            go.set();
            go_pool.set();
        };
        let ((items, first, answer, second), ()) = tokio::join!(consume, release);
        assert_eq!(items, (0..100).collect::<Vec<u64>>());
        assert_eq!(first, "from the child");
        assert_eq!(answer, 7);
        assert_eq!(second, "the question: 42");
        // The same outcome again, at once.
        assert_eq!(result.get_async().await.unwrap(), 7);
        result.wait_async().await;
        // The child has returned and its end is closed: the end of the pipe.
        child.join().unwrap();
        assert!(matches!(here.recv_async().await, Err(Error::Eof)));
    });
    assert!(zombies_of_me().is_empty());
}

fn consume_n((q, go, n): (Queue<u32>, Event, u32)) -> Vec<u32> {
    if !go.wait_timeout(PATIENCE).unwrap() {
        return Vec::new();
    }
    (0..n).map(|_| q.get().unwrap()).collect()
}

#[test]
fn put_async_waits_for_room_a_child_makes() {
    multiproc::init();
    let q = Queue::<u32>::bounded(2).unwrap();
    let go = Event::new().unwrap();
    let child = multiproc::spawn(consume_n, (q.clone(), go.clone(), 50)).unwrap();
    runtime().block_on(async {
        let put_all = async {
            for i in 0..50 {
                q.put_async(i).await.unwrap();
            }
        };
        // The child starts taking only once the puts wait on a full queue.
        tokio::join!(put_all, async { go.set() });
    });
    assert_eq!(child.join().unwrap(), (0..50).collect::<Vec<u32>>());
}

fn produce_n((q, conn, n): (Queue<u32>, Connection<u32>, u32)) {
    for i in 0..n {
        q.put(i).unwrap();
        conn.send(&i).unwrap();
    }
}

#[test]
fn a_dropped_get_future_loses_no_item() {
    multiproc::init();
    let q = Queue::<u32>::new().unwrap();
    let (here, there) = pipe::<u32>().unwrap();
    runtime().block_on(async {
        // A future that has waited (armed, registered) and is dropped without being polled
        // again after the item arrived: the item stays for the next get.
        let mut get = Box::pin(q.get_async());
        assert!(poll_once(get.as_mut()).is_pending());
        let mut recv = Box::pin(here.recv_async());
        assert!(poll_once(recv.as_mut()).is_pending());
        q.put(5).unwrap();
        there.send(&6).unwrap();
        drop(get);
        drop(recv);
        assert_eq!(q.try_get().unwrap(), 5);
        assert_eq!(here.recv().unwrap(), 6);

        // Gets raced against a branch that wins about half the time, while a child
        // produces: every item arrives exactly once, whatever the drops.
        // Descriptors opened once and kept: the fork server's connection (at the first
        // child), the queue's overflow area (mapped by a handle when it first looks).
        multiproc::spawn(|()| (), ()).unwrap().join().unwrap();
        assert!(q.is_empty());
        let fds = fd_count();
        let n = 2000;
        let child = multiproc::spawn(produce_n, (q.clone(), there.clone(), n)).unwrap();
        let (mut items, mut msgs) = (Vec::new(), Vec::new());
        while items.len() < n as usize || msgs.len() < n as usize {
            tokio::select! {
                r = q.get_async(), if items.len() < n as usize => items.push(r.unwrap()),
                r = here.recv_async(), if msgs.len() < n as usize => msgs.push(r.unwrap()),
                () = tokio::task::yield_now() => {}
            }
        }
        child.join().unwrap();
        assert_eq!(items, (0..n).collect::<Vec<u32>>());
        assert_eq!(msgs, (0..n).collect::<Vec<u32>>());
        assert!(q.is_empty());
        // The dropped futures' registrations (each a duplicate descriptor) went with them.
        assert_eq!(fd_count(), fds);
    });
}

#[test]
fn async_forms_outside_a_runtime_are_an_error_not_a_panic() {
    multiproc::init();
    let q = Queue::<u8>::new().unwrap();
    let get = pin!(q.get_async());
    assert!(matches!(
        poll_once(get),
        Poll::Ready(Err(Error::InvalidOperation(_)))
    ));
    // An item already there needs no runtime.
    q.put(1).unwrap();
    assert!(matches!(poll_once(pin!(q.get_async())), Poll::Ready(Ok(1))));
    let e = Event::new().unwrap();
    assert!(matches!(
        poll_once(pin!(e.wait_async())),
        Poll::Ready(Err(Error::InvalidOperation(_)))
    ));
}

#[test]
fn shutdown_and_close_end_waiting_futures() {
    multiproc::init();
    let q = Queue::<u8>::new().unwrap();
    let q2 = q.clone();
    runtime().block_on(async {
        let (r, ()) = tokio::join!(q.get_async(), async { q2.shutdown() });
        assert!(matches!(r, Err(Error::ShutDown)));
    });
    let q = Queue::<u8>::new().unwrap();
    runtime().block_on(async {
        let (r, ()) = tokio::join!(q.get_async(), async { q.close() });
        assert!(matches!(r, Err(Error::Closed)));
    });
}
