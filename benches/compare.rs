//! Side-by-side benchmark: multiproc against CPython's `multiprocessing`, and against the
//! Rust peers (procspawn, ipc-channel) on the workloads they can do.
//!
//! ```text
//! cargo bench --bench compare                 # every workload
//! cargo bench --bench compare -- pipe         # the workloads whose name contains "pipe"
//! cargo bench --bench compare -- --list       # the workload names
//! cargo bench --bench compare -- --no-python  # without CPython
//! cargo bench --bench compare -- --no-peers   # without the Rust peers
//! ```
//!
//! Each workload runs here, then the workload of the same name in `benches/compare.py`
//! (same work, CPython's `multiprocessing`, `$PYTHON` or `python3`) in the same run on the
//! same machine; then, in rows of their own under it (`  vs procspawn`, `  vs ipc-channel`),
//! the Rust peers that can do the same work (`compare/peer_workloads.rs`). The table shows
//! multiproc's figure, the other one and the ratio — how many times better multiproc is
//! (above 1: multiproc wins), whichever way "better" goes for that unit. Each result is
//! also appended as a JSON line to `target/bench/results.jsonl` with the machine's
//! description.
//!
//! Adding a workload: one function returning the figure, one [`Workload`] entry in
//! [`WORKLOADS`], and the entry of the same name in `compare.py`'s `WORKLOADS`.
//!
//! The ndarray workloads (an ndarray matrix through a `Queue` against a numpy array through
//! `multiprocessing.Queue`) exist with the `ndarray` feature:
//! `cargo bench --bench compare --features ndarray -- ndarray`. When the Python found has
//! no numpy, the harness makes a virtual environment with it (`target/bench/numpy-venv`,
//! `pip install numpy`, on first use) and runs every CPython side with that environment's
//! Python (the same interpreter).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use multiproc::{Connection, Process, StartMethod};

/// multiproc's allocator, off (no allocation goes to a memory file) except in the producer
/// of `queue_1gib_item_handed_over`, which turns it on: every other row measures the system
/// allocator, as before, and the peers are not affected. The parent is the receiver of that
/// row: with the allocator installed it adopts the handed-over file whatever its threshold.
#[global_allocator]
pub static HEAP: multiproc::ShmAllocator = multiproc::ShmAllocator::from_size(usize::MAX);

/// Where the allocator's memory files are (shared with the tests that install it).
#[path = "../tests/common/heap_files.rs"]
#[allow(dead_code)]
mod heap_files;
#[path = "compare/peer_workloads.rs"]
mod peer_workloads;
#[path = "compare/pool_workloads.rs"]
mod pool_workloads;
#[path = "compare/queue_workloads.rs"]
mod queue_workloads;
#[path = "compare/sync_workloads.rs"]
mod sync_workloads;

/// One benchmark: its figure comes from `run`, in `unit`.
struct Workload {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    run: fn() -> f64,
}

