//! The crate's one error type.
//!
//! Every fallible call in `multiproc` returns [`Result<T>`], whose error is [`Error`]. The
//! variants are meant to be matched: a caller can tell a timeout from a dead peer from a
//! child that panicked.
//!
//! ```
//! use multiproc::Error;
//! let e = Error::Timeout;
//! assert!(matches!(e, Error::Timeout));
//! assert_eq!(e.to_string(), "operation timed out");
//! ```

use std::{fmt, io};

/// `Result<T, multiproc::Error>`.
///
/// ```
/// fn half(x: u32) -> multiproc::Result<u32> {
///     if x % 2 == 1 { return Err(multiproc::Error::Timeout); }
///     Ok(x / 2)
/// }
/// assert_eq!(half(4).unwrap(), 2);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `multiproc`.
///
/// ```
/// use multiproc::Error;
/// let died = Error::WorkerDied { pid: 42, exitcode: None, signal: Some(9) };
/// assert_eq!(died.to_string(), "process 42 died (killed by signal 9)");
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed. Transparent: its message and its
    /// [`source`](std::error::Error::source) are the `io::Error`'s own, so an error chain
    /// prints it once.
    ///
    /// ```
    /// use std::error::Error as _;
    /// let e = multiproc::Error::from(std::io::Error::other("disk on fire"));
    /// assert_eq!(e.to_string(), "disk on fire");
    /// assert!(e.source().is_none()); // not printed a second time as a cause
    /// ```
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A value could not be encoded, or bytes from a peer could not be decoded. The
    /// [`CodecError`] says what, and keeps the codec's own error as its
    /// [`source`](std::error::Error::source).
    #[error("codec error: {0}")]
    Codec(#[source] CodecError),
    /// The peer closed its end and nothing is left to read.
    #[error("end of file: the peer closed the connection")]
    Eof,
    /// A blocking call ran out of time.
    #[error("operation timed out")]
    Timeout,
    /// A non-blocking get found nothing.
    #[error("empty")]
    Empty,
    /// A non-blocking put found no room.
    #[error("full")]
    Full,
    /// The object was closed: a queue or connection handle after its `close`, a pool
    /// after `close` or `terminate`, a manager after `shutdown` (Python raises
    /// `ValueError: ... is closed`).
    ///
    /// ```
    /// assert_eq!(
    ///     multiproc::Error::Closed.to_string(),
    ///     "closed: this queue, connection, pool or manager was closed"
    /// );
    /// ```
    #[error("closed: this queue, connection, pool or manager was closed")]
    Closed,
    /// The queue was shut down ([`Queue::shutdown`](crate::Queue::shutdown), Python 3.13's
    /// `queue.ShutDown`): a put fails at once, a get once nothing is left to take.
    #[error("the queue was shut down")]
    ShutDown,
    /// A message was larger than the buffer given to
    /// [`Connection::recv_bytes_into`](crate::Connection::recv_bytes_into) (Python's
    /// `BufferTooShort`). The message was received: it is here, whole.
    #[error("buffer too short: the message has {} bytes", message.len())]
    BufferTooShort {
        /// The whole message.
        message: Vec<u8>,
    },
    /// The function run in another process panicked.
    #[error("task panicked at {}: {message}", location.as_deref().unwrap_or("<unknown>"))]
    TaskPanicked {
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
        /// The backtrace, when `RUST_BACKTRACE` was set in the child.
        backtrace: Option<String>,
    },
    /// A process died before it finished its work: killed by a signal, or it exited
    /// without producing a result.
    #[error("process {pid} died ({})", describe_death(*exitcode, *signal))]
    WorkerDied {
        /// Its process id.
        pid: u32,
        /// The code it passed to `exit`, if it exited.
        exitcode: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
    },
    /// A consumer of a [`JoinableQueue`](crate::JoinableQueue) ended (killed, or exited)
    /// holding items it had taken and not marked done: `join` reports it instead of
    /// waiting for ever. Those items are then counted as done (they cannot be any more).
    #[error(
        "process {pid} ended holding {items} queue item(s) it had not marked done (task_done)"
    )]
    ConsumerDied {
        /// Its process id.
        pid: u32,
        /// How many items it held.
        items: u64,
    },
    /// The peer did not prove it knows the authkey, or refused ours, or sent something
    /// other than the handshake's messages (garbage, another protocol, a message far too
    /// long), like Python's `AuthenticationError`.
    #[error("authentication failed: wrong authkey, or the peer does not speak the handshake")]
    AuthenticationFailed,
    /// `start` was called on a process that was already started.
    #[error("process already started")]
    AlreadyStarted,
    /// The process was never started.
    #[error("process not started")]
    NotStarted,
    /// The lock's previous holder died while holding it. The caller now holds the lock;
    /// the data it protects may be inconsistent.
    #[error("the previous owner died while holding the lock")]
    OwnerDied,
    /// A barrier was broken: aborted, timed out, or a party died.
    #[error("broken barrier")]
    BrokenBarrier,
    /// `multiproc::init()` was not called before starting a process.
    #[error("multiproc::init() must be the first call in main (and in each #[test] that starts processes)")]
    NotInitialized,
    /// The child is not the same build as the parent, so a function cannot be located in it.
    #[error("build identity mismatch between parent and child: {0}")]
    BuildMismatch(String),
    /// An operation on a [`Manager`](crate::Manager)'s shared object failed inside the
    /// manager's server (Python's exception raised in the manager process): a missing key,
    /// an object of another kind, an empty list popped. The server keeps serving. (An index
    /// out of range is [`Error::IndexOutOfRange`], wherever it is checked.)
    #[error("{kind} in the manager: {message}")]
    Remote {
        /// What went wrong, like the Python exception's class.
        kind: RemoteErrorKind,
        /// The server's description.
        message: String,
    },
    /// An index out of range (Python's `IndexError`): the one error every fallible indexed
    /// access gives, in this process or in a manager — [`ShareableList`](crate::shared_memory::ShareableList)'s
    /// `get`/`set`, a manager's [`ListProxy`](crate::manager::ListProxy) and
    /// [`ArrayProxy`](crate::manager::ArrayProxy). `index` is the one asked for (negative
    /// ones count from the end, as in Python), `len` the length it was checked against.
    /// Local arrays ([`Array`](crate::Array), [`RawArray`](crate::RawArray)) index like
    /// slices instead: `get` and `set` panic, `try_get` gives an `Option`.
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[1u8, 2]).unwrap();
    /// assert!(matches!(l.get(2), Err(multiproc::Error::IndexOutOfRange { index: 2, len: 2 })));
    /// l.unlink().unwrap();
    /// let m = multiproc::Manager::start().unwrap();
    /// let p = m.list(vec![1u8, 2]).unwrap();
    /// let e = p.get(-3).unwrap_err();
    /// assert_eq!(e.to_string(), "index -3 out of range (length 2)");
    /// assert!(matches!(e, multiproc::Error::IndexOutOfRange { index: -3, len: 2 }));
    /// ```
    #[doc(alias = "IndexError")]
    #[error("index {index} out of range (length {len})")]
    IndexOutOfRange {
        /// The index asked for.
        index: i64,
        /// The length of the sequence.
        len: usize,
    },
    /// The operation is not allowed in this state (e.g. releasing an unheld lock,
    /// sending on the read end of a one-way pipe, forking a multi-threaded process).
    #[error("invalid operation: {0}")]
    InvalidOperation(String),
    /// A [`Pool`](crate::Pool) can no longer run tasks (Python's
    /// `concurrent.futures.process.BrokenProcessPool`): its initializer failed in a worker
    /// (panicked, returned an `Err`, or its type does not match), or every worker slot
    /// failed to start a
    /// worker three times in a row (twenty, when each was SIGKILLed while it started: see
    /// the [pool's faults](crate::pool#faults)). Every pending and later task fails with
    /// this error;
    /// [`source`](std::error::Error::source) is what went wrong last (the initializer's
    /// [`TaskPanicked`](Error::TaskPanicked) or, for an `Err` it returned,
    /// [`InvalidOperation`](Error::InvalidOperation); a worker's
    /// [`WorkerDied`](Error::WorkerDied); the start's own error).
    ///
    /// ```
    /// use std::error::Error as _;
    /// let e = multiproc::Error::BrokenPool {
    ///     reason: "the initializer failed".into(),
    ///     cause: Box::new(multiproc::Error::TaskPanicked {
    ///         message: "no config".into(),
    ///         location: None,
    ///         backtrace: None,
    ///     }),
    /// };
    /// assert_eq!(e.to_string(), "the pool is broken: the initializer failed");
    /// assert_eq!(e.source().unwrap().to_string(), "task panicked at <unknown>: no config");
    /// ```
    #[doc(alias = "BrokenProcessPool")]
    #[error("the pool is broken: {reason}")]
    BrokenPool {
        /// Why the pool cannot go on.
        reason: String,
        /// The failure behind it.
        #[source]
        cause: Box<Error>,
    },
    /// A whole rank of a [cluster pool](crate::pool::cluster) was lost (its node failed,
    /// or it stopped answering): the pool cannot go on, and its pending tasks fail with
    /// this error.
    ///
    /// ```
    /// let e = multiproc::Error::RankLost { rank: 3, message: "no word for 30 s".into() };
    /// assert_eq!(e.to_string(), "MPI rank 3 was lost: no word for 30 s");
    /// ```
    #[error("MPI rank {rank} was lost: {message}")]
    RankLost {
        /// The rank (in `MPI_COMM_WORLD`).
        rank: u32,
        /// What was seen.
        message: String,
    },
}

