//! multiproc's own events (`multiproc::log`): `MULTIPROC_LOG` on standard error, and, with
//! the `tracing` feature, `tracing` events a subscriber receives.

use std::io::Read;

use multiproc::process::Stdio;
use multiproc::{Builder, Error, Pool};

fn kill_self(_: ()) {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::thread::sleep(std::time::Duration::from_secs(10));
}

/// A pool whose one worker kills itself on the first task; a second task runs on the
/// replacement. Returns the pid of the worker that died.
fn pool_with_a_dying_worker(_: ()) -> u32 {
    let pool = Pool::new(1).unwrap();
    let pid = match pool.apply(kill_self, ()) {
        Err(Error::WorkerDied {
            pid,
            signal: Some(9),
            ..
        }) => pid,
        other => panic!("expected WorkerDied, got {other:?}"),
    };
    assert_eq!(pool.apply(|x: u32| x + 1, 1).unwrap(), 2);
    pid
}

#[test]
fn multiproc_log_env_reports_a_worker_death_on_stderr() {
    multiproc::init();
    // A child with MULTIPROC_LOG=info, whose standard error we read.
    let mut h = Builder::new()
        .env("MULTIPROC_LOG", "info")
        .stderr(Stdio::piped())
        .spawn(pool_with_a_dying_worker, ())
        .unwrap();
    let mut err = String::new();
    h.take_stderr().unwrap().read_to_string(&mut err).unwrap();
    let dead = h.join().unwrap();
    let death = format!("pool worker (pid {dead}) died (killed by signal 9)");
    let line = err
        .lines()
        .find(|l| l.contains(&death))
        .unwrap_or_else(|| panic!("no worker-death line in the child's stderr:\n{err}"));
    // Python's format: [LEVEL/ProcessName] message, named after the child.
    assert!(line.starts_with("[WARNING/Process-"), "{line}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("[INFO/") && l.contains("started pool worker pid")),
        "no replacement line:\n{err}"
    );
    // At info, debug events (each process started) are not printed.
    assert!(!err.contains("[DEBUG/"), "{err}");
}

#[test]
fn multiproc_log_off_prints_nothing() {
    multiproc::init();
    let mut h = Builder::new()
        .env("MULTIPROC_LOG", "off")
        .stderr(Stdio::piped())
        .spawn(pool_with_a_dying_worker, ())
        .unwrap();
    let mut err = String::new();
    h.take_stderr().unwrap().read_to_string(&mut err).unwrap();
    h.join().unwrap();
    assert_eq!(err, "");
}

#[cfg(feature = "tracing")]
mod with_tracing {
    use std::fmt;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata};

    use super::*;

    type Seen = Arc<Mutex<Vec<(Level, String, String)>>>;

    /// A subscriber that keeps every event: (level, target, message).
    struct Capture(Seen);

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut m = Message(String::new());
            event.record(&mut m);
            let md = event.metadata();
            self.0
                .lock()
                .unwrap()
                .push((*md.level(), md.target().to_string(), m.0));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn tracing_subscriber_receives_a_worker_death_event() {
        multiproc::init();
        let seen: Seen = Arc::default();
        tracing::subscriber::set_global_default(Capture(seen.clone())).unwrap();
        // The pool's handler thread (in this process) sees the death and reports it.
        let dead = pool_with_a_dying_worker(());
        let death = format!("pool worker (pid {dead}) died (killed by signal 9)");
        let events = seen.lock().unwrap().clone();
        let ev = events
            .iter()
            .find(|(_, _, m)| m.contains(&death))
            .unwrap_or_else(|| panic!("no worker-death event in {events:?}"));
        assert_eq!(ev.0, Level::WARN);
        assert_eq!(ev.1, "multiproc");
        // The replacement and the processes' starts are events too.
        assert!(events
            .iter()
            .any(|(l, _, m)| *l == Level::INFO && m.starts_with("started pool worker pid")));
        assert!(events
            .iter()
            .any(|(l, _, m)| *l == Level::DEBUG && m.starts_with("started process PoolWorker-")));
    }

    /// A subscriber that formats each event in a buffer of its thread, as
    /// `tracing_subscriber::fmt` does: once the thread's thread-locals are destroyed,
    /// `BUF.with` panics.
    struct ThreadBuffered;

    thread_local! {
        static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }

    impl tracing::Subscriber for ThreadBuffered {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            BUF.with(|b| {
                let mut b = b.borrow_mut();
                b.clear();
                b.push_str(event.metadata().target());
            });
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Set in the re-run of the test below, whose role it names.
    const EXIT_ROLE: &str = "MULTIPROC_TEST_EXIT_WITH_BUFFERED_SUBSCRIBER";

    /// A program with a subscriber like `tracing_subscriber::fmt` and a fork server exits
    /// with 0: the events of its exit (the fork server stopped, from `exit`'s handlers, after
    /// the exiting thread's thread-locals were destroyed) are not given to the subscriber,
    /// whose panic there would abort the program. The test runs itself again as that program
    /// (a test's own thread calls `exit`, as `main` returning does).
    #[test]
    fn exit_with_a_thread_buffered_subscriber_is_clean() {
        if std::env::var_os(EXIT_ROLE).is_some() {
            multiproc::init();
            tracing::subscriber::set_global_default(ThreadBuffered).unwrap();
            // Starts the fork server: events from this thread, whose buffer now exists.
            let h = multiproc::spawn(|x: u8| x + 1, 1).unwrap();
            assert_eq!(h.join().unwrap(), 2);
            std::process::exit(0);
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "with_tracing::exit_with_a_thread_buffered_subscriber_is_clean",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EXIT_ROLE, "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            err
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the program did not exit within 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let err = reader.join().unwrap();
        assert_eq!(status.code(), Some(0), "{status:?}; stderr:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