/// The workloads, in the order they run. Other areas append theirs here.
const WORKLOADS: &[Workload] = &[
    Workload {
        name: "start_join_forkserver",
        unit: "ms",
        higher_is_better: false,
        run: || start_join(StartMethod::ForkServer),
    },
    Workload {
        name: "start_join_spawn",
        unit: "ms",
        higher_is_better: false,
        run: || start_join(StartMethod::Spawn),
    },
    Workload {
        name: "start_join_fork",
        unit: "ms",
        higher_is_better: false,
        run: || start_join(StartMethod::Fork),
    },
    Workload {
        name: "pipe_8b_one_way",
        unit: "msg/s",
        higher_is_better: true,
        run: pipe_small,
    },
    Workload {
        name: "pipe_u64_send_recv",
        unit: "msg/s",
        higher_is_better: true,
        run: pipe_objects,
    },
    Workload {
        name: "pipe_1mib_one_way",
        unit: "GB/s",
        higher_is_better: true,
        run: pipe_big,
    },
    Workload {
        name: "queue_8b_1p1c",
        unit: "msg/s",
        higher_is_better: true,
        run: queue_workloads::queue_8b_1p1c,
    },
    Workload {
        name: "queue_1mib_1p1c",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1mib_1p1c,
    },
    Workload {
        name: "queue_1mib_vec_u8",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1mib_typed::<Vec<u8>>,
    },
    Workload {
        name: "queue_1mib_vec_u32",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1mib_typed::<Vec<u32>>,
    },
    Workload {
        name: "queue_1mib_vec_f64",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1mib_typed::<Vec<f64>>,
    },
    Workload {
        name: "queue_1mib_struct",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1mib_typed::<queue_workloads::Record>,
    },
    Workload {
        name: "queue_1mib_string",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1mib_typed::<String>,
    },
    Workload {
        name: "queue_1gib_item",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1gib_item,
    },
    Workload {
        name: "queue_1gib_item_handed_over",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1gib_item_handed_over,
    },
    Workload {
        name: "queue_1gib_shared_bytes",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::queue_1gib_shared_bytes,
    },
    Workload {
        name: "queue_8b_4p4c",
        unit: "msg/s",
        higher_is_better: true,
        run: queue_workloads::queue_8b_4p4c,
    },
    Workload {
        name: "lock_uncontended",
        unit: "ns/pair",
        higher_is_better: false,
        run: sync_workloads::lock_uncontended,
    },
    Workload {
        name: "lock_two_process_increment",
        unit: "ns/incr",
        higher_is_better: false,
        run: sync_workloads::lock_two_process_increment,
    },
    Workload {
        name: "value_increment",
        unit: "ns/incr",
        higher_is_better: false,
        run: sync_workloads::value_increment,
    },
    Workload {
        name: "event_wake_latency",
        unit: "us",
        higher_is_better: false,
        run: sync_workloads::event_wake_latency,
    },
    Workload {
        name: "manager_list_append_child",
        unit: "us/op",
        higher_is_better: false,
        run: manager_list_append,
    },
    Workload {
        name: "manager_dict_set_get_child",
        unit: "us/op",
        higher_is_better: false,
        run: manager_dict_set_get,
    },
    Workload {
        name: "manager_lock_cycle_child",
        unit: "us/op",
        higher_is_better: false,
        run: manager_lock_cycle,
    },
    Workload {
        name: "manager_list_append_tcp",
        unit: "us/op",
        higher_is_better: false,
        run: manager_list_append_tcp,
    },
    Workload {
        name: "pool_map_tiny",
        unit: "us/task",
        higher_is_better: false,
        run: pool_workloads::map_tiny,
    },
    Workload {
        name: "pool_apply_roundtrip",
        unit: "us",
        higher_is_better: false,
        run: pool_workloads::apply_roundtrip,
    },
    Workload {
        name: "pool_apply_roundtrip_8w",
        unit: "us",
        higher_is_better: false,
        run: pool_workloads::apply_roundtrip_8w,
    },
    Workload {
        name: "pool_apply_async_20k",
        unit: "us/task",
        higher_is_better: false,
        run: pool_workloads::apply_async_20k,
    },
    Workload {
        name: "pool_speedup",
        unit: "x",
        higher_is_better: true,
        run: pool_workloads::speedup,
    },
    // Rust only (compare.py says so): the bar for pool_speedup.
    Workload {
        name: "pool_speedup_rayon",
        unit: "x",
        higher_is_better: true,
        run: pool_workloads::speedup_rayon,
    },
];

/// A Rust peer's figure for the workload named `of`, in that workload's unit.
struct Peer {
    of: &'static str,
    name: &'static str,
    run: fn() -> f64,
}

