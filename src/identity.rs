//! Who this process is: its name, its identity (the numbers of "Process-1:2"), its
//! daemon flag, its parent and the process tree's authkey, as [`current_process`] and
//! [`parent_process`] report them (re-exported by `process`). Kept below `log` (which names the process in each line) and `start` (whose
//! child bootstrap sets it), so that neither needs the `process` module.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::sys;

/// A process's name, pid and daemon flag, as returned by [`current_process`],
/// [`parent_process`] and [`active_children`](crate::active_children) (Python's
/// `multiprocessing.Process` objects that these return, as far as they describe a
/// process: [`authkey`](ProcessInfo::authkey) too).
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.daemon());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
    daemon: bool,
}

impl ProcessInfo {
    pub(crate) fn new(name: String, pid: u32, daemon: bool) -> ProcessInfo {
        ProcessInfo { name, pid, daemon }
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

    /// The process id under Python's other name for it (`Process.ident`): the same as
    /// [`pid`](ProcessInfo::pid).
    ///
    /// ```
    /// assert_eq!(multiproc::current_process().ident(), std::process::id());
    /// ```
    pub fn ident(&self) -> u32 {
        self.pid
    }

    /// Whether the process is a daemon (Python's `Process.daemon`): terminated when its
    /// parent exits. The main process is not; a child is one if it was started with
    /// [`with_daemon(true)`](crate::Process::with_daemon).
    ///
    /// ```
    /// multiproc::init();
    /// assert!(!multiproc::current_process().daemon());
    /// fn am_i(_: ()) -> bool { multiproc::current_process().daemon() }
    /// let h = multiproc::Builder::new().daemon(true).spawn(am_i, ()).unwrap();
    /// assert!(h.join().unwrap());
    /// ```
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The authentication key of the process tree (Python's `Process.authkey`): 32 random
    /// bytes chosen in the main process, inherited by every process this crate starts, so
    /// every process of the program (this one included) has the same. A
    /// [`Manager`](crate::Manager) started without a key uses it, as Python's does, so a
    /// child can connect to its parent's manager knowing only the address. A child started
    /// with [`Builder::authkey`](crate::Builder::authkey) has that key instead (Python's
    /// `p.authkey = key` before `start()`), and passes it on to its own children. Unlike
    /// Python's, a running process's key cannot be changed: give a
    /// [`Listener`](crate::connection::Listener), a [`Client`](crate::connection::Client)
    /// or a manager another key explicitly.
    ///
    /// ```
    /// multiproc::init();
    /// let key = multiproc::current_process().authkey();
    /// assert_eq!(key.len(), 32);
    /// fn theirs(_: ()) -> Vec<u8> { multiproc::current_process().authkey() }
    /// assert_eq!(multiproc::spawn(theirs, ()).unwrap().join().unwrap(), key);
    /// ```
    pub fn authkey(&self) -> Vec<u8> {
        tree_authkey().to_vec()
    }
}

struct Current {
    info: ProcessInfo,
    identity: Vec<u32>,
    parent: Option<ProcessInfo>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
static COUNTER: AtomicU32 = AtomicU32::new(0);
/// The process tree's authkey: chosen at first use in the main process, set from the
/// parent's by the child bootstrap (before anything else can read it).
static AUTHKEY: Mutex<Option<Arc<[u8]>>> = Mutex::new(None);

/// The process tree's authkey (see [`ProcessInfo::authkey`]).
pub(crate) fn tree_authkey() -> Arc<[u8]> {
    let mut g = AUTHKEY.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(|| Arc::from(random_key())).clone()
}

/// 32 random bytes from the operating system; should it have none to give, from std's
/// per-process random hash keys, the pid and the time.
fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    if getrandom::fill(&mut k).is_err() {
        use std::hash::{BuildHasher, Hasher};
        static ONCE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        let state = ONCE.get_or_init(Default::default);
        for (i, chunk) in k.chunks_mut(8).enumerate() {
            let mut h = state.build_hasher();
            h.write_usize(i);
            h.write_u32(sys::getpid());
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    k
}

/// Records who we are, in a child (called by the child bootstrap): our `name`,
/// `identity` (the numbers of "Process-1:2") and daemon flag, the process that started
/// us, and the process tree's authkey.
pub(crate) fn set_current(
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    parent: ProcessInfo,
    authkey: &[u8],
) {
    *AUTHKEY.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(authkey));
    let mut g = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(Current {
        info: ProcessInfo {
            name,
            pid: sys::getpid(),
            daemon,
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
            daemon: false,
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
