//! Who this process is: its name, its identity (the numbers of "Process-1:2"), and its
//! parent, as [`current_process`] and [`parent_process`] report them (re-exported by
//! `process`). Kept below `log` (which names the process in each line) and `start` (whose
//! child bootstrap sets it), so that neither needs the `process` module.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::sys;

/// A process's name and pid, as returned by [`current_process`], [`parent_process`] and
/// [`active_children`](crate::active_children).
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
}

impl ProcessInfo {
    pub(crate) fn new(name: String, pid: u32) -> ProcessInfo {
        ProcessInfo { name, pid }
    }

    /// The process's name ("MainProcess" for the program's first process, "Process-N" by
    /// default for children).
    ///
    /// ```
    /// assert_eq!(multiproc::current_process().name(), "MainProcess");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    ///
    /// ```
    /// assert!(multiproc::current_process().pid() > 0);
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

struct Current {
    info: ProcessInfo,
    identity: Vec<u32>,
    parent: Option<ProcessInfo>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Records who we are, in a child (called by the child bootstrap): our `name` and
/// `identity` (the numbers of "Process-1:2"), and the process that started us.
pub(crate) fn set_current(name: String, identity: Vec<u32>, parent: ProcessInfo) {
    let mut g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(Current {
        info: ProcessInfo {
            name,
            pid: sys::getpid(),
        },
        identity,
        parent: Some(parent),
    });
    COUNTER.store(0, Ordering::SeqCst);
}

/// The process this code runs in (Python's `multiprocessing.current_process()`).
///
/// ```
/// multiproc::init();
/// assert_eq!(multiproc::current_process().name(), "MainProcess");
/// fn me(_: ()) -> String { multiproc::current_process().name().to_string() }
/// let h = multiproc::Builder::new().name("worker").spawn(me, ()).unwrap();
/// assert_eq!(h.join().unwrap(), "worker");
/// ```
pub fn current_process() -> ProcessInfo {
    let g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    match &*g {
        Some(c) => c.info.clone(),
        None => ProcessInfo {
            name: "MainProcess".into(),
            pid: sys::getpid(),
        },
    }
}

/// The process that started this one, or `None` in the main process (Python's
/// `parent_process()`).
///
/// ```
/// multiproc::init();
/// assert!(multiproc::parent_process().is_none());
/// fn parent(_: ()) -> Option<u32> { multiproc::parent_process().map(|p| p.pid()) }
/// let h = multiproc::spawn(parent, ()).unwrap();
/// assert_eq!(h.join().unwrap(), Some(std::process::id()));
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    let g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    g.as_ref().and_then(|c| c.parent.clone())
}

/// The identity of the next child this process starts: ours, plus its number.
pub(crate) fn next_identity() -> Vec<u32> {
    let mut id = {
        let g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().map(|c| c.identity.clone()).unwrap_or_default()
    };
    id.push(COUNTER.fetch_add(1, Ordering::SeqCst) + 1);
    id
}

/// Launcher variables that carry the rank (Open MPI's `mpirun`, PMIx — Slurm's `srun` and
/// Open MPI 5 —, and PMI/Hydra).
const MPI_RANK_VARS: [&str; 3] = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"];
/// Launcher variables that carry the number of ranks.
const MPI_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"];

fn env_number(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok()?.trim().parse().ok())
}

/// The rank an MPI launcher gave this process (or the agent that started it: workers inherit
/// the variables), if any.
pub(crate) fn mpi_env_rank() -> Option<usize> {
    env_number(&MPI_RANK_VARS)
}

/// The number of ranks an MPI launcher announced, if any.
pub(crate) fn mpi_env_size() -> Option<usize> {
    env_number(&MPI_SIZE_VARS)
}

/// Whether this process belongs to an MPI job (started by an MPI launcher, or a worker of
/// such a process) and the `mpi` feature is on: the cluster pool joins the job, and the
/// lower layers' waiters yield the processor between looks (ranks outnumber cores there).
pub(crate) fn mpi_launched() -> bool {
    cfg!(feature = "mpi") && mpi_env_rank().is_some()
}
