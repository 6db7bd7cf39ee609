//! Process, spawn and the process-information functions, run under all three start methods.

mod common;

use std::time::{Duration, Instant};

use common::*;
use multiproc::{Builder, Connection, Error, Manager, Process, StartMethod};

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn exit_with(code: i32) {
    std::process::exit(code);
}

/// Checks, in a child given `key`, that it is its authkey, its Manager's by default, and
/// its own child's.
fn check_authkey(key: Vec<u8>) -> Result<(), String> {
    let mine = multiproc::current_process().authkey();
    let m = Manager::start().map_err(|e| e.to_string())?;
    let child = multiproc::spawn(|_: ()| multiproc::current_process().authkey(), ())
        .and_then(|h| h.join())
        .map_err(|e| e.to_string())?;
    if mine == key && m.authkey() == key && child == key {
        Ok(())
    } else {
        Err(format!("{mine:?} {:?} {child:?}", m.authkey()))
    }
}

fn ok_or_err(fail: bool) -> Result<(), String> {
    if fail {
        Err("no luck".to_string())
    } else {
        Ok(())
    }
}

fn panics(msg: String) -> u32 {
    panic!("{msg}");
}

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}

/// Copies standard input to standard output line by line, counts the lines on standard
/// error, and returns what it sees of its environment and working directory.
fn env_cwd_and_echo(_: ()) -> (Option<String>, bool, std::path::PathBuf) {
    use std::io::{BufRead, Write};
    let mut n = 0;
    for line in std::io::stdin().lock().lines() {
        println!("out: {}", line.unwrap());
        n += 1;
    }
    if n > 0 {
        eprintln!("err: {n} lines");
    }
    std::io::stdout().flush().unwrap();
    (
        std::env::var("MULTIPROC_TEST_VAR").ok(),
        std::env::var_os("MULTIPROC_TEST_REMOVED").is_some(),
        std::env::current_dir().unwrap(),
    )
}

fn wait_then_answer(go: multiproc::Event) -> u32 {
    go.wait().unwrap();
    42
}

fn who(_: ()) -> (String, u32, Option<(String, u32)>) {
    let me = multiproc::current_process();
    let parent = multiproc::parent_process().map(|p| (p.name().to_string(), p.pid()));
    (me.name().to_string(), me.pid(), parent)
}

/// Starts a grandchild that sleeps, reports its pid, then sleeps itself.
fn parent_of_sleeper((conn, method, daemon): (Connection<u32>, StartMethod, bool)) {
    if method == StartMethod::Fork {
        allow_fork(); // a Spawn child is a fresh test-harness process with its own threads
    }
    let mut p = Process::new(sleep_ms, 60_000)
        .with_start_method(method)
        .with_daemon(daemon);
    p.start().unwrap();
    conn.send(&p.pid().unwrap()).unwrap();
    sleep_ms(60_000);
}

/// Starts a grandchild (daemon or not) that sleeps `ms`, reports its pid, and returns.
fn leaves_child((conn, method, daemon, ms): (Connection<u32>, StartMethod, bool, u64)) {
    if method == StartMethod::Fork {
        allow_fork();
    }
    let mut p = Process::new(sleep_ms, ms)
        .with_start_method(method)
        .with_daemon(daemon);
    p.start().unwrap();
    conn.send(&p.pid().unwrap()).unwrap();
    std::mem::forget(p); // like Python: no join; the exit handler decides
}

fn nested_spawn(method: StartMethod) -> i64 {
    Builder::new()
        .start_method(method)
        .spawn(add, (40, 2))
        .unwrap()
        .join()
        .unwrap()
}

