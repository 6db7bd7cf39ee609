//! The manager's wire protocol: one request frame, one reply frame.
//!
//! Values are stored in the server as their encoded bytes: the server never needs to know
//! the element types, and a client decodes what it reads with its proxy's type.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::RemoteErrorKind;

/// The kinds of object a manager holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    List,
    Dict,
    Namespace,
    Queue,
    Value,
    Lock,
    Event,
    /// A registered type, by its registered name.
    Shared(String),
    /// A kind of [`objects`](super::objects), by its name.
    Object(String),
}

/// How long a blocking operation may wait.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum Wait {
    /// Do not block.
    No,
    /// Block until it can proceed.
    Forever,
    /// Block at most this long.
    For(Duration),
}

/// What to create.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Create {
    List(Vec<ByteBuf>),
    Dict(Vec<(ByteBuf, ByteBuf)>),
    Namespace,
    Queue(Option<u64>),
    Value(ByteBuf),
    Lock,
    Event,
    Shared(String, ByteBuf),
    /// A kind of [`objects`](super::objects) by name, with its encoded initial state.
    Object(String, ByteBuf),
}

/// An operation on one object.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    ListPush(ByteBuf),
    /// Indices count from the end when negative, as in Python.
    ListGet(i64),
    ListSet(i64, ByteBuf),
    ListLen,
    ListPop,
    ListRemove(i64),
    ListExtend(Vec<ByteBuf>),
    ListInsert(i64, ByteBuf),
    ListClear,
    ListToVec,
    /// How many values encode as these bytes.
    ListCount(ByteBuf),
    /// The first position in `start..end` of a value encoding as these bytes.
    ListIndex(ByteBuf, u64, u64),
    ListRemoveValue(ByteBuf),
    ListReverse,
    /// `l[start:end]`, clamped as Python's slices are.
    ListSlice(u64, u64),
    /// `l[start:end] = values`.
    ListSetSlice(u64, u64, Vec<ByteBuf>),
    /// `del l[start:end]`.
    ListDelSlice(u64, u64),
    /// Replaces the whole list with the second one if it still is the first.
    ListSwapIf(Vec<ByteBuf>, Vec<ByteBuf>),

    DictInsert(ByteBuf, ByteBuf),
    DictGet(ByteBuf),
    DictRemove(ByteBuf),
    DictContains(ByteBuf),
    DictLen,
    DictKeys,
    DictValues,
    DictItems,
    DictClear,
    DictUpdate(Vec<(ByteBuf, ByteBuf)>),
    /// The value of the key; inserts the given one first if the key is missing.
    DictSetDefault(ByteBuf, ByteBuf),
    /// Removes and returns the last entry.
    DictPopItem,
    /// The entry at a position (insertion order).
    DictItemAt(u64),

    NsSet(String, ByteBuf),
    NsGet(String),
    NsRemove(String),
    NsNames,

    QueuePut(ByteBuf, Wait),
    QueueGet(Wait),
    QueueSize,
    QueueTaskDone,
    QueueJoin(Wait),
    QueueUnfinished,

    ValueGet,
    ValueSet(ByteBuf),
    ValueSwap(ByteBuf),

    LockAcquire(Wait),
    LockRelease,
    LockLocked,

    EventSet,
    EventClear,
    EventIsSet,
    EventWait(Wait),

    SharedCall(ByteBuf),
    SharedGet,

    /// An encoded request to a kind of [`objects`](super::objects).
    Object(ByteBuf),

    /// Whether a bounded queue holds as many items as it may (last, so that the numbers of
    /// the variants before it stay as they were).
    QueueFull,
}

/// A request from a client.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// First request on a connection: the client process's session id, so that the
    /// server can tell when every connection of a process is gone (it died).
    Hello(u64),
    /// Sent with two descriptors (the socket and the shared-memory lanes of the server's
    /// end of a fresh channel): from now on, talk over that channel.
    UseLane,
    Create(Create),
    Call(u64, Op),
    /// Gives an object a name other clients can look up.
    Publish(String, u64),
    /// Looks up a published name; the caller's process then holds the object.
    Lookup(String),
    /// This process holds one more proxy to the object. `true`: the proxy was received
    /// from another process; the sender's pin for it is no longer needed.
    Acquire(u64, bool),
    /// This process dropped a proxy it held.
    Release(u64),
    /// A proxy to the object is being sent to another process: keep the object alive
    /// until the receiver takes its hold (or this process ends).
    Pin(u64),
    /// How many objects the server holds.
    ObjectCount,
    /// Proxies to these objects were just stored in object `container` (in a value put
    /// there): the container holds them from now on, in place of this process's pins.
    Contain(u64, Vec<u64>),
}

/// A successful reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Unit,
    /// A lock was acquired, but its previous holder's process died holding it.
    OwnerDied,
    Object(u64, Kind),
    Bytes(ByteBuf),
    MaybeBytes(Option<ByteBuf>),
    Bool(bool),
    Len(u64),
    List(Vec<ByteBuf>),
    Pairs(Vec<(ByteBuf, ByteBuf)>),
    Names(Vec<String>),
}

/// The reply frame.
pub(crate) type Response = Result<Reply, (RemoteErrorKind, String)>;
