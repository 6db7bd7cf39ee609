//! Object kinds that each live in one file: the state the server keeps, the requests it
//! answers, the proxy clients use and the [`Manager`](super::Manager) method that makes
//! one. Adding a kind means adding a file here and one line to [`construct`].
//!
//! Requests and replies of these kinds travel as encoded bytes inside the manager's
//! protocol (`Op::Object`), so the protocol itself does not grow with each kind. A
//! blocking request waits in the server with [`wait_on`], which gives up when its client
//! hangs up; what a dead client process held (a lock, a condition's lock) is given back
//! through [`Object::session_ended`].

pub(crate) mod array;
pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod joinable_queue;
pub(crate) mod rlock;
pub(crate) mod semaphore;
pub(crate) mod set;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::ObjRef;
use super::protocol::{Op, Reply};
pub(crate) use super::server::{wait_on, Wire};
use crate::{codec, Error, RemoteErrorKind, Result};

/// An error to send back to the client.
pub(crate) type RemoteErr = (RemoteErrorKind, String);

/// What a request knows about its caller.
pub(crate) struct Cx<'a> {
    /// The connection, to notice that the client hung up while a request waits.
    pub(crate) conn: &'a dyn Wire,
    /// The client process's session ([`NO_SESSION`](super::server) if it never said).
    pub(crate) session: u64,
}

/// A kind of object kept by the server.
pub(crate) trait Object: Send + Sync {
    /// Answers one encoded request with an encoded reply, atomically; may wait.
    fn call(&self, request: &[u8], cx: &Cx<'_>) -> std::result::Result<Vec<u8>, RemoteErr>;

    /// Every connection of client process `session` is gone (it died, or dropped all its
    /// proxies): give back what it held.
    fn session_ended(&self, _session: u64) {}
}

/// Makes a new object of kind `kind` from its encoded initial state; `None`: no such kind.
pub(crate) fn construct(
    kind: &str,
    init: &[u8],
) -> Option<std::result::Result<Arc<dyn Object>, RemoteErr>> {
    Some(match kind {
        rlock::KIND => rlock::RLockObj::create(init),
        semaphore::KIND => semaphore::SemaphoreObj::create(init),
        condition::KIND => condition::ConditionObj::create(init),
        barrier::KIND => barrier::BarrierObj::create(init),
        _ => return None,
    })
}

/// Decodes a request (or an initial state) in the server.
pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> std::result::Result<T, RemoteErr> {
    codec::decode(b).map_err(|e| (RemoteErrorKind::ProtocolError, e.to_string()))
}

/// Encodes a reply in the server.
pub(crate) fn encode<T: Serialize>(v: &T) -> std::result::Result<Vec<u8>, RemoteErr> {
    codec::encode(v).map_err(|e| (RemoteErrorKind::ProtocolError, e.to_string()))
}

/// A client's request to an object of these kinds, with its reply decoded.
pub(crate) fn call<Q: Serialize, R: DeserializeOwned>(obj: &ObjRef, request: &Q) -> Result<R> {
    match obj.call(Op::Object(serde_bytes::ByteBuf::from(codec::encode(
        request,
    )?)))? {
        Reply::Bytes(b) => codec::decode(&b),
        r => Err(Error::codec(format!(
            "unexpected reply from the manager: {r:?}"
        ))),
    }
}

/// The calling thread, as the owner of a lock kept by the server (with the process's
/// session, which the server knows). Unique within the process.
pub(crate) fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

/// Who holds a lock kept by the server: a client process's session and one of its threads.
pub(crate) type Owner = (u64, u64);

/// A remote `ValueError` or `RuntimeError` (a misuse, as Python raises them) becomes the
/// local types' [`Error::InvalidOperation`].
pub(crate) fn misuse(e: Error) -> Error {
    match e {
        Error::Remote {
            kind: RemoteErrorKind::ValueError | RemoteErrorKind::TypeError,
            message,
        } => Error::InvalidOperation(message),
        e => e,
    }
}

/// Defines a proxy type for a kind of this module: the struct, `Clone`, `Debug`,
/// serialization and the [`Proxy`](super::Proxy) impl that `lookup` checks.
macro_rules! object_proxy {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            obj: $crate::manager::client::ObjRef,
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.obj)
            }
        }

        impl $crate::manager::sealed::Sealed for $name {}

        #[allow(private_interfaces)]
        impl $crate::manager::Proxy for $name {
            fn obj_ref(&self) -> &$crate::manager::client::ObjRef {
                &self.obj
            }
            fn from_obj_ref(obj: $crate::manager::client::ObjRef) -> Self {
                $name { obj }
            }
            fn accepts(kind: &$crate::manager::protocol::Kind) -> bool {
                matches!(kind, $crate::manager::protocol::Kind::Object(k) if k == $kind)
            }
        }
    };
}
pub(crate) use object_proxy;

/// Defines a typed proxy that offers another view of an object of a built-in kind (an
/// array is a list, a set a dictionary, a joinable queue a queue): the struct holding the
/// inner proxy, `Clone`, `Debug`, serialization and the [`Proxy`](super::Proxy) impl that
/// `lookup` checks.
macro_rules! view_proxy {
    ($(#[$doc:meta])* $name:ident<$t:ident> { $field:ident: $inner:ty }, $kind:ident) => {
        $(#[$doc])*
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(bound = "")]
        pub struct $name<$t> {
            $field: $inner,
        }

        impl<$t> Clone for $name<$t> {
            fn clone(&self) -> Self {
                $name {
                    $field: self.$field.clone(),
                }
            }
        }

        impl<$t> std::fmt::Debug for $name<$t> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.$field.obj())
            }
        }

        impl<$t> $crate::manager::sealed::Sealed for $name<$t> {}

        #[allow(private_interfaces)]
        impl<$t> $crate::manager::Proxy for $name<$t> {
            fn obj_ref(&self) -> &$crate::manager::client::ObjRef {
                self.$field.obj()
            }
            fn from_obj_ref(obj: $crate::manager::client::ObjRef) -> Self {
                $name {
                    $field: <$inner>::from_obj(obj),
                }
            }
            fn accepts(kind: &$crate::manager::protocol::Kind) -> bool {
                matches!(kind, $crate::manager::protocol::Kind::$kind)
            }
        }
    };
}
pub(crate) use view_proxy;