macro_rules! method_tests {
    ($modname:ident, $method:expr) => {
        mod $modname {
            use super::*;

            fn m() -> StartMethod {
                if $method == StartMethod::Fork {
                    allow_fork();
                }
                $method
            }

            fn run(p: Process) -> Process {
                let mut p = p.with_start_method(m());
                p.start().unwrap();
                p.join().unwrap();
                p
            }

            /// A key set before start (Python's `p.authkey = key`) is the child's authkey,
            /// which a Manager started there uses by default and its children inherit;
            /// ours is unchanged.
            #[test]
            fn builder_authkey_is_the_childs() {
                multiproc::init();
                let ours = multiproc::current_process().authkey();
                let mut p = Process::new(check_authkey, b"child key".to_vec())
                    .with_authkey(b"child key")
                    .with_start_method(m());
                assert_eq!(p.authkey(), b"child key");
                p.start().unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(0));
                let h = Builder::new()
                    .start_method(m())
                    .authkey(b"other")
                    .spawn(|_: ()| multiproc::current_process().authkey(), ())
                    .unwrap();
                assert_eq!(h.join().unwrap(), b"other");
                assert_eq!(multiproc::current_process().authkey(), ours);
                let h = Builder::new()
                    .start_method(m())
                    .spawn(|_: ()| multiproc::current_process().authkey(), ());
                assert_eq!(h.unwrap().join().unwrap(), ours);
            }

            /// The target's return value decides the exit code as a Rust `main`'s does
            /// (Python: 1 when the target raises); an `Err` is reported on standard error.
            #[test]
            fn a_targets_return_value_is_its_exit_code() {
                multiproc::init();
                use multiproc::process::Stdio;
                use std::io::Read;
                assert_eq!(run(Process::new(ok_or_err, false)).exitcode(), Some(0));
                let mut p = Builder::new()
                    .start_method(m())
                    .stderr(Stdio::piped())
                    .process(ok_or_err, true);
                p.start().unwrap();
                let mut err = String::new();
                p.take_stderr().unwrap().read_to_string(&mut err).unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(1));
                // Python's report of an exception in a target: "Process NAME:", then it.
                assert_eq!(
                    err,
                    format!("Process {}:\nError: \"no luck\"\n", p.name()),
                    "{err:?}"
                );
                // A panic has the same header; a target that only returns an exit code
                // prints nothing (Python's `sys.exit(3)`).
                let stderr_of = |mut p: Process| {
                    p.start().unwrap();
                    let mut err = String::new();
                    p.take_stderr().unwrap().read_to_string(&mut err).unwrap();
                    p.join().unwrap();
                    (p.name().to_string(), err)
                };
                let (name, err) = stderr_of(
                    Builder::new()
                        .start_method(m())
                        .stderr(Stdio::piped())
                        .name("panicky")
                        .process(
                            |m: String| {
                                panics(m);
                            },
                            "boom".to_string(),
                        ),
                );
                assert!(err.starts_with(&format!("Process {name}:\n")), "{err:?}");
                assert!(err.contains("boom"), "{err:?}");
                let (_, err) = stderr_of(
                    Builder::new()
                        .start_method(m())
                        .stderr(Stdio::piped())
                        .process(std::process::ExitCode::from, 3u8),
                );
                assert_eq!(err, "");
                for code in [0u8, 3, 255] {
                    assert_eq!(
                        run(Process::new(std::process::ExitCode::from, code)).exitcode(),
                        Some(i32::from(code))
                    );
                }
                assert_eq!(
                    run(Process::new(|_: ()| std::process::ExitCode::FAILURE, ())).exitcode(),
                    Some(1)
                );
            }

            #[test]
            fn exitcode_table() {
                multiproc::init();
                assert_eq!(run(Process::new(sleep_ms, 0)).exitcode(), Some(0));
                assert_eq!(
                    run(Process::new(
                        |m: String| {
                            panics(m);
                        },
                        "boom".to_string()
                    ))
                    .exitcode(),
                    Some(1)
                );
                assert_eq!(run(Process::new(exit_with, 7)).exitcode(), Some(7));

                let mut p = Process::new(sleep_ms, 60_000).with_start_method(m());
                assert_eq!(p.exitcode(), None);
                p.start().unwrap();
                assert_eq!(p.exitcode(), None);
                assert!(p.is_alive());
                p.terminate().unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(-15));
                assert!(!p.is_alive());

                let mut p = Process::new(sleep_ms, 60_000).with_start_method(m());
                p.start().unwrap();
                p.kill().unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(-9));
                // Signalling an ended, reaped process is a no-op, not an error.
                p.terminate().unwrap();
                p.kill().unwrap();
            }

            #[test]
            fn builder_sets_env_cwd_and_stdio() {
                multiproc::init();
                use multiproc::process::Stdio;
                use std::io::{Read, Write};
                let dir = std::env::temp_dir().canonicalize().unwrap();
                std::env::set_var("MULTIPROC_TEST_REMOVED", "present");
                let mut h = Builder::new()
                    .start_method(m())
                    .env("MULTIPROC_TEST_VAR", "set by the builder")
                    .env_remove("MULTIPROC_TEST_REMOVED")
                    .current_dir(&dir)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn(env_cwd_and_echo, ())
                    .unwrap();
                let mut stdin = h.take_stdin().unwrap();
                stdin.write_all(b"line one\nline two\n").unwrap();
                drop(stdin); // end of the child's input
                let mut out = String::new();
                h.take_stdout().unwrap().read_to_string(&mut out).unwrap();
                let mut err = String::new();
                h.take_stderr().unwrap().read_to_string(&mut err).unwrap();
                let (var, removed, cwd) = h.join().unwrap();
                assert_eq!(var.as_deref(), Some("set by the builder"));
                assert!(!removed);
                assert_eq!(cwd, dir);
                assert_eq!(out, "out: line one\nout: line two\n");
                assert_eq!(err, "err: 2 lines\n");
                // The parent's own environment and directory are untouched.
                assert!(std::env::var_os("MULTIPROC_TEST_VAR").is_none());
                assert_eq!(std::env::var("MULTIPROC_TEST_REMOVED").unwrap(), "present");

                // A file and /dev/null, through Builder::process.
                let path = dir.join(format!(
                    "multiproc-stdio-{}-{}",
                    std::process::id(),
                    line!()
                ));
                let file = std::fs::File::create(&path).unwrap();
                let mut p = Builder::new()
                    .start_method(m())
                    .stdin(Stdio::null())
                    .stdout(file)
                    .process(
                        |_: ()| {
                            env_cwd_and_echo(());
                        },
                        (),
                    );
                p.start().unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(0));
                let written = std::fs::read_to_string(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                assert_eq!(written, "");
                // A missing working directory is an error from spawn, not a silent child.
                assert!(matches!(
                    Builder::new()
                        .start_method(m())
                        .current_dir("/no/such/dir")
                        .spawn(add, (1, 2)),
                    Err(Error::Io(_))
                ));
            }

            #[test]
            fn join_handle_join_timeout() {
                multiproc::init();
                let go = multiproc::Event::new().unwrap();
                let mut h = Builder::new()
                    .start_method(m())
                    .spawn(wait_then_answer, go.clone())
                    .unwrap();
                // The child blocks on `go`: nothing yet, and the handle stays usable.
                assert!(h.join_timeout(Duration::ZERO).unwrap().is_none());
                assert!(h.join_timeout(Duration::from_millis(50)).unwrap().is_none());
                go.set();
                assert_eq!(h.join_timeout(Duration::from_secs(60)).unwrap(), Some(42));
                assert!(matches!(
                    h.join_timeout(Duration::ZERO),
                    Err(Error::InvalidOperation(_))
                ));
                // A child that dies: its death, not a timeout.
                let mut h = Builder::new()
                    .start_method(m())
                    .spawn(sleep_ms, 60_000)
                    .unwrap();
                assert!(h.join_timeout(Duration::ZERO).unwrap().is_none());
                h.kill().unwrap();
                assert!(matches!(
                    h.join_timeout(Duration::from_secs(60)),
                    Err(Error::WorkerDied {
                        signal: Some(9),
                        ..
                    })
                ));
            }

            #[test]
            fn start_twice_and_unstarted() {
                multiproc::init();
                let mut p = Process::new(sleep_ms, 0).with_start_method(m());
                assert!(matches!(p.join(), Err(Error::NotStarted)));
                assert!(matches!(p.terminate(), Err(Error::NotStarted)));
                assert!(!p.is_alive());
                assert_eq!(p.pid(), None);
                p.start().unwrap();
                assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
                p.join().unwrap();
                assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
            }

            #[test]
            fn join_timeout_behaviour() {
                multiproc::init();
                let mut p = Process::new(sleep_ms, 60_000).with_start_method(m());
                p.start().unwrap();
                let t = Instant::now();
                assert!(!p.join_timeout(Duration::ZERO).unwrap());
                // A zero timeout does not wait for the child (which sleeps 60 s); the bound
                // leaves room for a loaded machine.
                assert!(t.elapsed() < Duration::from_secs(5));
                let t = Instant::now();
                assert!(!p.join_timeout(Duration::from_millis(150)).unwrap());
                assert!(t.elapsed() >= Duration::from_millis(140));
                p.kill().unwrap();
                assert!(p.join_timeout(Duration::from_secs(10)).unwrap());
                assert!(p.join_timeout(Duration::ZERO).unwrap());
            }

            #[test]
            fn names_and_identity() {
                multiproc::init();
                let h = Builder::new()
                    .start_method(m())
                    .name("worker-7")
                    .spawn(who, ())
                    .unwrap();
                let pid = h.pid();
                let (name, child_pid, parent) = h.join().unwrap();
                assert_eq!(name, "worker-7");
                assert_eq!(child_pid, pid);
                assert_eq!(
                    parent,
                    Some(("MainProcess".to_string(), std::process::id()))
                );

                let p = Process::new(sleep_ms, 0);
                let q = Process::new(sleep_ms, 0);
                assert!(p.name().starts_with("Process-"), "{}", p.name());
                assert_ne!(p.name(), q.name());
                assert_eq!(multiproc::current_process().name(), "MainProcess");
                assert!(multiproc::parent_process().is_none());
            }

            #[test]
            fn spawn_returns_values_and_errors() {
                multiproc::init();
                let b = || Builder::new().start_method(m());
                assert_eq!(b().spawn(add, (2, 3)).unwrap().join().unwrap(), 5);
                match b().spawn(panics, "kaput".to_string()).unwrap().join() {
                    Err(Error::TaskPanicked {
                        message, location, ..
                    }) => {
                        assert_eq!(message, "kaput");
                        let loc = location.expect("location");
                        assert!(loc.contains("process.rs"), "{loc}");
                    }
                    other => panic!("expected TaskPanicked, got {other:?}"),
                }
                let h = b().spawn(sleep_ms, 60_000).unwrap();
                let pid = h.pid();
                h.kill().unwrap();
                match h.join() {
                    Err(Error::WorkerDied { pid: p, signal, .. }) => {
                        assert_eq!(p, pid);
                        assert_eq!(signal, Some(9));
                    }
                    other => panic!("expected WorkerDied, got {other:?}"),
                }
                match b().spawn(exit_with, 3).unwrap().join() {
                    Err(Error::WorkerDied {
                        exitcode, signal, ..
                    }) => {
                        assert_eq!(exitcode, Some(3));
                        assert_eq!(signal, None);
                    }
                    other => panic!("expected WorkerDied, got {other:?}"),
                }
                // Processes start processes.
                assert_eq!(b().spawn(nested_spawn, m()).unwrap().join().unwrap(), 42);
            }

            #[test]
            fn build_mismatch_is_an_error() {
                multiproc::init();
                let h = Builder::new()
                    .start_method(m())
                    .build_id_override(0xdead_beef)
                    .spawn(add, (1, 1))
                    .unwrap();
                assert!(matches!(h.join(), Err(Error::BuildMismatch(_))));
                let mut p = Process::new(sleep_ms, 0)
                    .with_start_method(m())
                    .with_build_id_override(1);
                p.start().unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(255));
            }

            #[test]
            fn hundred_processes_no_zombies() {
                multiproc::init();
                let mut ps: Vec<Process> = (0..100)
                    .map(|_| Process::new(sleep_ms, 0).with_start_method(m()))
                    .collect();
                for p in &mut ps {
                    p.start().unwrap();
                }
                for p in &ps {
                    p.join().unwrap();
                    assert_eq!(p.exitcode(), Some(0));
                }
                drop(ps);
                assert_eq!(zombies_of_me(), Vec::<u32>::new());
                // Dropped while still running: reaped once it ends (by active_children).
                let mut p = Process::new(sleep_ms, 50).with_start_method(m());
                p.start().unwrap();
                let pid = p.pid().unwrap();
                drop(p);
                assert!(eventually(Duration::from_secs(5), || {
                    multiproc::active_children();
                    !zombies_of_me().contains(&pid) && !running(pid)
                }));
            }

            #[test]
            fn active_children_lists_and_reaps() {
                multiproc::init();
                let mut p = Process::new(sleep_ms, 60_000).with_start_method(m());
                p.start().unwrap();
                let pid = p.pid().unwrap();
                let kids = multiproc::active_children();
                assert!(kids.iter().any(|k| k.pid() == pid && k.name() == p.name()));
                p.kill().unwrap();
                assert!(eventually(Duration::from_secs(5), || {
                    !multiproc::active_children().iter().any(|k| k.pid() == pid)
                }));
                // active_children reaped it: no zombie, and join still reports the code.
                assert!(!zombies_of_me().contains(&pid));
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(-9));
            }

            #[test]
            fn grandchild_dies_with_killed_parent() {
                multiproc::init();
                for grand in [
                    StartMethod::ForkServer,
                    StartMethod::Spawn,
                    StartMethod::Fork,
                ] {
                    let (rx, tx) = multiproc::pipe_simplex::<u32>().unwrap();
                    let mut p =
                        Process::new(parent_of_sleeper, (tx, grand, false)).with_start_method(m());
                    p.start().unwrap();
                    let grandchild = rx.recv().unwrap();
                    assert!(running(grandchild));
                    p.kill().unwrap();
                    p.join().unwrap();
                    assert!(
                        eventually(Duration::from_secs(5), || !running(grandchild)),
                        "grandchild {grandchild} ({grand:?}) outlived its killed parent"
                    );
                }
            }

            #[test]
            fn exit_terminates_daemons_and_waits_for_others() {
                multiproc::init();
                // A daemon grandchild is terminated when its parent exits.
                let (rx, tx) = multiproc::pipe_simplex::<u32>().unwrap();
                let mut p = Process::new(leaves_child, (tx, StartMethod::ForkServer, true, 60_000))
                    .with_start_method(m());
                p.start().unwrap();
                let grandchild = rx.recv().unwrap();
                assert!(p.join_timeout(Duration::from_secs(10)).unwrap());
                assert_eq!(p.exitcode(), Some(0));
                assert!(eventually(Duration::from_secs(5), || !running(grandchild)));

                // A non-daemon grandchild is waited for.
                let (rx, tx) = multiproc::pipe_simplex::<u32>().unwrap();
                let t = Instant::now();
                let mut p = Process::new(leaves_child, (tx, StartMethod::Spawn, false, 400))
                    .with_start_method(m());
                p.start().unwrap();
                let _grandchild = rx.recv().unwrap();
                p.join().unwrap();
                assert!(t.elapsed() >= Duration::from_millis(400));
                assert_eq!(p.exitcode(), Some(0));
            }
        }
    };
}