/// As a derived `Debug` would write it, except that a variant without fields also gives its
/// message: a `main` that returns [`Result`] prints its error with `Debug`, and so does
/// `unwrap()`, where `Error: NotInitialized` alone told a new user nothing.
///
/// ```
/// let e = multiproc::Error::NotInitialized;
/// assert!(format!("{e:?}").starts_with("NotInitialized: multiproc::init() must be the first call"));
/// let d = multiproc::Error::WorkerDied { pid: 7, exitcode: None, signal: Some(9) };
/// assert_eq!(format!("{d:?}"), "WorkerDied { pid: 7, exitcode: None, signal: Some(9) }");
/// ```
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self {
            Error::Eof => "Eof",
            Error::Timeout => "Timeout",
            Error::Empty => "Empty",
            Error::Full => "Full",
            Error::Closed => "Closed",
            Error::ShutDown => "ShutDown",
            Error::AuthenticationFailed => "AuthenticationFailed",
            Error::AlreadyStarted => "AlreadyStarted",
            Error::NotStarted => "NotStarted",
            Error::OwnerDied => "OwnerDied",
            Error::BrokenBarrier => "BrokenBarrier",
            Error::NotInitialized => "NotInitialized",
            Error::Io(e) => return f.debug_tuple("Io").field(e).finish(),
            Error::Codec(e) => return f.debug_tuple("Codec").field(e).finish(),
            Error::BuildMismatch(m) => return f.debug_tuple("BuildMismatch").field(m).finish(),
            Error::InvalidOperation(m) => {
                return f.debug_tuple("InvalidOperation").field(m).finish()
            }
            Error::BufferTooShort { message } => {
                return f
                    .debug_struct("BufferTooShort")
                    .field("message", message)
                    .finish()
            }
            Error::TaskPanicked {
                message,
                location,
                backtrace,
            } => {
                return f
                    .debug_struct("TaskPanicked")
                    .field("message", message)
                    .field("location", location)
                    .field("backtrace", backtrace)
                    .finish()
            }
            Error::WorkerDied {
                pid,
                exitcode,
                signal,
            } => {
                return f
                    .debug_struct("WorkerDied")
                    .field("pid", pid)
                    .field("exitcode", exitcode)
                    .field("signal", signal)
                    .finish()
            }
            Error::ConsumerDied { pid, items } => {
                return f
                    .debug_struct("ConsumerDied")
                    .field("pid", pid)
                    .field("items", items)
                    .finish()
            }
            Error::Remote { kind, message } => {
                return f
                    .debug_struct("Remote")
                    .field("kind", kind)
                    .field("message", message)
                    .finish()
            }
            Error::IndexOutOfRange { index, len } => {
                return f
                    .debug_struct("IndexOutOfRange")
                    .field("index", index)
                    .field("len", len)
                    .finish()
            }
            Error::BrokenPool { reason, cause } => {
                return f
                    .debug_struct("BrokenPool")
                    .field("reason", reason)
                    .field("cause", cause)
                    .finish()
            }
            Error::RankLost { rank, message } => {
                return f
                    .debug_struct("RankLost")
                    .field("rank", rank)
                    .field("message", message)
                    .finish()
            }
        };
        write!(f, "{unit}: {self}")
    }
}

