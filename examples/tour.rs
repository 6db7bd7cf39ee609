//! A guided tour of multiproc: every idea of the seed course material, one short section
//! each, in the order the course introduces them.
//!
//! ```text
//! cargo run --release --example tour            # the whole tour
//! cargo run --release --example tour -- pipe    # only the sections whose title contains "pipe"
//! cargo run --release --example tour -- --list  # the section titles
//! ```
//!
//! Each section is one function `fn() -> multiproc::Result<()>` listed in [`SECTIONS`];
//! a new part of the crate adds its section with one function and one line in that table,
//! at its place in the course's order.
//!
//! Lines printed by child processes are marked with `  [child]` or show the child's pid, so
//! the parent's and the children's output can be told apart. The order of the children's
//! lines varies from run to run: that is the point of several sections.

use std::time::{Duration, Instant};

use multiproc::{
    current_process, parent_process, Array, Barrier, Condition, Connection, Error, Event, Lock,
    Pool, Process, RawValue, Semaphore, StartMethod, Value,
};

type Section = (&'static str, fn() -> multiproc::Result<()>);

/// The tour, in order. New sections go in at their place in the course's order.
const SECTIONS: &[Section] = &[
    ("Processes and pids", processes_and_pids),
    ("Names and execution order", names_and_order),
    ("join, is_alive and join_timeout", join_and_alive),
    ("Exit codes", exit_codes),
    ("Separate memory", separate_memory),
    ("Processes starting processes", processes_starting_processes),
    ("Start methods", start_methods),
    ("Pipes", pipes),
    ("Queues", queues),
    ("spawn: return values and panics", spawn_values_and_panics),
    ("Locks", locks),
    ("Shared values", shared_values),
    ("Other primitives", other_primitives),
    ("Pools", pools),
    ("Why more processes stop helping", pool_speedup),
    (
        "Managers: a server process holding shared objects",
        managers,
    ),
];

fn main() {
    multiproc::init();

    let filter: Vec<String> = std::env::args().skip(1).collect();
    if filter.iter().any(|a| a == "--list") {
        for (title, _) in SECTIONS {
            println!("{title}");
        }
        return;
    }
    let chosen: Vec<&Section> = SECTIONS
        .iter()
        .filter(|(title, _)| {
            filter.is_empty()
                || filter
                    .iter()
                    .any(|f| title.to_lowercase().contains(&f.to_lowercase()))
        })
        .collect();

    println!(
        "multiproc tour — main process pid {}, {} CPUs, default start method {:?}",
        current_process().pid(),
        multiproc::cpu_count(),
        multiproc::get_start_method()
    );
    let mut failed = 0;
    for (i, (title, run)) in chosen.iter().enumerate() {
        println!();
        println!("== {}. {} ==", i + 1, title);
        let t = Instant::now();
        match run() {
            Ok(()) => println!("   ({:.1} ms)", t.elapsed().as_secs_f64() * 1e3),
            Err(e) => {
                failed += 1;
                println!("   SECTION FAILED: {e}");
            }
        }
    }
    println!();
    if failed > 0 {
        println!("{failed} section(s) failed");
        std::process::exit(1);
    }
    println!("tour complete: {} section(s)", chosen.len());
}

// ---------------------------------------------------------------------------------------
// 1. Processes and pids (notebook: print_square / print_cube)

fn print_square(n: i64) {
    println!("  [child] pid {}: Square: {}", std::process::id(), n * n);
}

fn print_cube(n: i64) {
    println!("  [child] pid {}: Cube: {}", std::process::id(), n * n * n);
}

fn processes_and_pids() -> multiproc::Result<()> {
    println!("A Process runs a plain fn with serde-encoded arguments in another process.");
    println!("cpu_count() = {}", multiproc::cpu_count());
    println!("the main process: pid {}", current_process().pid());
    let mut p1 = Process::new(print_cube, 3);
    let mut p2 = Process::new(print_square, 4);
    println!("before start: p1.pid() = {:?}", p1.pid());
    p1.start()?;
    p2.start()?;
    println!(
        "started {} (pid {:?}) and {} (pid {:?})",
        p1.name(),
        p1.pid(),
        p2.name(),
        p2.pid()
    );
    p1.join()?;
    p2.join()?;
    println!("Done — both children have finished");
    println!(
        "starting p1 again: {}",
        match p1.start() {
            Err(e) => e.to_string(),
            Ok(()) => "started?!".into(),
        }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Names and execution order (CSinParallel: manyGreetings3)

fn say_hi3(person_name: String) {
    let me = current_process();
    let parent = parent_process().map_or_else(|| "?".to_string(), |p| p.name().to_string());
    println!(
        "  [child] Hi {person_name} from process {} - pid {} (parent: {parent})",
        me.name(),
        me.pid()
    );
}

fn names_and_order() -> multiproc::Result<()> {
    println!(
        "Hi from process {} (parent process), named {:?}",
        current_process().pid(),
        current_process().name()
    );
    let mut children = Vec::new();
    for i in 0..6 {
        let mut p = Process::new(say_hi3, "Jimmy".to_string()).with_name(i.to_string());
        p.start()?;
        children.push(p);
    }
    let unnamed = Process::new(say_hi3, String::new());
    println!(
        "(a process without a name gets a default one: {})",
        unnamed.name()
    );
    for p in &children {
        p.join()?;
    }
    println!("The children were started 0..5; the operating system chose the order above.");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. join, is_alive and join_timeout (CSinParallel: haveToWait)

fn slowpoke(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    println!("  [child] Slowpoke: Ok, I'm coming");
}

fn join_and_alive() -> multiproc::Result<()> {
    let mut p = Process::new(slowpoke, 300);
    p.start()?;
    println!("Waiter: Any day now... (is_alive = {})", p.is_alive());
    let ended = p.join_timeout(Duration::from_millis(50))?;
    println!("join_timeout(50 ms) -> {ended} (still running)");
    p.join()?;
    println!(
        "Waiter: Finally! Geez. (is_alive = {}, exitcode = {:?})",
        p.is_alive(),
        p.exitcode()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Exit codes (Python's Process.exitcode)
//
// A target's return value counts as a Rust main's does: `()` and `Ok(())` give 0, an
// `Err(e)` prints `Error: {e:?}` on the child's stderr and gives 1 (as a raise does in
// Python), a `std::process::ExitCode` gives its number.

fn finish_ok(_: ()) {}

fn finish_panicking(_: ()) {
    panic!("something went wrong in the child");
}

fn finish_exit7(_: ()) {
    std::process::exit(7);
}

fn sleep_long(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

fn exit_codes() -> multiproc::Result<()> {
    println!("exitcode: None while running, 0 ok, 1 after a panic, the code given to exit,");
    println!("-N when killed by signal N. (The panic below is the child's, on its stderr.)");
    let mut runs: Vec<(&str, Process)> = vec![
        ("returns normally", Process::new(finish_ok, ())),
        ("panics", Process::new(finish_panicking, ())),
        ("calls exit(7)", Process::new(finish_exit7, ())),
    ];
    for (_, p) in runs.iter_mut() {
        p.start()?;
        p.join()?;
    }
    let mut t = Process::new(sleep_long, ());
    t.start()?;
    println!(
        "a sleeping child while running: exitcode = {:?}",
        t.exitcode()
    );
    t.terminate()?;
    t.join()?;
    runs.push(("terminate() (SIGTERM)", t));
    let mut k = Process::new(sleep_long, ());
    k.start()?;
    k.kill()?;
    k.join()?;
    runs.push(("kill() (SIGKILL)", k));
    for (what, p) in &runs {
        println!("  {what:<22} -> exitcode {:?}", p.exitcode());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Separate memory (notebook: squareList)

static RESULT: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

fn square_list(mylist: Vec<i64>) {
    let mut result = RESULT.lock().unwrap_or_else(|p| p.into_inner());
    for num in mylist {
        result.push(num * num);
    }
    println!("  [child] Result {:?}", *result);
}

fn separate_memory() -> multiproc::Result<()> {
    let mut p = Process::new(square_list, vec![1, 2, 3, 4]);
    p.start()?;
    p.join()?;
    println!(
        "parent's RESULT after the child filled its own: {:?}",
        *RESULT.lock().unwrap_or_else(|p| p.into_inner())
    );
    println!("Each process has its own memory: the child changed its copy only.");
    println!("(Shared Value/Array, queues and managers are how processes share data.)");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. Processes starting processes (worksheet: how many times will "bob" print?)

fn printer(_: ()) {
    println!("  [child] bob  ({})", current_process().name());
}

fn spawn_processes(_: ()) {
    println!("  [child] bob  ({})", current_process().name());
    for _ in 0..2 {
        if let Err(e) = Process::new(printer, ()).start() {
            eprintln!("cannot start a printer: {e}");
        }
    }
    // Like Python, a process waits for its non-daemon children before it exits.
}

fn processes_starting_processes() -> multiproc::Result<()> {
    let mut ps = Vec::new();
    for _ in 0..4 {
        let mut p = Process::new(spawn_processes, ());
        p.start()?;
        ps.push(p);
    }
    for p in &ps {
        p.join()?;
    }
    println!("4 processes print bob and start 2 each: 4 + 4 × 2 = 12 bobs.");
    println!("Names show who started whom: Process-2:1 is the 1st child of Process-2.");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 7. Start methods

fn whoami(_: ()) -> (u32, Option<u32>) {
    (current_process().pid(), parent_process().map(|p| p.pid()))
}

fn start_methods() -> multiproc::Result<()> {
    println!("ForkServer (default): a clean single-threaded server forks each child.");
    println!("Spawn: each child is a fresh exec of this program (runs main up to init()).");
    println!("Fork: fork() of the caller itself; refused if the caller has other threads.");
    for m in [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        // One start first, so a fork server's own start-up is not counted.
        let mut warm = Process::new(finish_ok, ()).with_start_method(m);
        warm.start()?;
        warm.join()?;
        let t = Instant::now();
        let n = 20;
        for _ in 0..n {
            let mut p = Process::new(finish_ok, ()).with_start_method(m);
            p.start()?;
            p.join()?;
        }
        let per = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        let (pid, ppid) = multiproc::Builder::new()
            .start_method(m)
            .spawn(whoami, ())?
            .join()?;
        let m = format!("{m:?}");
        println!(
            "  {m:<10} start+join {per:>6.2} ms per process; a child: pid {pid}, parent {ppid:?}"
        );
    }
    // A thread makes this process multi-threaded: Fork now refuses.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let refused = Process::new(finish_ok, ())
        .with_start_method(StartMethod::Fork)
        .start();
    let _ = tx.send(());
    let _ = helper.join();
    match refused {
        Err(e @ Error::InvalidOperation(_)) => {
            let text = e.to_string();
            let short: String = text.chars().take(90).collect();
            println!("  Fork with another thread running: {short}…");
        }
        Err(e) => println!("  Fork with another thread running: unexpected error {e}"),
        Ok(()) => println!("  Fork with another thread running: it started?!"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 8. Pipes (notebook: send_msg / rcv_msg ending on "end")

fn send_msg((conn, msgs): (Connection<String>, Vec<String>)) {
    for msg in &msgs {
        if conn.send(msg).is_err() {
            return;
        }
    }
    conn.close();
}

fn rcv_msg(conn: Connection<String>) {
    while let Ok(msg) = conn.recv() {
        if msg == "end" {
            break;
        }
        println!("  [child] {msg}");
    }
}

fn echo_bytes(conn: Connection<Vec<u8>>) {
    while let Ok(b) = conn.recv_bytes() {
        let reversed: Vec<u8> = b.into_iter().rev().collect();
        if conn.send_bytes(&reversed).is_err() {
            return;
        }
    }
}

fn pipes() -> multiproc::Result<()> {
    let msgs: Vec<String> = ["hey", "hello", "hru?", "end"].map(String::from).to_vec();
    let (parent_conn, child_conn) = multiproc::pipe::<String>()?;
    let mut p1 = Process::new(send_msg, (parent_conn, msgs));
    let mut p2 = Process::new(rcv_msg, child_conn);
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!("the receiver stopped at \"end\"");

    // Raw bytes both ways, poll with a timeout, and Eof once the peer is gone.
    let (a, b) = multiproc::pipe::<Vec<u8>>()?;
    let mut echo = Process::new(echo_bytes, b);
    echo.start()?;
    println!(
        "poll(10 ms) before sending: {}",
        a.poll(Some(Duration::from_millis(10)))?
    );
    a.send_bytes(b"multiproc")?;
    println!(
        "poll(1 s) after sending:    {}",
        a.poll(Some(Duration::from_secs(1)))?
    );
    println!(
        "echoed back reversed: {:?}",
        String::from_utf8_lossy(&a.recv_bytes()?)
    );
    echo.terminate()?;
    echo.join()?;
    // `b` moved into the child's arguments; the parent's copy was closed once the child
    // started, so with the child gone no one holds the other end.
    match a.recv_bytes() {
        Err(Error::Eof) => println!("recv after the peer is gone: Error::Eof"),
        other => println!("recv after the peer is gone: unexpected {other:?}"),
    }

    // A one-way pipe: its read end cannot send.
    let (rx, tx) = multiproc::pipe_simplex::<u32>()?;
    tx.send(&42)?;
    println!("pipe_simplex: received {}", rx.recv()?);
    match rx.send(&1) {
        Err(e) => println!("sending on the read end: {e}"),
        Ok(()) => println!("sending on the read end: it worked?!"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 10. spawn: return values and panics (std::thread's style)

fn add_many((seed, count): (u64, u64)) -> u64 {
    // A small deterministic stand-in for addManyNumbers' random sum.
    (0..count).map(|i| (seed + i * 7919) % 100 + 1).sum()
}

fn divide((a, b): (i32, i32)) -> i32 {
    if b == 0 {
        panic!("cannot divide {a} by zero");
    }
    a / b
}

fn spawn_values_and_panics() -> multiproc::Result<()> {
    let h1 = multiproc::spawn(add_many, (1, 500_000))?;
    let h2 = multiproc::spawn(add_many, (2, 500_000))?;
    let (a, b) = (h1.join()?, h2.join()?);
    println!("two children summed halves: {a} + {b} = {}", a + b);
    println!(
        "local check:                {}",
        add_many((1, 500_000)) + add_many((2, 500_000))
    );

    println!(
        "divide(7, 2) in a child = {}",
        multiproc::spawn(divide, (7, 2))?.join()?
    );
    println!("divide(1, 0) in a child (its panic message follows on stderr):");
    match multiproc::spawn(divide, (1, 0))?.join() {
        Err(Error::TaskPanicked {
            message, location, ..
        }) => println!(
            "  -> Error::TaskPanicked {{ message: {message:?}, location: {} }}",
            location.as_deref().unwrap_or("?")
        ),
        other => println!("  -> unexpected {other:?}"),
    }
    let h = multiproc::spawn(sleep_long, ())?;
    h.kill()?;
    match h.join() {
        Err(e @ Error::WorkerDied { .. }) => println!("a killed child: {e}"),
        other => println!("a killed child: unexpected {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 11. Locks (course: hole diggers, bank balance)

fn dig((worker_name, hole_id, lock): (String, usize, Lock)) -> multiproc::Result<()> {
    let _held = lock.lock()?; // released when `_held` drops
    println!("  [child] Hiddy-ho! I'm worker {worker_name} and today I have to dig hole {hole_id}");
    Ok(())
}

fn withdraw((balance, lock): (Value<i32>, Lock)) -> multiproc::Result<()> {
    for _ in 0..1000 {
        lock.acquire()?;
        balance.set(balance.get() - 1);
        lock.release()?;
    }
    Ok(())
}

fn deposit((balance, lock): (Value<i32>, Lock)) -> multiproc::Result<()> {
    for _ in 0..1000 {
        lock.acquire()?;
        balance.set(balance.get() + 1);
        lock.release()?;
    }
    Ok(())
}

fn hold_and_hang((lock, held): (Lock, Event)) {
    if lock.acquire().is_err() {
        return;
    }
    held.set();
    std::thread::sleep(Duration::from_secs(60));
}

fn locks() -> multiproc::Result<()> {
    println!("A Lock around printing: one digger prints at a time, in any order.");
    let lock = Lock::new()?;
    let mut diggers = Vec::new();
    for (hole_id, name) in ["A", "B", "C", "D", "E"].iter().enumerate() {
        let mut p = Process::new(dig, (name.to_string(), hole_id, lock.clone()));
        p.start()?;
        diggers.push(p);
    }
    for p in &diggers {
        p.join()?;
    }

    println!("1000 withdrawals and 1000 deposits of 1, in two processes, under one Lock:");
    for _ in 0..3 {
        let balance = Value::new(100i32)?;
        let lock = Lock::new()?;
        let mut p1 = Process::new(withdraw, (balance.clone(), lock.clone()));
        let mut p2 = Process::new(deposit, (balance.clone(), lock.clone()));
        p1.start()?;
        p2.start()?;
        p1.join()?;
        p2.join()?;
        println!("  Balance: {}", balance.get());
    }

    println!("A process killed while holding the Lock does not deadlock the others:");
    let lock = Lock::new()?;
    let held = Event::new()?;
    let h = multiproc::spawn(hold_and_hang, (lock.clone(), held.clone()))?;
    if !held.wait_timeout(Duration::from_secs(10))? {
        return Err(Error::Timeout);
    }
    h.kill()?;
    let t = Instant::now();
    match lock.acquire() {
        Err(Error::OwnerDied) => {
            println!(
                "  acquire() -> Error::OwnerDied after {:.0} ms, with the lock now held by us",
                t.elapsed().as_secs_f64() * 1e3
            );
            lock.release()?;
        }
        Ok(()) => {
            println!("  acquire() -> Ok (no owner death reported?!)");
            lock.release()?;
        }
        Err(e) => println!("  acquire() -> unexpected {e}"),
    }
    match h.join() {
        Err(e @ Error::WorkerDied { .. }) => println!("  the holder: {e}"),
        other => println!("  the holder: unexpected {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 12. Shared values (notebook: squareList with Value and Array; RawValue without a lock)

fn square_list_shared((mylist, result, square_sum): (Vec<i32>, Array<i32>, Value<i32>)) {
    for (idx, num) in mylist.iter().enumerate() {
        result.set(idx, num * num);
    }
    square_sum.set(result.to_vec().iter().sum());
}

const RACE_N: u32 = 200_000;

fn add_unlocked((r, start): (RawValue<i64>, Barrier)) {
    // Both adders start together, so that their loops overlap.
    if start.wait_timeout(Duration::from_secs(10)).is_err() {
        return;
    }
    for _ in 0..RACE_N {
        r.set(r.get() + 1);
    }
}

fn add_locked((r, lock, start): (RawValue<i64>, Lock, Barrier)) -> multiproc::Result<()> {
    start.wait_timeout(Duration::from_secs(10))?;
    for _ in 0..RACE_N {
        let _held = lock.lock()?;
        r.set(r.get() + 1);
    }
    Ok(())
}

fn shared_values() -> multiproc::Result<()> {
    println!("squareList again, now with a shared Array and Value: the parent sees the result.");
    let result = Array::<i32>::new(4)?;
    let square_sum = Value::new(0i32)?;
    let mut p = Process::new(
        square_list_shared,
        (vec![1, 2, 3, 4], result.clone(), square_sum.clone()),
    );
    p.start()?;
    p.join()?;
    println!("{}", square_sum.get());
    for i in result.to_vec() {
        println!("{i}");
    }

    let expected = 2 * i64::from(RACE_N);
    println!("Two processes add 1 to a RawValue {RACE_N} times each (get, then set):");
    let r = RawValue::new(0i64)?;
    let start = Barrier::new(2)?;
    let mut p1 = Process::new(add_unlocked, (r.clone(), start.clone()));
    let mut p2 = Process::new(add_unlocked, (r.clone(), start));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    let total = r.get();
    println!(
        "  without a lock: {total} (expected {expected}, {} updates lost this run)",
        expected - total
    );
    let r = RawValue::new(0i64)?;
    let lock = Lock::new()?;
    let start = Barrier::new(2)?;
    let mut p1 = Process::new(add_locked, (r.clone(), lock.clone(), start.clone()));
    let mut p2 = Process::new(add_locked, (r.clone(), lock.clone(), start));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!("  with a Lock:    {} (expected {expected})", r.get());
    println!("(A Value has its own lock: value.lock() gives a guard for read-modify-write.)");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 13. Other primitives: Semaphore, Event, Condition, Barrier

fn limited(
    (id, sem, inside, peak): (u32, Semaphore, Value<u32>, Value<u32>),
) -> multiproc::Result<()> {
    sem.acquire()?;
    {
        let mut n = inside.lock()?;
        *n += 1;
        let mut p = peak.lock()?;
        *p = (*p).max(*n);
    }
    println!("  [child] worker {id} is in");
    std::thread::sleep(Duration::from_millis(30));
    *inside.lock()? -= 1;
    sem.release()
}

// A value returned by `spawn` travels back encoded; a child reports its errors as text.
type ChildResult<T> = Result<T, String>;

fn from_child<T>(r: ChildResult<T>) -> multiproc::Result<T> {
    r.map_err(|e| Error::Io(std::io::Error::other(format!("in the child: {e}"))))
}

fn wait_for_event(ev: Event) -> ChildResult<f64> {
    let t = Instant::now();
    ev.wait().map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

fn consumer((cond, ready): (Condition, Value<u32>)) -> ChildResult<u32> {
    cond.acquire().map_err(|e| e.to_string())?;
    let got = cond.wait_for(|| ready.get() > 0, Some(Duration::from_secs(10)));
    let value = ready.get();
    cond.release().map_err(|e| e.to_string())?;
    match got {
        Ok(true) => Ok(value),
        Ok(false) => Err("timed out".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn at_barrier((barrier, ms): (Barrier, u64)) -> ChildResult<(u64, usize)> {
    std::thread::sleep(Duration::from_millis(ms));
    let index = barrier
        .wait_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok((ms, index))
}

fn other_primitives() -> multiproc::Result<()> {
    println!("Semaphore(2): 5 workers, at most 2 inside at once.");
    let sem = Semaphore::new(2)?;
    let inside = Value::new(0u32)?;
    let peak = Value::new(0u32)?;
    let mut workers = Vec::new();
    for i in 0..5 {
        let mut p = Process::new(limited, (i, sem.clone(), inside.clone(), peak.clone()));
        p.start()?;
        workers.push(p);
    }
    for p in &workers {
        p.join()?;
    }
    println!("  most workers inside at the same time: {}", peak.get());

    println!("Event: a child waits until the parent sets it.");
    let ev = Event::new()?;
    let h = multiproc::spawn(wait_for_event, ev.clone())?;
    std::thread::sleep(Duration::from_millis(50));
    ev.set();
    println!(
        "  the child waited {:.0} ms (the parent set it after 50 ms)",
        from_child(h.join()?)?
    );

    println!("Condition: a child waits for a condition on shared data; the parent notifies.");
    let cond = Condition::new()?;
    let ready = Value::new(0u32)?;
    let h = multiproc::spawn(consumer, (cond.clone(), ready.clone()))?;
    std::thread::sleep(Duration::from_millis(20));
    cond.acquire()?;
    ready.set(42);
    cond.notify_all()?;
    cond.release()?;
    println!("  the child saw the value {}", from_child(h.join()?)?);

    println!("Barrier(3): three processes arrive at different times and leave together.");
    let barrier = Barrier::new(3)?;
    let t = Instant::now();
    let hs = [10u64, 60, 120]
        .into_iter()
        .map(|ms| multiproc::spawn(at_barrier, (barrier.clone(), ms)))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for h in hs {
        let (ms, index) = from_child(h.join()?)?;
        println!("  arrived after {ms:>3} ms; wait() returned {index}");
    }
    println!(
        "  all three were through after {:.0} ms (the last arrival's time)",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 14. Pools (course: Pool.apply/map/apply_async/map_async, starmap printer)

fn square(x: i64) -> i64 {
    x * x
}

fn cube(x: i64) -> i64 {
    x * x * x
}

fn pool_printer((string_to_print, num_times): (String, usize)) {
    for _ in 0..num_times {
        println!("  [child] {string_to_print}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn panic_on_three(x: i64) -> i64 {
    if x == 3 {
        panic!("three is not allowed");
    }
    x
}

fn die_on_seven(x: i64) -> i64 {
    if x == 7 {
        // SIGKILL to the worker itself: as if the OOM killer had struck.
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::thread::sleep(Duration::from_secs(10));
    }
    x
}

fn pools() -> multiproc::Result<()> {
    let pool = Pool::new(4)?;
    let applied: Vec<i64> = (1..7)
        .map(|x| pool.apply(square, x))
        .collect::<multiproc::Result<_>>()?;
    println!("apply(square, x) for 1..7:      {applied:?}");
    println!(
        "map(square, 1..7):              {:?}",
        pool.map(square, 1..7)?
    );
    let pending: Vec<_> = (1..7).map(|x| pool.apply_async(cube, x)).collect();
    let cubes: Vec<i64> = pending
        .iter()
        .map(|r| r.get())
        .collect::<multiproc::Result<_>>()?;
    println!("apply_async(cube, x), then get: {cubes:?}");
    println!(
        "map_async(cube, 1..7).get():    {:?}",
        pool.map_async(cube, 1..7).get()?
    );

    println!("starmap with (text, times) tuples: the two workers' lines interleave.");
    pool.starmap(
        pool_printer,
        vec![
            ("She loves me.".to_string(), 3),
            ("She loves me not.".to_string(), 3),
        ],
    )?;

    let first: Vec<i64> = pool
        .imap(square, 1i64..) // an endless input: read only as results are taken
        .take(5)
        .collect::<multiproc::Result<_>>()?;
    println!("imap(square, 1..).take(5):      {first:?}");

    println!("A task that panics (a worker prints nothing: the panic is the task's result):");
    match pool.apply(panic_on_three, 3) {
        Err(Error::TaskPanicked { message, .. }) => {
            println!("  -> Error::TaskPanicked {{ message: {message:?} }}")
        }
        other => println!("  -> unexpected {other:?}"),
    }
    println!("A worker killed in the middle of imap(die_on_seven, 0..10):");
    let results: Vec<multiproc::Result<i64>> = pool.imap(die_on_seven, 0..10).collect();
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            println!("  task {i}: {e}");
        }
    }
    let done = results.iter().filter(|r| r.is_ok()).count();
    println!("  the other {done} tasks completed; the pool replaced the worker:");
    println!(
        "  map(square, 1..4) afterwards:  {:?}",
        pool.map(square, 1..4)?
    );
    pool.close();
    pool.join()
}

// ---------------------------------------------------------------------------------------
// 15. Why more processes stop helping (a CPU-bound job on pools of 1, 2, ... workers)

fn count_primes((start, len): (u64, u64)) -> u64 {
    (start..start + len)
        .filter(|&n| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn pool_speedup() -> multiproc::Result<()> {
    let cpus = multiproc::cpu_count();
    // Size the job from this build's speed (debug or release): about 0.6 s on one worker.
    let probe = 2_000;
    let t = Instant::now();
    std::hint::black_box(count_primes((1_000_000, probe)));
    let per_number = t.elapsed().as_secs_f64() / probe as f64;
    let ntasks = (8 * cpus) as u64;
    let span = ((0.6 / per_number) as u64 / ntasks).max(100);
    let tasks: Vec<(u64, u64)> = (0..ntasks).map(|i| (1_000_000 + i * span, span)).collect();
    println!(
        "Counting primes in {ntasks} tasks of {span} numbers, on pools of 1 to {cpus} workers \
         and one of {}:",
        2 * cpus
    );
    let mut sizes: Vec<usize> = (1..=cpus).collect();
    sizes.push(2 * cpus);
    let mut base = None;
    let mut answer = None;
    for p in sizes {
        let pool = Pool::new(p)?;
        pool.map(square, 0..p as i64)?; // warm-up: every worker is started
        let t = Instant::now();
        let total: u64 = pool
            .map_chunked(count_primes, tasks.clone(), 1)?
            .iter()
            .sum();
        let secs = t.elapsed().as_secs_f64();
        pool.close();
        pool.join()?;
        if *answer.get_or_insert(total) != total {
            return Err(Error::InvalidOperation("pool sizes disagree".into()));
        }
        let base = *base.get_or_insert(secs);
        println!(
            "  {p:>3} worker(s): {:>7.1} ms, speed-up {:.2}x",
            secs * 1e3,
            base / secs
        );
    }
    println!(
        "The speed-up stops growing at {cpus} workers: there are only {cpus} CPUs to run them \
         (and on a busy machine, fewer free)."
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 9. Queues (CSinParallel: sendName, addManyPar; slides: rand_string)

fn greet(q: multiproc::Queue<String>) {
    println!("  [child] Waiting for name...");
    match q.get() {
        Ok(name) => println!("  [child] Well, hi {name}"),
        Err(e) => eprintln!("  [child] get failed: {e}"),
    }
}

fn add_many_numbers((seed, count, q): (u64, u64, multiproc::Queue<u64>)) {
    let s = (0..count).map(|i| (seed + i * 7919) % 100 + 1).sum();
    if let Err(e) = q.put(s) {
        eprintln!("  [child] put failed: {e}");
    }
}

fn put_big_and_exit(q: multiproc::Queue<Vec<u64>>) {
    if let Err(e) = q.put((0..1_000_000).collect()) {
        eprintln!("  [child] put failed: {e}");
    }
}

fn queues() -> multiproc::Result<()> {
    use multiproc::{JoinableQueue, Queue};
    // The parent feeds a name to a child blocked in get (it sleeps in the kernel meanwhile).
    let q = Queue::<String>::new()?;
    let mut p = Process::new(greet, q.clone());
    p.start()?;
    std::thread::sleep(Duration::from_millis(200));
    println!("(parent) Ok, I'll send the name");
    q.put("Jimmy".into())?;
    p.join()?;

    // Two children each sum half the numbers; the parent merges their results.
    let results = Queue::<u64>::new()?;
    let mut ps = [
        Process::new(add_many_numbers, (1, 500_000, results.clone())),
        Process::new(add_many_numbers, (2, 500_000, results.clone())),
    ];
    for p in &mut ps {
        p.start()?;
    }
    let (a, b) = (results.get()?, results.get()?);
    println!("Sum: {}", a + b);
    for p in &ps {
        p.join()?;
    }

    // No feeder thread: a child may put a million numbers (megabytes) and exit before anyone
    // takes them, and the parent may join it first (CPython's Queue deadlocks here).
    let big = Queue::<Vec<u64>>::new()?;
    let mut p = Process::new(put_big_and_exit, big.clone());
    p.start()?;
    p.join()?;
    println!(
        "joined the child first, then got its {} numbers",
        big.get()?.len()
    );

    // JoinableQueue: join waits until every item put was marked done.
    let jq = JoinableQueue::<u32>::new()?;
    for n in 0..3 {
        jq.put(n)?;
    }
    while let Ok(n) = jq.try_get() {
        println!("task {n} done");
        jq.task_done()?;
    }
    jq.join()?;
    println!("every task done; qsize {}", jq.qsize());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 16. Managers (notebook: "Method 2: Server Process", records shared through manager.list)

type Record = (String, u32);

fn insert_record((record, records): (Record, multiproc::manager::ListProxy<Record>)) {
    match records.push(record) {
        Ok(()) => println!("  [child] New record inserted"),
        Err(e) => eprintln!("  [child] cannot insert: {e}"),
    }
}

fn print_records(records: multiproc::manager::ListProxy<Record>) {
    match records.iter() {
        Ok(all) => {
            for (name, score) in all {
                println!("  [child] Name: {name}, Score: {score}");
            }
        }
        Err(e) => eprintln!("  [child] cannot read the records: {e}"),
    }
}

fn managers() -> multiproc::Result<()> {
    let manager = multiproc::Manager::start()?; // a server process; stopped on drop
    let records = manager.list(vec![
        ("Sam".to_string(), 10),
        ("Adam".to_string(), 9),
        ("Kevin".to_string(), 9),
    ])?;
    let mut p1 = Process::new(insert_record, (("Jeff".to_string(), 8), records.clone()));
    p1.start()?;
    p1.join()?;
    let mut p2 = Process::new(print_records, records.clone());
    p2.start()?;
    p2.join()?;
    println!("The list lives in the manager's process; proxies in any process reach it.");

    let counts = manager.dict::<String, u32>()?;
    counts.insert("a".into(), 1)?;
    match counts.get_item(&"missing".to_string()) {
        Err(Error::Remote { kind, .. }) => println!("A missing key comes back typed: {kind}"),
        other => println!("unexpected: {other:?}"),
    }
    let server = manager.server_pid();
    drop(manager);
    println!("Dropping the manager stopped its server (pid {server:?}).");
    Ok(())
}