method_tests!(forkserver, StartMethod::ForkServer);
method_tests!(spawn, StartMethod::Spawn);
method_tests!(fork, StartMethod::Fork);

#[test]
fn default_method_is_forkserver_and_settable() {
    multiproc::init();
    assert_eq!(multiproc::get_start_method(), StartMethod::ForkServer);
    multiproc::set_start_method(StartMethod::Spawn).unwrap();
    assert_eq!(multiproc::get_start_method(), StartMethod::Spawn);
    let h = multiproc::spawn(add, (1, 2)).unwrap();
    assert_eq!(h.join().unwrap(), 3);
    multiproc::set_start_method(StartMethod::ForkServer).unwrap();
}

#[test]
fn cpu_count_is_positive() {
    assert!(multiproc::cpu_count() >= 1);
}

/// Pids of this process's fork servers (children whose start-up role says so).
fn fork_servers() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !matches!(stat(pid), Some((s, ppid)) if ppid == me && s != 'Z') {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env
            .split(|&b| b == 0)
            .any(|kv| kv.starts_with(b"MULTIPROC_ROLE=forkserver"))
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_killed_fork_server_is_replaced() {
    multiproc::init();
    let h = Builder::new()
        .start_method(StartMethod::ForkServer)
        .spawn(add, (1, 1))
        .unwrap();
    assert_eq!(h.join().unwrap(), 2);
    let servers = fork_servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let pid = rustix::process::Pid::from_raw(servers[0] as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert!(eventually(Duration::from_secs(5), || !running(servers[0])));
    // The next start notices, reaps the dead server and starts a new one.
    let h = Builder::new()
        .start_method(StartMethod::ForkServer)
        .spawn(add, (2, 2))
        .unwrap();
    assert_eq!(h.join().unwrap(), 4);
    let now = fork_servers();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], servers[0]);
    assert!(!zombies_of_me().contains(&servers[0]));
}