/// The kind of an [`Error::Remote`], named after the Python exception a manager raises.
///
/// ```
/// use multiproc::{Error, RemoteErrorKind};
/// let e = Error::Remote { kind: RemoteErrorKind::IndexError, message: "list index out of range".into() };
/// assert_eq!(e.to_string(), "IndexError in the manager: list index out of range");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// `pop` from an empty list. (An index out of range is
    /// [`Error::IndexOutOfRange`], wherever it happens.)
    IndexError,
    /// A missing dictionary key or namespace attribute.
    KeyError,
    /// The object is not of the kind the operation needs (say a list proxy pointed at a
    /// dict), or a registered type is unknown to the server.
    TypeError,
    /// A bad value for the operation (say releasing an unlocked lock).
    ValueError,
    /// No object with this id or name lives in the manager.
    NotFound,
    /// A registered type's method panicked in the server.
    Panicked,
    /// The request could not be understood.
    ProtocolError,
}

impl std::fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

fn describe_death(exitcode: Option<i32>, signal: Option<i32>) -> String {
    match (exitcode, signal) {
        (_, Some(s)) => format!("killed by signal {s}"),
        (Some(c), None) => format!("exit code {c}"),
        (None, None) => "no status".to_string(),
    }
}

/// The message of a caught panic's payload (a `&str` or a `String`, as `panic!` makes).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidOperation(msg.into())
    }

    /// An [`Error::IndexOutOfRange`] for a position that came as a `usize`.
    pub(crate) fn index_out_of_range(index: usize, len: usize) -> Error {
        Error::IndexOutOfRange {
            index: i64::try_from(index).unwrap_or(i64::MAX),
            len,
        }
    }

    /// The error a manager's server reported: `kind` and `message` as they travel. An
    /// index out of range travels as an `IndexError` whose message is
    /// [`IndexOutOfRange`](Error::IndexOutOfRange)'s text, and becomes that error again.
    pub(crate) fn from_remote(kind: RemoteErrorKind, message: String) -> Error {
        let parsed = || {
            let rest = message.strip_prefix("index ")?;
            let (index, rest) = rest.split_once(" out of range (length ")?;
            let len = rest.strip_suffix(')')?;
            Some(Error::IndexOutOfRange {
                index: index.parse().ok()?,
                len: len.parse().ok()?,
            })
        };
        match kind {
            RemoteErrorKind::IndexError => parsed(),
            _ => None,
        }
        .unwrap_or(Error::Remote { kind, message })
    }

    /// An [`Error::Codec`] with `message` and no underlying error.
    pub(crate) fn codec(message: impl Into<String>) -> Error {
        Error::Codec(CodecError {
            message: message.into(),
            source: None,
        })
    }

    /// An [`Error::Codec`] saying `message`, caused by the codec's error `source`.
    pub(crate) fn codec_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Codec(CodecError {
            message: message.into(),
            source: Some(Box::new(source)),
        })
    }
}

