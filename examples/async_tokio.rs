//! multiproc in a tokio program (the `tokio` feature): a queue, a pipe, an event and a pool
//! result awaited from one single-threaded runtime while child processes produce, without
//! blocking it.
//!
//! `multiproc::init()` runs first in `main`, before the runtime exists: in a child process
//! it runs the child's work and exits. So `#[tokio::main]` goes on a function that `main`
//! calls afterwards, not on `main` itself.
//!
//! Run it with `cargo run --features tokio --example async_tokio`. It prints:
//!
//! ```text
//! queue: [1, 4, 9, 16, 25]
//! event: set by the producer
//! pipe: HELLO FROM TOKIO
//! pool: [1, 8, 27, 64]
//! ```

use multiproc::{Connection, Event, Pool, Queue};

/// Waits for the go-ahead, puts five squares, then says it is done.
fn producer((q, go, done): (Queue<u64>, Event, Event)) {
    go.wait().unwrap();
    for i in 1..=5 {
        q.put(i * i).unwrap();
    }
    done.set();
}

/// Answers each message with its upper-case form until the other end closes.
fn shout(conn: Connection<String>) {
    while let Ok(m) = conn.recv() {
        conn.send(&m.to_uppercase()).unwrap();
    }
}

fn cube(x: u64) -> u64 {
    x * x * x
}

fn main() {
    multiproc::init(); // first, before any runtime: in a child, runs the child's work
    run();
}

#[tokio::main(flavor = "current_thread")]
async fn run() {
    let q = Queue::new().unwrap();
    let (go, done) = (Event::new().unwrap(), Event::new().unwrap());
    let p = multiproc::spawn(producer, (q.clone(), go.clone(), done.clone())).unwrap();

    // The producer waits for `go`, which the second branch below sets, on this same
    // thread, once the first is waiting: this works only because `get_async` gives the
    // thread back while the queue is empty (a blocking `get` would wait for ever).
    let consume = async {
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(q.get_async().await.unwrap());
        }
        done.wait_async().await.unwrap();
        got
    };
    let (got, ()) = tokio::join!(consume, async { go.set() });
    println!("queue: {got:?}");
    println!("event: set by the producer");
    p.join().unwrap();

    let (here, there) = multiproc::pipe::<String>().unwrap();
    let echo = multiproc::spawn(shout, there).unwrap();
    here.send(&"hello from tokio".to_string()).unwrap();
    println!("pipe: {}", here.recv_async().await.unwrap());
    drop(here); // the child sees the end of the pipe and returns
    echo.join().unwrap();

    let pool = Pool::new(2).unwrap();
    let cubes = pool.map_async(cube, 1..=4);
    println!("pool: {:?}", cubes.get_async().await.unwrap());
}