/// Starts a process through its own fork server and returns the server's pid.
fn uses_a_fork_server(_: ()) -> u32 {
    let h = Builder::new()
        .start_method(StartMethod::ForkServer)
        .spawn(add, (1, 2))
        .unwrap();
    assert_eq!(h.join().unwrap(), 3);
    let s = fork_servers();
    assert_eq!(s.len(), 1);
    s[0]
}

#[test]
fn fork_server_is_reaped_when_its_owner_exits() {
    multiproc::init();
    let h = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn(uses_a_fork_server, ())
        .unwrap();
    let server = h.join().unwrap();
    // The child stopped and reaped its server before exiting: nothing left for init.
    assert!(
        stat(server).is_none(),
        "fork server {server} left behind: {:?}",
        stat(server)
    );
}

/// Set in the test process before it starts children: only a forked child sees it.
static MARK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn mark(_: u32) -> u32 {
    MARK.load(std::sync::atomic::Ordering::SeqCst)
}

fn exit_with_mark(_: ()) {
    std::process::exit(mark(0) as i32)
}

#[test]
fn a_context_binds_its_start_method_to_what_it_makes() {
    multiproc::init();
    allow_fork();
    MARK.store(7, std::sync::atomic::Ordering::SeqCst);
    // Spawn: fresh executions (no mark), and no fork server is ever started.
    let ctx = multiproc::get_context(StartMethod::Spawn);
    assert_eq!(ctx.get_start_method(), StartMethod::Spawn);
    let mut p = ctx.process(exit_with_mark, ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(ctx.spawn(mark, 0).unwrap().join().unwrap(), 0);
    assert_eq!(ctx.pool(2).unwrap().map(mark, 0..4).unwrap(), vec![0; 4]);
    let m = ctx.manager().unwrap();
    assert_eq!(m.value(1).unwrap().get().unwrap(), 1);
    m.shutdown().unwrap();
    assert!(fork_servers().is_empty());
    assert_eq!(multiproc::get_start_method(), StartMethod::ForkServer);
    // Fork: copies of this process (the mark shows).
    let ctx = multiproc::get_context(StartMethod::Fork);
    let mut p = ctx.process(exit_with_mark, ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(7));
    assert_eq!(ctx.builder().spawn(mark, 0).unwrap().join().unwrap(), 7);
    assert_eq!(
        ctx.pool_builder()
            .processes(1)
            .build()
            .unwrap()
            .apply(mark, 0)
            .unwrap(),
        7
    );
    assert!(fork_servers().is_empty());
    // The fork server: now one exists.
    let ctx = multiproc::get_context(StartMethod::ForkServer);
    assert_eq!(ctx.spawn(mark, 0).unwrap().join().unwrap(), 0);
    assert_eq!(fork_servers().len(), 1);
    // The default context follows the process-wide method.
    multiproc::set_start_method(StartMethod::Spawn).unwrap();
    assert_eq!(
        multiproc::Context::default().get_start_method(),
        StartMethod::Spawn
    );
    multiproc::set_start_method(StartMethod::ForkServer).unwrap();
    assert!(zombies_of_me().is_empty());
}

/// This process's start method, and its own child's.
fn methods_down_the_line(depth: u32) -> Vec<StartMethod> {
    let mut v = vec![multiproc::get_start_method()];
    if depth > 0 {
        v.extend(
            multiproc::spawn(methods_down_the_line, depth - 1)
                .unwrap()
                .join()
                .unwrap(),
        );
    }
    v
}

#[test]
fn children_inherit_the_start_method() {
    multiproc::init();
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        multiproc::set_start_method(method).unwrap();
        let got = multiproc::spawn(methods_down_the_line, 1)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, vec![method, method], "started with {method:?}");
    }
    // A child started by a method chosen for it has that method as its default, and its
    // own children inherit it (Python's `BaseProcess._bootstrap` forces a context's method
    // in the child: `TestStartMethod.test_context`).
    multiproc::set_start_method(StartMethod::Spawn).unwrap();
    let h = Builder::new()
        .start_method(StartMethod::ForkServer)
        .spawn(methods_down_the_line, 1)
        .unwrap();
    assert_eq!(
        h.join().unwrap(),
        vec![StartMethod::ForkServer, StartMethod::ForkServer]
    );
    multiproc::set_start_method(StartMethod::ForkServer).unwrap();
}