/// What went wrong in an [`Error::Codec`]: a message, and the codec's own error (the format's
/// decoder, say) as the [`source`](std::error::Error::source) when there is one. The message does not
/// repeat the source, so an error chain (`anyhow`'s `{:#}`, say) prints each part once.
///
/// ```
/// use std::error::Error as _;
/// let e = multiproc::codec::decode::<String>(&[5, b'a']).unwrap_err();
/// let multiproc::Error::Codec(c) = &e else { panic!("{e:?}") };
/// assert_eq!(c.message(), "cannot decode value");
/// assert!(e.source().is_some()); // the CodecError
/// assert!(c.source().is_some()); // the codec's own error
/// ```
#[derive(Debug)]
pub struct CodecError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl CodecError {
    /// What failed, without the underlying codec error.
    ///
    /// ```
    /// let e = multiproc::codec::decode::<u8>(&[1, 2]).unwrap_err();
    /// let multiproc::Error::Codec(c) = e else { panic!() };
    /// assert_eq!(c.message(), "1 unexpected trailing byte(s) after the value");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message and the source's, in one line (for an error that travels to another
    /// process as text).
    pub(crate) fn full_text(&self) -> String {
        match &self.source {
            Some(s) => format!("{}: {s}", self.message),
            None => self.message.clone(),
        }
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}
