//! A task's failure, in a form that can be kept, cloned and turned into an [`Error`] as
//! often as a result is read.

use std::io;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Why a task has no value. Cloneable (unlike [`Error`]), so that an [`AsyncResult`]'s
/// `get` can return the same outcome every time.
///
/// [`AsyncResult`]: super::AsyncResult
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum TaskFail {
    Panicked {
        message: String,
        location: Option<String>,
        backtrace: Option<String>,
    },
    Codec(String),
    BuildMismatch(String),
    Died {
        pid: u32,
        exitcode: Option<i32>,
        signal: Option<i32>,
    },
    Timeout,
    Closed,
    Invalid(String),
    Io(String),
    /// `multiproc::init()` was not called, so no worker could start.
    NotInitialized,
    RankLost {
        rank: u32,
        message: String,
    },
    /// The pool cannot go on: `reason`, after `cause`.
    Broken {
        reason: String,
        cause: Box<TaskFail>,
    },
}

impl TaskFail {
    /// The pool's initializer failed in a worker (`cause`): the pool cannot go on.
    pub(crate) fn initializer_failed(cause: TaskFail) -> TaskFail {
        TaskFail::Broken {
            reason: "the initializer failed in a worker".into(),
            cause: Box::new(cause),
        }
    }

    pub(crate) fn to_error(&self) -> Error {
        match self {
            TaskFail::Panicked {
                message,
                location,
                backtrace,
            } => Error::TaskPanicked {
                message: message.clone(),
                location: location.clone(),
                backtrace: backtrace.clone(),
            },
            TaskFail::Codec(m) => Error::codec(m.clone()),
            TaskFail::BuildMismatch(m) => Error::BuildMismatch(m.clone()),
            TaskFail::Died {
                pid,
                exitcode,
                signal,
            } => Error::WorkerDied {
                pid: *pid,
                exitcode: *exitcode,
                signal: *signal,
            },
            TaskFail::Timeout => Error::Timeout,
            TaskFail::Closed => Error::Closed,
            TaskFail::Invalid(m) => Error::InvalidOperation(m.clone()),
            TaskFail::Io(m) => Error::Io(io::Error::other(m.clone())),
            TaskFail::NotInitialized => Error::NotInitialized,
            TaskFail::RankLost { rank, message } => Error::RankLost {
                rank: *rank,
                message: message.clone(),
            },
            TaskFail::Broken { reason, cause } => Error::BrokenPool {
                reason: reason.clone(),
                cause: Box::new(cause.to_error()),
            },
        }
    }

    /// The failure for an error met in the parent (starting a worker, encoding arguments).
    pub(crate) fn from_error(e: &Error) -> TaskFail {
        match e {
            Error::Codec(m) => TaskFail::Codec(m.full_text()),
            Error::Closed => TaskFail::Closed,
            Error::Timeout => TaskFail::Timeout,
            Error::BuildMismatch(m) => TaskFail::BuildMismatch(m.clone()),
            Error::InvalidOperation(m) => TaskFail::Invalid(m.clone()),
            Error::NotInitialized => TaskFail::NotInitialized,
            Error::TaskPanicked {
                message,
                location,
                backtrace,
            } => TaskFail::Panicked {
                message: message.clone(),
                location: location.clone(),
                backtrace: backtrace.clone(),
            },
            Error::WorkerDied {
                pid,
                exitcode,
                signal,
            } => TaskFail::Died {
                pid: *pid,
                exitcode: *exitcode,
                signal: *signal,
            },
            Error::RankLost { rank, message } => TaskFail::RankLost {
                rank: *rank,
                message: message.clone(),
            },
            Error::BrokenPool { reason, cause } => TaskFail::Broken {
                reason: reason.clone(),
                cause: Box::new(TaskFail::from_error(cause)),
            },
            other => TaskFail::Io(other.to_string()),
        }
    }
}