/// Counts its run in `runs[i]`.
fn mark_run((i, runs): (usize, multiproc::Array<u32>)) -> usize {
    runs.lock().unwrap()[i] += 1;
    i
}

/// Issue 11.4: the fork server killed again and again while four threads start
/// processes through it. Every start runs its target at most once (exactly once if it
/// succeeded), and no child is left unreaped.
#[test]
fn fork_server_killed_during_starts_runs_each_target_at_most_once() {
    multiproc::init();
    const THREADS: usize = 4;
    const EACH: usize = 15;
    let runs = multiproc::Array::<u32>::new(THREADS * EACH).unwrap();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killer = {
        let finished = finished.clone();
        std::thread::spawn(move || {
            let mut kills = 0;
            let t = Instant::now();
            while finished.load(std::sync::atomic::Ordering::SeqCst) < THREADS
                && t.elapsed() < Duration::from_secs(120)
            {
                if let Some(pid) = multiproc::start::fork_server_pid() {
                    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
                    if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                        kills += 1;
                    }
                }
                // The pace of the attack (not a synchronisation): a few starts per kill.
                sleep_ms(3);
            }
            kills
        })
    };
    let starters: Vec<_> = (0..THREADS)
        .map(|t| {
            let runs = runs.clone();
            let finished = finished.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for k in 0..EACH {
                    let i = t * EACH + k;
                    let r = Builder::new()
                        .start_method(StartMethod::ForkServer)
                        .spawn(mark_run, (i, runs.clone()));
                    out.push((i, r.map(|h| h.join())));
                }
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                out
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for s in starters {
        outcomes.extend(s.join().unwrap());
    }
    let kills = killer.join().unwrap();
    let runs = runs.to_vec();
    let mut started = 0;
    for (i, r) in outcomes {
        match r {
            Ok(joined) => {
                assert_eq!(joined.unwrap(), i);
                assert_eq!(
                    runs[i], 1,
                    "start {i} succeeded: its target ran {} times",
                    runs[i]
                );
                started += 1;
            }
            // A start may fail (both servers it tried were killed), but then it ran nothing.
            Err(_) => assert_eq!(runs[i], 0, "start {i} failed but its target ran"),
        }
    }
    assert!(kills > 0 && started > 0, "kills {kills}, started {started}");
    // The killer may have killed a server after the last start: the next start reaps it.
    let h = Builder::new()
        .start_method(StartMethod::ForkServer)
        .spawn(add, (1, 1))
        .unwrap();
    assert_eq!(h.join().unwrap(), 2);
    assert!(
        eventually(Duration::from_secs(5), || zombies_of_me().is_empty()),
        "unreaped: {:?}",
        zombies_of_me()
    );
}

fn panics_in_grandchild(_: ()) {
    panic!("boom in the grandchild");
}

/// A pool worker's own panics are quiet (they travel to the parent as the task's error);
/// a child it forks is a process of its own, whose panic is reported on its standard error
/// like any child's, under its own name only: the after-fork hook resets the worker's
/// quiet panics, and the worker's panic hook is not wrapped a second time.
fn fork_a_panicking_child(_: ()) -> (String, Option<i32>) {
    use std::io::Read;
    let mut p = Builder::new()
        .start_method(StartMethod::Fork)
        .stderr(multiproc::process::Stdio::piped())
        .name("grandchild")
        .process(panics_in_grandchild, ());
    p.start().unwrap();
    let mut err = String::new();
    p.take_stderr().unwrap().read_to_string(&mut err).unwrap();
    p.join().unwrap();
    (err, p.exitcode())
}

#[test]
fn a_child_forked_by_a_pool_worker_reports_its_panic() {
    multiproc::init();
    let pool = multiproc::Pool::new(1).unwrap();
    let (err, code) = pool.apply(fork_a_panicking_child, ()).unwrap();
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("Process grandchild:\n"),
        "its stderr: {err:?}"
    );
    assert!(!err.contains("PoolWorker"), "its stderr: {err:?}");
    assert!(
        err.contains("boom in the grandchild"),
        "its stderr: {err:?}"
    );
    pool.close();
    pool.join().unwrap();
}

