//! A guided tour of multiproc: every idea of the seed course material that the crate
//! covers so far, one short section each, in the order the course introduces them.
//!
//! ```text
//! cargo run --release --example tour            # the whole tour
//! cargo run --release --example tour -- pipe    # only the sections whose title contains "pipe"
//! cargo run --release --example tour -- --list  # the section titles
//! ```
//!
//! Each section is one function `fn() -> multiproc::Result<()>` listed in [`SECTIONS`];
//! a new part of the crate (locks and shared values, queues, pools, managers) adds its
//! section by appending one function and one line to that table.
//!
//! Lines printed by child processes are marked with `  [child]` or show the child's pid, so
//! the parent's and the children's output can be told apart. The order of the children's
//! lines varies from run to run: that is the point of several sections.

use std::time::{Duration, Instant};

use multiproc::{current_process, parent_process, Connection, Error, Process, StartMethod};

type Section = (&'static str, fn() -> multiproc::Result<()>);

/// The tour, in order. Append new sections here.
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
// 9. spawn: return values and panics (std::thread's style)

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
// Queues (CSinParallel: sendName, addManyPar; slides: rand_string)

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
// Managers (notebook: "Method 2: Server Process", records shared through manager.list)

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