/// The Rust peers, each printed under the row of the workload it does too.
const PEERS: &[Peer] = &[
    Peer {
        of: "start_join_forkserver",
        name: "procspawn",
        run: peer_workloads::start_join_procspawn,
    },
    Peer {
        of: "pipe_8b_one_way",
        name: "ipc-channel",
        run: peer_workloads::pipe_8b_ipc_channel,
    },
    Peer {
        of: "pipe_u64_send_recv",
        name: "ipc-channel",
        run: peer_workloads::pipe_u64_ipc_channel,
    },
    Peer {
        of: "pipe_1mib_one_way",
        name: "ipc-channel",
        run: peer_workloads::pipe_1mib_ipc_channel,
    },
    Peer {
        of: "pool_apply_roundtrip",
        name: "procspawn",
        run: peer_workloads::apply_roundtrip_procspawn,
    },
    Peer {
        of: "pool_apply_async_20k",
        name: "procspawn",
        run: peer_workloads::apply_async_20k_procspawn,
    },
    Peer {
        of: "pool_speedup",
        name: "procspawn",
        run: peer_workloads::speedup_procspawn,
    },
];
/// The workloads that need a cargo feature, after [`WORKLOADS`].
#[cfg(feature = "ndarray")]
const FEATURE_WORKLOADS: &[Workload] = &[
    Workload {
        name: "queue_ndarray_1mib",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::nd::queue_ndarray_1mib,
    },
    Workload {
        name: "queue_ndarray_64mib",
        unit: "GB/s",
        higher_is_better: true,
        run: queue_workloads::nd::queue_ndarray_64mib,
    },
];
#[cfg(not(feature = "ndarray"))]
const FEATURE_WORKLOADS: &[Workload] = &[];

/// Workloads whose CPython side needs numpy.
fn needs_numpy(w: &Workload) -> bool {
    w.name.contains("ndarray")
}

// --- parameters shared with benches/compare.py (keep them equal) ------------------------
const START_BUDGET: Duration = Duration::from_secs(2);
const START_MIN_ITERS: u32 = 5;
const PIPE_ROUNDS: usize = 5;
const SMALL_MSG: usize = 8;
const SMALL_COUNT: usize = 100_000;
const BIG_MSG: usize = 1 << 20;
const BIG_COUNT: usize = 500;

// --- process start + join ---------------------------------------------------------------

fn noop(_: ()) {}

/// Milliseconds per `Process::new(noop).start(); join()`, after one warm-up start.
fn start_join(method: StartMethod) -> f64 {
    time_starts(|| {
        let mut p = Process::new(noop, ()).with_start_method(method);
        p.start().expect("start");
        p.join().expect("join");
    })
}

/// Milliseconds per call of `once` (a process started and joined), after one warm-up
/// call, repeated for `START_BUDGET` and at least `START_MIN_ITERS` times.
fn time_starts(mut once: impl FnMut()) -> f64 {
    once();
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        once();
        n += 1;
        let elapsed = t0.elapsed();
        if elapsed >= START_BUDGET && n >= START_MIN_ITERS {
            return elapsed.as_secs_f64() / f64::from(n) * 1e3;
        }
    }
}

// --- pipe, one way ------------------------------------------------------------------------

/// A sender's side of the one-way byte workloads (multiproc's and ipc-channel's): a ready
/// message (the clock starts when the parent receives it), then `count` messages of `size`
/// bytes, through `send`; stops at the first failure.
fn send_byte_messages(size: usize, count: usize, mut send: impl FnMut(&[u8]) -> bool) {
    let msg = vec![b'x'; size];
    if !send(b"r") {
        return;
    }
    for _ in 0..count {
        if !send(&msg) {
            return;
        }
    }
}

/// A sender's side of the one-way value workloads: `u64::MAX` (ready), then `0..count`.
fn send_values(count: u64, mut send: impl FnMut(u64) -> bool) {
    if !send(u64::MAX) {
        return;
    }
    for i in 0..count {
        if !send(i) {
            return;
        }
    }
}