/// Python's `p.daemon = True` after `start()` fails (`AssertionError: process has already
/// started`): `set_daemon` gives `Error::AlreadyStarted` and `with_daemon` panics, and the
/// flag stays the one the child started with. The name may still change, as in Python.
#[test]
fn daemon_flag_is_refused_after_start_but_the_name_is_not() {
    multiproc::init();
    let mut p = Process::new(sleep_ms, 0);
    p.set_daemon(true).unwrap();
    p.start().unwrap();
    assert!(matches!(p.set_daemon(false), Err(Error::AlreadyStarted)));
    assert!(p.daemon());
    p.join().unwrap();
    assert!(matches!(p.set_daemon(false), Err(Error::AlreadyStarted)));
    let p = p.with_name("renamed");
    assert_eq!(p.name(), "renamed");
    assert!(p.daemon());
    let panic =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || p.with_daemon(false)));
    let message = panic.expect_err("with_daemon after start panics");
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("process already started"), "{message}");
}

/// Issue 12.2: the fork server killed on its own is reaped at once, without waiting for
/// the next start to notice (no zombie is left meanwhile); the processes it started are
/// not reaped by that (their exit codes reach their `join`), and the next start works.
#[test]
fn a_killed_fork_server_is_reaped_without_another_call() {
    multiproc::init();
    let mut before =
        Process::new(std::process::ExitCode::from, 7u8).with_start_method(StartMethod::ForkServer);
    before.start().unwrap();
    let server = multiproc::start::fork_server_pid().expect("a fork server runs");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || stat(server).is_none()),
        "the killed fork server is left: {:?}",
        stat(server)
    );
    before.join().unwrap();
    assert_eq!(before.exitcode(), Some(7));
    let mut p = Process::new(sleep_ms, 0).with_start_method(StartMethod::ForkServer);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_ne!(multiproc::start::fork_server_pid(), Some(server));
}