fn pipe_sender((conn, size, count): (Connection<Vec<u8>>, usize, usize)) {
    send_byte_messages(size, count, |m| conn.send_bytes(m).is_ok());
}

/// Seconds to receive `count` messages of `size` bytes sent by a child.
fn pipe_round(size: usize, count: usize) -> f64 {
    let (rx, tx) = multiproc::pipe_simplex::<Vec<u8>>().expect("pipe");
    let mut p = Process::new(pipe_sender, (tx, size, count));
    p.start().expect("start");
    rx.recv_bytes().expect("ready");
    let t0 = Instant::now();
    for _ in 0..count {
        let b = rx.recv_bytes().expect("recv_bytes");
        assert_eq!(b.len(), size, "a message changed size");
    }
    let secs = t0.elapsed().as_secs_f64();
    p.join().expect("join");
    secs
}

fn object_sender((conn, count): (Connection<u64>, u64)) {
    send_values(count, |i| conn.send(&i).is_ok());
}

/// Like [`pipe_small`], with values (`send`/`recv`: encoded and decoded) instead of bytes.
fn pipe_objects() -> f64 {
    let round = || {
        let (rx, tx) = multiproc::pipe_simplex::<u64>().expect("pipe");
        let mut p = Process::new(object_sender, (tx, SMALL_COUNT as u64));
        p.start().expect("start");
        rx.recv().expect("ready");
        let t0 = Instant::now();
        for i in 0..SMALL_COUNT as u64 {
            assert_eq!(rx.recv().expect("recv"), i, "a message was lost");
        }
        let secs = t0.elapsed().as_secs_f64();
        p.join().expect("join");
        secs
    };
    SMALL_COUNT as f64 / median((0..PIPE_ROUNDS).map(|_| round()).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pipe_small() -> f64 {
    let secs = median(
        (0..PIPE_ROUNDS)
            .map(|_| pipe_round(SMALL_MSG, SMALL_COUNT))
            .collect(),
    );
    SMALL_COUNT as f64 / secs
}

fn pipe_big() -> f64 {
    let secs = median(
        (0..PIPE_ROUNDS)
            .map(|_| pipe_round(BIG_MSG, BIG_COUNT))
            .collect(),
    );
    (BIG_MSG * BIG_COUNT) as f64 / secs / 1e9
}

// --- manager proxies, used from a child process ----------------------------------------------
// One op: a list append; a dict set plus a get of the same key; a lock acquire plus release.
// The child times its own loop; the figure is the median over MANAGER_ROUNDS children.

const MANAGER_OPS: u32 = 20_000;
const MANAGER_ROUNDS: usize = 3;

type Record = (String, u32);

fn mgr_list_child((l, n): (multiproc::manager::ListProxy<Record>, u32)) -> f64 {
    let t0 = Instant::now();
    for i in 0..n {
        l.push(("Jeff".to_string(), i)).expect("append");
    }
    t0.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn mgr_dict_child((d, n): (multiproc::manager::DictProxy<u32, u32>, u32)) -> f64 {
    let t0 = Instant::now();
    for i in 0..n {
        d.insert(i % 1024, i).expect("set");
        std::hint::black_box(d.get(&(i % 1024)).expect("get"));
    }
    t0.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn mgr_lock_child((l, n): (multiproc::manager::LockProxy, u32)) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        l.acquire().expect("acquire");
        l.release().expect("release");
    }
    t0.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn median_of_children<A>(f: fn(A) -> f64, args: A) -> f64
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + Clone + 'static,
{
    let mut v: Vec<f64> = (0..MANAGER_ROUNDS)
        .map(|_| {
            multiproc::spawn(f, args.clone())
                .expect("spawn")
                .join()
                .expect("join")
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn manager_list_append() -> f64 {
    let m = multiproc::Manager::start().expect("manager");
    let l = m.list(Vec::<Record>::new()).expect("list");
    median_of_children(mgr_list_child, (l, MANAGER_OPS))
}

fn manager_dict_set_get() -> f64 {
    let m = multiproc::Manager::start().expect("manager");
    let d = m.dict::<u32, u32>().expect("dict");
    median_of_children(mgr_dict_child, (d, MANAGER_OPS))
}

fn manager_lock_cycle() -> f64 {
    let m = multiproc::Manager::start().expect("manager");
    let l = m.lock().expect("lock");
    median_of_children(mgr_lock_child, (l, MANAGER_OPS))
}

fn manager_list_append_tcp() -> f64 {
    let m = multiproc::Manager::serve("127.0.0.1:0", b"bench").expect("manager");
    let l = m.list(Vec::<Record>::new()).expect("list");
    median_of_children(mgr_list_child, (l, MANAGER_OPS))
}

// --- the harness ----------------------------------------------------------------------------

const PY_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/compare.py");
const RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench/results.jsonl");

static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The Python that runs `compare.py`: `$PYTHON`, else `python3` (see [`choose_python`]).
fn python() -> String {
    PYTHON
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string()))
}

/// Does `py` import numpy?
fn has_numpy(py: &str) -> bool {
    Command::new(py)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// When a chosen workload needs numpy and the Python found has none: a virtual environment
/// of that Python with numpy (`target/bench/numpy-venv`, made with pip on first use), whose
/// interpreter then runs every CPython side. `$PYTHON` set by the user is used as it is.
fn choose_python(numpy_needed: bool) {
    let base = python();
    if !numpy_needed || std::env::var_os("PYTHON").is_some() || has_numpy(&base) {
        return;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench/numpy-venv");
    let venv_py = format!("{venv}/bin/python");
    if !has_numpy(&venv_py) {
        eprintln!("numpy is missing: installing it with pip into {venv}");
        let made = Command::new(&base)
            .args(["-m", "venv", venv])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&venv_py)
                .args(["-m", "pip", "install", "--quiet", "numpy"])
                .status()
                .is_ok_and(|s| s.success());
        if !made || !has_numpy(&venv_py) {
            eprintln!("could not install numpy; the numpy workloads' CPython side will fail");
            return;
        }
    }
    let _ = PYTHON.set(venv_py);
}

/// Runs `compare.py NAME`; the figure it printed, or why there is none.
fn run_python(name: &str) -> Result<f64, String> {
    let out = Command::new(python())
        .arg(PY_SCRIPT)
        .arg(name)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["name"] != name {
            continue;
        }
        if let Some(e) = v["error"].as_str() {
            return Err(e.to_string());
        }
        if let Some(x) = v["value"].as_f64() {
            return Ok(x);
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "no figure from compare.py ({}): {}",
        out.status,
        stderr.lines().last().unwrap_or("")
    ))
}

fn python_version() -> Option<String> {
    let out = Command::new(python())
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The 1-minute load average: other work on the machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// "how many times better": above 1 means multiproc wins.
fn ratio(w: &Workload, ours: f64, theirs: f64) -> f64 {
    if w.higher_is_better {
        ours / theirs
    } else {
        theirs / ours
    }
}

fn fmt_value(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Runs a peer's workload; a panic (the peer failed) becomes its message.
fn run_peer(p: &Peer) -> Result<f64, String> {
    std::panic::catch_unwind(p.run).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".to_string())
    })
}

fn main() {
    multiproc::init();
    // procspawn's children start here too: each init returns in the other's children.
    peer_workloads::init();
    // Fork is measured too; this harness is single-threaded, but say so explicitly.
    // SAFETY: no other thread of this program holds a lock when it forks.
    unsafe { multiproc::allow_fork_with_threads(true) };

    // `cargo bench` adds `--bench`; other dashed arguments are options, the rest filters.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for w in WORKLOADS.iter().chain(FEATURE_WORKLOADS) {
            println!("{}", w.name);
        }
        return;
    }
    let no_python = args.iter().any(|a| a == "--no-python");
    let no_peers = args.iter().any(|a| a == "--no-peers");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let chosen: Vec<&Workload> = WORKLOADS
        .iter()
        .chain(FEATURE_WORKLOADS)
        .filter(|w| filters.is_empty() || filters.iter().any(|f| w.name.contains(f)))
        .collect();
    if chosen.is_empty() {
        eprintln!(
            "no workload matches {filters:?}; try --list (the ndarray workloads need \
             --features ndarray)"
        );
        std::process::exit(2);
    }
    if !no_python {
        choose_python(chosen.iter().any(|w| needs_numpy(w)));
    }

    let nproc = multiproc::cpu_count();
    let cpu = cpu_model();
    let py = if no_python { None } else { python_version() };
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    println!("multiproc vs CPython multiprocessing and the Rust peers — {date}");
    println!(
        "machine: {nproc} CPUs, {cpu}; load average {}; python: {}",
        load_average(),
        py.as_deref().unwrap_or("not run")
    );
    println!();
    println!(
        "{:<28} {:>7} {:>12} {:>12} {:>9}",
        "workload", "unit", "multiproc", "other", "ratio"
    );
    println!("{}", "-".repeat(72));

    let mut log = std::fs::create_dir_all(
        std::path::Path::new(RESULTS)
            .parent()
            .unwrap_or(std::path::Path::new(".")),
    )
    .and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(RESULTS)
    })
    .map_err(|e| eprintln!("cannot write {RESULTS}: {e}"))
    .ok();

    // One row of the table, and its JSON line with the machine's description.
    let mut row = |label: &str, w: &Workload, ours: f64, other: &Result<f64, String>, json| {
        let (other_s, ratio_s, r) = match other {
            Ok(t) => {
                let r = ratio(w, ours, *t);
                (fmt_value(*t), format!("{r:.2}×"), Some(r))
            }
            Err(_) => ("—".to_string(), "—".to_string(), None),
        };
        println!(
            "{:<28} {:>7} {:>12} {:>12} {:>9}",
            label,
            w.unit,
            fmt_value(ours),
            other_s,
            ratio_s
        );
        if let Some(f) = log.as_mut() {
            let mut line = serde_json::json!({
                "name": w.name,
                "unit": w.unit,
                "higher_is_better": w.higher_is_better,
                "multiproc": ours,
                "ratio": r,
                "nproc": nproc,
                "cpu_model": cpu,
                "date": date,
                "load_average": load_average(),
            });
            if let (Some(line), serde_json::Value::Object(more)) = (line.as_object_mut(), json) {
                line.extend(more);
            }
            let _ = writeln!(f, "{line}");
        }
    };

    for w in chosen {
        let ours = (w.run)();
        let theirs = if py.is_some() {
            run_python(w.name)
        } else {
            Err("not run".to_string())
        };
        if let (Some(_), Err(e)) = (&py, &theirs) {
            eprintln!("{}: CPython side: {e}", w.name);
        }
        let json = serde_json::json!({"cpython": theirs.as_ref().ok(), "python": py});
        row(w.name, w, ours, &theirs, json);
        for p in PEERS.iter().filter(|p| !no_peers && p.of == w.name) {
            let theirs = run_peer(p);
            if let Err(e) = &theirs {
                eprintln!("{} on {}: {e}", w.name, p.name);
            }
            let json = serde_json::json!({
                "peer": p.name,
                "peer_value": theirs.as_ref().ok(),
                "peer_error": theirs.as_ref().err(),
            });
            row(&format!("  vs {}", p.name), w, ours, &theirs, json);
        }
    }
    println!();
    println!("other = CPython's multiprocessing, or the Rust peer named in a \"vs\" row.");
    println!("ratio = how many times better multiproc is (> 1: multiproc wins).");
    println!("results appended to {RESULTS}");
}