/// Runs `f` (a `with_*` call on a started process) and returns its panic message.
fn panic_message(f: impl FnOnce() -> Process) -> String {
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let payload = panic.expect_err("a with_* setting after start panics");
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

/// Every setting the child starts with is refused once it has started, like the daemon
/// flag (`with_*` panics naming the setting, `set_authkey` gives `Error::AlreadyStarted`),
/// and the process keeps reporting what the child started with. Before start both work.
#[test]
fn authkey_and_start_method_are_refused_after_start_like_the_daemon_flag() {
    multiproc::init();
    let start = |key: &[u8]| {
        let mut p = Process::new(sleep_ms, 0)
            .with_authkey(key)
            .with_start_method(StartMethod::Spawn);
        p.set_authkey(b"second").unwrap();
        assert_eq!(p.authkey(), b"second");
        p.start().unwrap();
        p
    };
    let mut p = start(b"first");
    assert!(matches!(
        p.set_authkey(b"third"),
        Err(Error::AlreadyStarted)
    ));
    assert_eq!(p.authkey(), b"second");
    p.join().unwrap();
    assert!(matches!(
        p.set_authkey(b"third"),
        Err(Error::AlreadyStarted)
    ));
    let m = panic_message(move || p.with_authkey(b"third"));
    assert!(
        m.contains("authkey") && m.contains("process already started"),
        "{m}"
    );
    let p = start(b"first");
    p.join().unwrap();
    let m = panic_message(move || p.with_start_method(StartMethod::Fork));
    assert!(
        m.contains("start method") && m.contains("process already started"),
        "{m}"
    );
}

// --- SIGCHLD while blocked ------------------------------------------------------------------

/// Starts and joins short-lived children (through the fork server, so each is a child of
/// the thread that started the server: the kernel sends their SIGCHLD to that thread
/// first) until `stop`, counting those that ended.
fn churn_children(
    ended: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    use std::sync::atomic::Ordering::SeqCst;
    while !stop.load(SeqCst) {
        let mut p = Process::new(sleep_ms, 0).with_start_method(StartMethod::ForkServer);
        p.start().map_err(|e| format!("start: {e}"))?;
        p.join().map_err(|e| format!("join: {e}"))?;
        ended.fetch_add(1, SeqCst);
    }
    Ok(())
}

/// In a child, on its main thread (which started the fork server, so the SIGCHLD of every
/// child another thread starts comes here, and the crate's handler is installed): each
/// blocking call with a timeout, while children end one after another. Returns, per call,
/// what went wrong (empty: nothing), after checking that it returned what a timeout gives,
/// no sooner than its timeout and not much later, and that children ended meanwhile.
fn blocked_calls_while_children_end(_: ()) -> Vec<String> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let mut wrong = Vec::new();
    // The fork server, started from this thread.
    let mut first = Process::new(sleep_ms, 0).with_start_method(StartMethod::ForkServer);
    first.start().unwrap();
    first.join().unwrap();
    let q = multiproc::Queue::<u8>::new().unwrap();
    let (a, b) = multiproc::pipe::<u32>().unwrap();
    let lock = multiproc::Lock::new().unwrap();
    let event = multiproc::Event::new().unwrap();
    let pool = multiproc::Pool::new(1).unwrap();
    let slow = pool.apply_async(sleep_ms, 60_000);
    let mut sleeper = Process::new(sleep_ms, 60_000).with_start_method(StartMethod::ForkServer);
    sleeper.start().unwrap();
    // The lock is held by another thread for the whole test.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            lock.acquire().unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
            lock.release().unwrap();
        })
    };
    held_rx.recv().unwrap();
    let ended = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let churner = {
        let (ended, stop) = (ended.clone(), stop.clone());
        std::thread::spawn(move || churn_children(ended, stop))
    };
    let timeout = Duration::from_millis(400);
    let mut run = |what: &str, call: &mut dyn FnMut() -> Result<bool, String>| {
        let before = ended.load(SeqCst);
        let t = Instant::now();
        let r = call();
        let took = t.elapsed();
        let during = ended.load(SeqCst) - before;
        match r {
            Ok(true) => {}
            Ok(false) => wrong.push(format!("{what}: did not time out")),
            Err(e) => wrong.push(format!("{what}: {e}")),
        }
        if took < timeout || took > timeout + Duration::from_secs(5) {
            wrong.push(format!(
                "{what}: took {took:?} for a timeout of {timeout:?}"
            ));
        }
        if during == 0 {
            wrong.push(format!("{what}: only {during} children ended meanwhile"));
        }
    };
    run("Queue::get_timeout", &mut || match q.get_timeout(timeout) {
        Err(Error::Empty) => Ok(true),
        other => Err(format!("{other:?}")),
    });
    run("Connection::poll", &mut || {
        b.poll(Some(timeout))
            .map(|ready| !ready)
            .map_err(|e| e.to_string())
    });
    run("Lock::acquire_timeout", &mut || {
        lock.acquire_timeout(timeout)
            .map(|got| !got)
            .map_err(|e| e.to_string())
    });
    run("Event::wait_timeout", &mut || {
        event
            .wait_timeout(timeout)
            .map(|set| !set)
            .map_err(|e| e.to_string())
    });
    run(
        "AsyncResult::get_timeout",
        &mut || match slow.get_timeout(timeout) {
            Err(Error::Timeout) => Ok(true),
            other => Err(format!("{other:?}")),
        },
    );
    run("Process::join_timeout", &mut || {
        sleeper
            .join_timeout(timeout)
            .map(|done| !done)
            .map_err(|e| e.to_string())
    });
    // A blocking recv without a timeout gets its message, sent once more children ended.
    let sender = {
        let ended = ended.clone();
        std::thread::spawn(move || {
            let from = ended.load(SeqCst);
            while ended.load(SeqCst) < from + 5 {
                std::thread::sleep(Duration::from_millis(5));
            }
            a.send(&7).unwrap();
        })
    };
    match b.recv() {
        Ok(7) => {}
        other => wrong.push(format!("Connection::recv: {other:?}")),
    }
    sender.join().unwrap();
    stop.store(true, SeqCst);
    if let Err(e) = churner.join().unwrap() {
        wrong.push(format!("churner: {e}"));
    }
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    sleeper.kill().unwrap();
    sleeper.join().unwrap();
    pool.terminate().unwrap();
    wrong
}

/// Loose end 1: the crate's SIGCHLD handler (installed with the fork server) interrupts the
/// system calls of a thread that waits, each time a child ends; none of the crate's waits
/// with a timeout turns that into an error, ends early, or starts its timeout again (each
/// returns within its timeout and a margin while children end every few milliseconds), and a
/// wait without a timeout goes on until its message comes.
#[test]
fn blocking_calls_ride_out_sigchld_from_children_that_end() {
    multiproc::init();
    let h = multiproc::spawn(blocked_calls_while_children_end, ()).unwrap();
    let wrong = h.join().unwrap();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(zombies_of_me().is_empty());
}
