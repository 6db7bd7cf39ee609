//! Typed proxies to a manager's objects.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::client::ObjRef;
use super::protocol::{Op, Reply, Wait};
use crate::queue::TryPutError;
use crate::{codec, Error, RemoteErrorKind, Result};

pub(crate) fn enc<T: Serialize + ?Sized>(v: &T) -> Result<ByteBuf> {
    super::client::encoding_for_server(|| codec::encode(v).map(ByteBuf::from))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    codec::decode(b)
}

fn unexpected(r: Reply) -> Error {
    Error::codec(format!("unexpected reply from the manager: {r:?}"))
}

fn unit(r: Reply) -> Result<()> {
    match r {
        Reply::Unit => Ok(()),
        r => Err(unexpected(r)),
    }
}

fn value<T: DeserializeOwned>(r: Reply) -> Result<T> {
    match r {
        Reply::Bytes(b) => dec(&b),
        r => Err(unexpected(r)),
    }
}

fn maybe<T: DeserializeOwned>(r: Reply) -> Result<Option<T>> {
    match r {
        Reply::MaybeBytes(Some(b)) => dec(&b).map(Some),
        Reply::MaybeBytes(None) => Ok(None),
        r => Err(unexpected(r)),
    }
}

fn boolean(r: Reply) -> Result<bool> {
    match r {
        Reply::Bool(b) => Ok(b),
        Reply::OwnerDied => Err(Error::OwnerDied),
        r => Err(unexpected(r)),
    }
}

fn length(r: Reply) -> Result<usize> {
    match r {
        Reply::Len(n) => Ok(n as usize),
        r => Err(unexpected(r)),
    }
}

fn list<T: DeserializeOwned>(r: Reply) -> Result<Vec<T>> {
    match r {
        Reply::List(v) => v.iter().map(|b| dec(b)).collect(),
        r => Err(unexpected(r)),
    }
}

fn wait_for(d: Duration) -> Wait {
    Wait::For(d)
}

macro_rules! proxy_common {
    ($name:ident) => {
        proxy_common!($name<>);
    };
    ($name:ident < $($p:ident),* >) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name { obj: self.obj.clone(), _t: PhantomData }
            }
        }
        impl<$($p),*> fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.obj)
            }
        }
        impl<$($p),*> $name<$($p),*> {
            pub(crate) fn from_obj(obj: ObjRef) -> Self {
                $name { obj, _t: PhantomData }
            }
            pub(crate) fn obj(&self) -> &ObjRef {
                &self.obj
            }
        }
    };
}

/// A list position for [`ListProxy`], [`ArrayProxy`](crate::manager::ArrayProxy) and
/// [`ShareableList`](crate::shared_memory::ShareableList): any integer; a negative one
/// counts from the end, as in Python (`-1` is the last value). Sealed.
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let l = m.list(vec![1, 2, 3]).unwrap();
/// assert_eq!(l.get(-1).unwrap(), 3);
/// assert_eq!(l.get(0usize).unwrap(), 1);
/// ```
pub trait ListIndex: list_index::Sealed {
    #[doc(hidden)]
    fn wire(self) -> i64;
}

mod list_index {
    pub trait Sealed {}
}

macro_rules! list_index {
    ($($t:ty),*) => {$(
        impl list_index::Sealed for $t {}
        impl ListIndex for $t {
            fn wire(self) -> i64 {
                // Too large for i64: out of range anyway.
                i64::try_from(self).unwrap_or(i64::MAX)
            }
        }
    )*};
}
list_index!(usize, isize, i32, i64, u32, u64);

/// The position in a sequence of `len` items that `index` names, as Python reads it
/// (negative: from the end); out of range → [`Error::IndexOutOfRange`].
pub(crate) fn resolve_index(index: i64, len: usize) -> Result<usize> {
    let at = if index < 0 {
        (len as i64).checked_add(index)
    } else {
        Some(index)
    };
    match at {
        Some(a) if a >= 0 && (a as u64) < len as u64 => Ok(a as usize),
        _ => Err(Error::IndexOutOfRange { index, len }),
    }
}

/// The bounds of `range` as a slice of a list (`u64::MAX`: to the end).
fn bounds(range: impl std::ops::RangeBounds<usize>) -> (u64, u64) {
    use std::ops::Bound::*;
    let start = match range.start_bound() {
        Included(&s) => s as u64,
        Excluded(&s) => (s as u64).saturating_add(1),
        Unbounded => 0,
    };
    let end = match range.end_bound() {
        Included(&e) => (e as u64).saturating_add(1),
        Excluded(&e) => e as u64,
        Unbounded => u64::MAX,
    };
    (start, end)
}

/// A list in a manager (Python's `manager.list()`), holding values of type `T`.
///
/// Every method is one round trip to the server, applied atomically there. Clone it
/// freely; pass it to other processes in their arguments.
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let l = m.list(vec![1, 2, 3]).unwrap();
/// fn add_four(l: multiproc::manager::ListProxy<i32>) { l.push(4).unwrap(); }
/// multiproc::spawn(add_four, l.clone()).unwrap().join().unwrap();
/// assert_eq!(l.to_vec().unwrap(), vec![1, 2, 3, 4]);
/// assert!(matches!(l.get(10), Err(multiproc::Error::IndexOutOfRange { index: 10, len: 4 })));
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ListProxy<T> {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<fn() -> T>,
}
proxy_common!(ListProxy<T>);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends a value (Python's `append`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(Vec::<String>::new()).unwrap();
    /// l.push("a".to_string()).unwrap();
    /// assert_eq!(l.len().unwrap(), 1);
    /// ```
    pub fn push(&self, value: T) -> Result<()> {
        unit(self.obj.call(Op::ListPush(enc(&value)?))?)
    }

    /// The value at `index` (negative: from the end, see [`ListIndex`]); out of range →
    /// [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec!['x', 'y']).unwrap();
    /// assert_eq!(l.get(1).unwrap(), 'y');
    /// assert_eq!(l.get(-2).unwrap(), 'x');
    /// assert!(l.get(2).is_err());
    /// ```
    #[doc(alias = "__getitem__")]
    pub fn get(&self, index: impl ListIndex) -> Result<T> {
        value(self.obj.call(Op::ListGet(index.wire()))?)
    }

    /// Replaces the value at `index` (`l[i] = v`; negative: from the end); out of range →
    /// [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![0u8; 3]).unwrap();
    /// l.set(2, 9).unwrap();
    /// l.set(-3, 1).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![1, 0, 9]);
    /// ```
    #[doc(alias = "__setitem__")]
    pub fn set(&self, index: impl ListIndex, value: T) -> Result<()> {
        unit(self.obj.call(Op::ListSet(index.wire(), enc(&value)?))?)
    }

    /// The number of values.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.list(vec![1, 2]).unwrap().len().unwrap(), 2);
    /// ```
    pub fn len(&self) -> Result<usize> {
        length(self.obj.call(Op::ListLen)?)
    }

    /// Whether the list is empty.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.list(Vec::<u8>::new()).unwrap().is_empty().unwrap());
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes and returns the last value; empty → [`RemoteErrorKind::IndexError`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1]).unwrap();
    /// assert_eq!(l.pop().unwrap(), 1);
    /// assert!(l.pop().is_err());
    /// ```
    pub fn pop(&self) -> Result<T> {
        value(self.obj.call(Op::ListPop)?)
    }

    /// Removes and returns the value at `index`, shifting the rest down (like
    /// `Vec::remove`, Python's `l.pop(i)`); out of range → [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2, 3, 4]).unwrap();
    /// assert_eq!(l.remove(0).unwrap(), 1);
    /// assert_eq!(l.remove(-1).unwrap(), 4);
    /// assert_eq!(l.to_vec().unwrap(), vec![2, 3]);
    /// ```
    #[doc(alias = "pop")]
    pub fn remove(&self, index: impl ListIndex) -> Result<T> {
        value(self.obj.call(Op::ListRemove(index.wire()))?)
    }

    /// Appends every value of `values`, atomically (one round trip).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1]).unwrap();
    /// l.extend([2, 3]).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn extend<I: IntoIterator<Item = T>>(&self, values: I) -> Result<()> {
        let v = values
            .into_iter()
            .map(|x| enc(&x))
            .collect::<Result<Vec<_>>>()?;
        unit(self.obj.call(Op::ListExtend(v))?)
    }

    /// Inserts `value` before `index`, as Python's `list.insert`: a negative index counts
    /// from the end (see [`ListIndex`]), and an index past either end is clamped to it
    /// (`index >= len` appends, `index <= -len` prepends); it never fails for its index.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 3]).unwrap();
    /// l.insert(1, 2).unwrap();
    /// l.insert(-1, 9).unwrap(); // before the last value
    /// l.insert(100, 4).unwrap(); // past the end: appends
    /// l.insert(-100, 0).unwrap(); // before the start: prepends
    /// assert_eq!(l.to_vec().unwrap(), vec![0, 1, 2, 9, 3, 4]);
    /// ```
    pub fn insert(&self, index: impl ListIndex, value: T) -> Result<()> {
        unit(self.obj.call(Op::ListInsert(index.wire(), enc(&value)?))?)
    }

    /// Removes every value.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2]).unwrap();
    /// l.clear().unwrap();
    /// assert!(l.is_empty().unwrap());
    /// ```
    pub fn clear(&self) -> Result<()> {
        unit(self.obj.call(Op::ListClear)?)
    }

    /// A copy of the whole list (Python's `list(proxy)` / `proxy[:]`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.list(vec![5, 6]).unwrap().to_vec().unwrap(), vec![5, 6]);
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        list(self.obj.call(Op::ListToVec)?)
    }

    /// Iterates over a snapshot of the list taken now (one round trip), like
    /// `for record in records:` in Python.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2, 3]).unwrap();
    /// let sum: i32 = l.iter().unwrap().sum();
    /// assert_eq!(sum, 6);
    /// ```
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>> {
        Ok(self.to_vec()?.into_iter())
    }

    /// An iterator that reads one value per step (one round trip each), by position, so
    /// that it sees writes made after it started, as Python's iteration over a list
    /// proxy does; it ends at the first position past the end. See [`iter`](ListProxy::iter)
    /// for a snapshot.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2]).unwrap();
    /// let mut it = l.iter_live();
    /// assert_eq!(it.next().unwrap().unwrap(), 1);
    /// l.push(3).unwrap(); // written after the iteration began
    /// let rest: Vec<i32> = it.map(|r| r.unwrap()).collect();
    /// assert_eq!(rest, vec![2, 3]);
    /// ```
    #[doc(alias = "__iter__")]
    pub fn iter_live(&self) -> ListIter<T> {
        ListIter {
            list: self.clone(),
            next: 0,
            done: false,
        }
    }

    /// How many values equal `value` (compared by their encoding; Python's `count`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.list(vec![1, 2, 1]).unwrap().count(&1).unwrap(), 2);
    /// ```
    pub fn count(&self, value: &T) -> Result<usize> {
        length(self.obj.call(Op::ListCount(enc(value)?))?)
    }

    /// Whether a value equals `value` (Python's `value in l`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec!["a".to_string()]).unwrap();
    /// assert!(l.contains(&"a".to_string()).unwrap());
    /// assert!(!l.contains(&"b".to_string()).unwrap());
    /// ```
    #[doc(alias = "__contains__")]
    pub fn contains(&self, value: &T) -> Result<bool> {
        Ok(self.count(value)? > 0)
    }

    /// The position of the first value equal to `value`; none → [`Error::Remote`] with
    /// [`RemoteErrorKind::ValueError`] (Python's `index`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![5, 6, 5]).unwrap();
    /// assert_eq!(l.index(&6).unwrap(), 1);
    /// assert!(l.index(&7).is_err());
    /// ```
    pub fn index(&self, value: &T) -> Result<usize> {
        self.index_in(value, ..)
    }

    /// The position of the first value equal to `value` within `range` (Python's
    /// `index(x, start, end)`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![5, 6, 5]).unwrap();
    /// assert_eq!(l.index_in(&5, 1..).unwrap(), 2);
    /// ```
    #[doc(alias = "index")]
    pub fn index_in(&self, value: &T, range: impl std::ops::RangeBounds<usize>) -> Result<usize> {
        let (start, end) = bounds(range);
        length(self.obj.call(Op::ListIndex(enc(value)?, start, end))?)
    }

    /// Removes the first value equal to `value`; none → [`Error::Remote`] with
    /// [`RemoteErrorKind::ValueError`] (Python's `remove(x)`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2, 1]).unwrap();
    /// l.remove_value(&1).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![2, 1]);
    /// assert!(l.remove_value(&9).is_err());
    /// ```
    #[doc(alias = "remove")]
    pub fn remove_value(&self, value: &T) -> Result<()> {
        unit(self.obj.call(Op::ListRemoveValue(enc(value)?))?)
    }

    /// Reverses the list in place, atomically.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2, 3]).unwrap();
    /// l.reverse().unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![3, 2, 1]);
    /// ```
    pub fn reverse(&self) -> Result<()> {
        unit(self.obj.call(Op::ListReverse)?)
    }

    /// Sorts the list in place (Python's `sort()`). The server cannot compare values it
    /// only holds as bytes, so this process sorts a copy and puts it back if nobody wrote
    /// to the list meanwhile, trying again otherwise: the sort is atomic.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![3, 1, 2]).unwrap();
    /// l.sort().unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn sort(&self) -> Result<()>
    where
        T: Ord,
    {
        self.sort_by(T::cmp)
    }

    /// Sorts the list in place with `compare` (Python's `sort(key=…, reverse=…)`), as
    /// [`sort`](ListProxy::sort) does.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![('b', 2), ('a', 9)]).unwrap();
    /// l.sort_by(|x, y| y.1.cmp(&x.1)).unwrap(); // by score, highest first
    /// assert_eq!(l.get(0).unwrap(), ('a', 9));
    /// ```
    #[doc(alias = "sort")]
    pub fn sort_by(&self, mut compare: impl FnMut(&T, &T) -> std::cmp::Ordering) -> Result<()> {
        loop {
            let old = match self.obj.call(Op::ListToVec)? {
                Reply::List(v) => v,
                r => return Err(unexpected(r)),
            };
            let mut values = old
                .iter()
                .map(|b| dec::<T>(b))
                .collect::<Result<Vec<_>>>()?;
            values.sort_by(&mut compare);
            let new = values.iter().map(enc).collect::<Result<Vec<_>>>()?;
            if boolean(self.obj.call(Op::ListSwapIf(old, new))?)? {
                return Ok(());
            }
        }
    }

    /// The values in `range`, clamped to the list as Python's slices are (`l[a:b]`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2, 3, 4]).unwrap();
    /// assert_eq!(l.get_range(1..3).unwrap(), vec![2, 3]);
    /// assert_eq!(l.get_range(2..).unwrap(), vec![3, 4]);
    /// assert_eq!(l.get_range(3..10).unwrap(), vec![4]);
    /// ```
    #[doc(alias = "__getitem__")]
    pub fn get_range(&self, range: impl std::ops::RangeBounds<usize>) -> Result<Vec<T>> {
        let (start, end) = bounds(range);
        list(self.obj.call(Op::ListSlice(start, end))?)
    }

    /// Replaces the values in `range` by `values`, which may be more or fewer
    /// (`l[a:b] = values`), atomically.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2, 3, 4]).unwrap();
    /// l.set_range(1..3, [7, 8, 9]).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![1, 7, 8, 9, 4]);
    /// ```
    #[doc(alias = "__setitem__")]
    pub fn set_range<I: IntoIterator<Item = T>>(
        &self,
        range: impl std::ops::RangeBounds<usize>,
        values: I,
    ) -> Result<()> {
        let (start, end) = bounds(range);
        let v = values
            .into_iter()
            .map(|x| enc(&x))
            .collect::<Result<Vec<_>>>()?;
        unit(self.obj.call(Op::ListSetSlice(start, end, v))?)
    }

    /// Removes the values in `range` (`del l[a:b]`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.list(vec![1, 2, 3, 4]).unwrap();
    /// l.remove_range(..2).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![3, 4]);
    /// ```
    #[doc(alias = "__delitem__")]
    pub fn remove_range(&self, range: impl std::ops::RangeBounds<usize>) -> Result<()> {
        let (start, end) = bounds(range);
        unit(self.obj.call(Op::ListDelSlice(start, end))?)
    }
}

/// An iterator over a [`ListProxy`] that reads one value per step and sees later writes
/// (made by [`ListProxy::iter_live`]).
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let l = m.list(vec![1, 2]).unwrap();
/// let it: multiproc::manager::ListIter<i32> = l.iter_live();
/// assert_eq!(it.count(), 2);
/// ```
#[derive(Debug)]
pub struct ListIter<T> {
    list: ListProxy<T>,
    next: u64,
    done: bool,
}

impl<T: Serialize + DeserializeOwned> Iterator for ListIter<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.list.get(self.next) {
            Ok(v) => {
                self.next += 1;
                Some(Ok(v))
            }
            Err(Error::IndexOutOfRange { .. }) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A dictionary in a manager (Python's `manager.dict()`), keeping insertion order.
///
/// Keys are compared by their encoded bytes, which is equality for the usual key types
/// (integers, strings, tuples of them, …).
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let d = m.dict::<String, u32>().unwrap();
/// d.insert("a".into(), 1).unwrap();
/// assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
/// assert_eq!(d.get(&"b".into()).unwrap(), None);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct DictProxy<K, V> {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<fn() -> (K, V)>,
}
proxy_common!(DictProxy<K, V>);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// Sets `key` to `value`; returns the previous value.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict::<u8, u8>().unwrap();
    /// assert_eq!(d.insert(1, 1).unwrap(), None);
    /// assert_eq!(d.insert(1, 2).unwrap(), Some(1));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        maybe(self.obj.call(Op::DictInsert(enc(&key)?, enc(&value)?))?)
    }

    /// The value of `key`, if present.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict::<u8, u8>().unwrap();
    /// assert_eq!(d.get(&1).unwrap(), None);
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        maybe(self.obj.call(Op::DictGet(enc(key)?))?)
    }

    /// The value of `key` (Python's `d[key]`); missing → [`Error::Remote`] with
    /// [`RemoteErrorKind::KeyError`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict::<u8, u8>().unwrap();
    /// d.insert(1, 5).unwrap();
    /// assert_eq!(d.get_item(&1).unwrap(), 5);
    /// assert!(matches!(d.get_item(&2), Err(multiproc::Error::Remote { kind: multiproc::RemoteErrorKind::KeyError, .. })));
    /// ```
    pub fn get_item(&self, key: &K) -> Result<V> {
        self.get(key)?.ok_or_else(|| Error::Remote {
            kind: RemoteErrorKind::KeyError,
            message: "key not in the dict".into(),
        })
    }

    /// Removes `key`; returns its value if it was present.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict::<u8, u8>().unwrap();
    /// d.insert(1, 5).unwrap();
    /// assert_eq!(d.remove(&1).unwrap(), Some(5));
    /// assert_eq!(d.remove(&1).unwrap(), None);
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        maybe(self.obj.call(Op::DictRemove(enc(key)?))?)
    }

    /// Removes `key` and returns its value (Python's `d.pop(key)`); missing →
    /// [`RemoteErrorKind::KeyError`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict::<u8, u8>().unwrap();
    /// assert!(d.pop(&1).is_err());
    /// ```
    pub fn pop(&self, key: &K) -> Result<V> {
        self.remove(key)?.ok_or_else(|| Error::Remote {
            kind: RemoteErrorKind::KeyError,
            message: "key not in the dict".into(),
        })
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict::<u8, u8>().unwrap();
    /// d.insert(3, 3).unwrap();
    /// assert!(d.contains_key(&3).unwrap() && !d.contains_key(&4).unwrap());
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        boolean(self.obj.call(Op::DictContains(enc(key)?))?)
    }

    /// The number of entries.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.dict::<u8, u8>().unwrap().len().unwrap(), 0);
    /// ```
    pub fn len(&self) -> Result<usize> {
        length(self.obj.call(Op::DictLen)?)
    }

    /// Whether it has no entries.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.dict::<u8, u8>().unwrap().is_empty().unwrap());
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(2u8, 'b'), (1, 'a')]).unwrap();
    /// assert_eq!(d.keys().unwrap(), vec![2, 1]);
    /// ```
    pub fn keys(&self) -> Result<Vec<K>> {
        list(self.obj.call(Op::DictKeys)?)
    }

    /// The values, in insertion order.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(2u8, 'b'), (1, 'a')]).unwrap();
    /// assert_eq!(d.values().unwrap(), vec!['b', 'a']);
    /// ```
    pub fn values(&self) -> Result<Vec<V>> {
        list(self.obj.call(Op::DictValues)?)
    }

    /// The entries, in insertion order.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(1u8, 'a')]).unwrap();
    /// assert_eq!(d.items().unwrap(), vec![(1, 'a')]);
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        pairs(self.obj.call(Op::DictItems)?)
    }

    /// A copy of the whole dictionary (Python's `dict(proxy)`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(1u8, 'a')]).unwrap();
    /// assert_eq!(d.to_map().unwrap()[&1], 'a');
    /// ```
    pub fn to_map(&self) -> Result<HashMap<K, V>>
    where
        K: Eq + Hash,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// Removes every entry.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(1u8, 'a')]).unwrap();
    /// d.clear().unwrap();
    /// assert!(d.is_empty().unwrap());
    /// ```
    pub fn clear(&self) -> Result<()> {
        unit(self.obj.call(Op::DictClear)?)
    }

    /// Inserts every entry of `entries`, atomically (Python's `update`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(1u8, 'a')]).unwrap();
    /// d.update([(1, 'b'), (2, 'c')]).unwrap();
    /// assert_eq!(d.items().unwrap(), vec![(1, 'b'), (2, 'c')]);
    /// ```
    pub fn update<I: IntoIterator<Item = (K, V)>>(&self, entries: I) -> Result<()> {
        let entries = entries
            .into_iter()
            .map(|(k, v)| Ok((enc(&k)?, enc(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        unit(self.obj.call(Op::DictUpdate(entries))?)
    }

    /// The value of `key`, after inserting `default` if the key was missing, atomically
    /// (Python's `setdefault`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict::<String, u32>().unwrap();
    /// assert_eq!(d.setdefault("a".into(), 1).unwrap(), 1);
    /// assert_eq!(d.setdefault("a".into(), 2).unwrap(), 1);
    /// ```
    pub fn setdefault(&self, key: K, default: V) -> Result<V> {
        value(
            self.obj
                .call(Op::DictSetDefault(enc(&key)?, enc(&default)?))?,
        )
    }

    /// Removes and returns the most recently inserted entry; `None` if the dictionary is
    /// empty (Python's `popitem`, which raises `KeyError` then).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(1u8, 'a'), (2, 'b')]).unwrap();
    /// assert_eq!(d.popitem().unwrap(), Some((2, 'b')));
    /// assert_eq!(d.popitem().unwrap(), Some((1, 'a')));
    /// assert_eq!(d.popitem().unwrap(), None);
    /// ```
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        Ok(pairs(self.obj.call(Op::DictPopItem)?)?.pop())
    }

    /// Whether `key` is present (Python's `key in d`; the same as
    /// [`contains_key`](DictProxy::contains_key)).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.dict_from([(1u8, 'a')]).unwrap().contains(&1).unwrap());
    /// ```
    #[doc(alias = "__contains__")]
    pub fn contains(&self, key: &K) -> Result<bool> {
        self.contains_key(key)
    }

    /// An iterator over the entries that reads one entry per step (one round trip each),
    /// by position in insertion order, so that it sees entries added after it started.
    /// See [`items`](DictProxy::items) for a snapshot. (Python's iteration over a dict
    /// proxy fails when the dictionary changes size; this one goes on.)
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let d = m.dict_from([(1u8, 'a')]).unwrap();
    /// let mut it = d.iter_live();
    /// d.insert(2, 'b').unwrap();
    /// assert_eq!(it.next().unwrap().unwrap(), (1, 'a'));
    /// assert_eq!(it.next().unwrap().unwrap(), (2, 'b'));
    /// assert!(it.next().is_none());
    /// ```
    #[doc(alias = "__iter__")]
    pub fn iter_live(&self) -> DictIter<K, V> {
        DictIter {
            dict: self.clone(),
            next: 0,
            done: false,
        }
    }
}

fn pairs<K: DeserializeOwned, V: DeserializeOwned>(r: Reply) -> Result<Vec<(K, V)>> {
    match r {
        Reply::Pairs(v) => v.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
        r => Err(unexpected(r)),
    }
}

/// An iterator over a [`DictProxy`]'s entries that reads one per step and sees later
/// writes (made by [`DictProxy::iter_live`]).
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let d = m.dict_from([(1u8, 'a')]).unwrap();
/// let it: multiproc::manager::DictIter<u8, char> = d.iter_live();
/// assert_eq!(it.count(), 1);
/// ```
#[derive(Debug)]
pub struct DictIter<K, V> {
    dict: DictProxy<K, V>,
    next: u64,
    done: bool,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Iterator for DictIter<K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Result<(K, V)>> {
        if self.done {
            return None;
        }
        match self
            .dict
            .obj
            .call(Op::DictItemAt(self.next))
            .and_then(pairs)
        {
            Ok(mut v) => match v.pop() {
                Some(kv) => {
                    self.next += 1;
                    Some(Ok(kv))
                }
                None => {
                    self.done = true;
                    None
                }
            },
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A namespace in a manager (Python's `manager.Namespace()`): named values of any
/// serializable types.
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let ns = m.namespace().unwrap();
/// ns.set("x", 1).unwrap();
/// ns.set("name", "box").unwrap();
/// assert_eq!(ns.get::<i32>("x").unwrap(), 1);
/// assert_eq!(ns.get::<String>("name").unwrap(), "box");
/// ```
#[derive(Serialize, Deserialize)]
pub struct NamespaceProxy {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<()>,
}
proxy_common!(NamespaceProxy);

impl NamespaceProxy {
    /// Sets attribute `name` (`ns.name = value`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let ns = m.namespace().unwrap();
    /// ns.set("y", vec![1, 2]).unwrap();
    /// assert_eq!(ns.get::<Vec<i32>>("y").unwrap(), vec![1, 2]);
    /// ```
    pub fn set<T: Serialize>(&self, name: &str, value: T) -> Result<()> {
        unit(self.obj.call(Op::NsSet(name.to_string(), enc(&value)?))?)
    }

    /// Reads attribute `name` as a `T`; missing → [`RemoteErrorKind::KeyError`] (Python's
    /// `AttributeError`); stored as another type → usually [`Error::Codec`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let ns = m.namespace().unwrap();
    /// assert!(ns.get::<i32>("nope").is_err());
    /// ```
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        value(self.obj.call(Op::NsGet(name.to_string()))?)
    }

    /// Deletes attribute `name` (`del ns.name`); missing → [`RemoteErrorKind::KeyError`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let ns = m.namespace().unwrap();
    /// ns.set("z", 0).unwrap();
    /// ns.remove("z").unwrap();
    /// assert!(ns.remove("z").is_err());
    /// ```
    pub fn remove(&self, name: &str) -> Result<()> {
        unit(self.obj.call(Op::NsRemove(name.to_string()))?)
    }

    /// The attribute names, in the order they were first set.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let ns = m.namespace().unwrap();
    /// ns.set("a", 1).unwrap();
    /// ns.set("b", 2).unwrap();
    /// assert_eq!(ns.names().unwrap(), vec!["a", "b"]);
    /// ```
    pub fn names(&self) -> Result<Vec<String>> {
        match self.obj.call(Op::NsNames)? {
            Reply::Names(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
}

/// A FIFO queue in a manager (Python's `manager.Queue()`).
///
/// A blocked `get` waits in the server; if its process dies meanwhile, no item is lost.
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let q = m.queue::<u32>().unwrap();
/// fn producer(q: multiproc::manager::QueueProxy<u32>) { for i in 0..3 { q.put(i).unwrap(); } }
/// multiproc::spawn(producer, q.clone()).unwrap().join().unwrap();
/// assert_eq!((q.get().unwrap(), q.get().unwrap(), q.get().unwrap()), (0, 1, 2));
/// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct QueueProxy<T> {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<fn() -> T>,
}
proxy_common!(QueueProxy<T>);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// Adds an item, waiting while a bounded queue is full.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.queue::<String>().unwrap();
    /// q.put("job".to_string()).unwrap();
    /// assert_eq!(q.qsize().unwrap(), 1);
    /// ```
    pub fn put(&self, item: T) -> Result<()> {
        self.put_ref(&item, Wait::Forever)
    }

    /// Adds an item, waiting at most `timeout` for room: [`Error::Full`] after that (the
    /// item is dropped), as [`Queue::put_timeout`](crate::Queue::put_timeout).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.bounded_queue::<u8>(1).unwrap();
    /// q.put(1).unwrap();
    /// let t = std::time::Duration::from_millis(10);
    /// assert!(matches!(q.put_timeout(2, t), Err(multiproc::Error::Full)));
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.put_ref(&item, wait_for(timeout))
    }

    /// Adds an item if there is room now (Python's `put_nowait`); else [`Error::Full`]
    /// (the item is dropped), as [`Queue::try_put`](crate::Queue::try_put).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.bounded_queue::<u8>(1).unwrap();
    /// q.try_put(1).unwrap();
    /// assert!(matches!(q.try_put(2), Err(multiproc::Error::Full)));
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<()> {
        self.put_ref(&item, Wait::No)
    }

    /// [`put_timeout`](QueueProxy::put_timeout) that hands the item back when it was not
    /// put ([`TryPutError::Full`] after the timeout), as
    /// [`Queue::put_timeout_giving_back`](crate::Queue::put_timeout_giving_back).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.bounded_queue::<u8>(1).unwrap();
    /// q.put(1).unwrap();
    /// let t = std::time::Duration::from_millis(10);
    /// let r = q.put_timeout_giving_back(2, t);
    /// assert!(matches!(r, Err(multiproc::queue::TryPutError::Full(2))));
    /// ```
    pub fn put_timeout_giving_back(
        &self,
        item: T,
        timeout: Duration,
    ) -> Result<(), TryPutError<T>> {
        self.put_giving_back(item, wait_for(timeout))
    }

    /// [`try_put`](QueueProxy::try_put) that hands the item back on a full queue
    /// ([`TryPutError::Full`]), as
    /// [`Queue::try_put_giving_back`](crate::Queue::try_put_giving_back).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.bounded_queue::<u8>(1).unwrap();
    /// q.try_put(1).unwrap();
    /// let r = q.try_put_giving_back(2);
    /// assert!(matches!(r, Err(multiproc::queue::TryPutError::Full(2))));
    /// ```
    pub fn try_put_giving_back(&self, item: T) -> Result<(), TryPutError<T>> {
        self.put_giving_back(item, Wait::No)
    }

    fn put_giving_back(&self, item: T, wait: Wait) -> Result<(), TryPutError<T>> {
        match self.put_ref(&item, wait) {
            Ok(()) => Ok(()),
            Err(e) => Err(TryPutError::new(item, e)),
        }
    }

    fn put_ref(&self, item: &T, wait: Wait) -> Result<()> {
        if boolean(self.obj.call(Op::QueuePut(enc(item)?, wait))?)? {
            Ok(())
        } else {
            Err(Error::Full)
        }
    }

    /// Takes the oldest item, waiting for one.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.queue::<i64>().unwrap();
    /// q.put(-1).unwrap();
    /// assert_eq!(q.get().unwrap(), -1);
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_wait(Wait::Forever)?.ok_or(Error::Empty)
    }

    /// Takes the oldest item, waiting at most `timeout` ([`Error::Empty`] after that, as
    /// [`Queue::get_timeout`](crate::Queue::get_timeout) and Python's `queue.Empty`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.queue::<u8>().unwrap();
    /// let t = std::time::Duration::from_millis(10);
    /// assert!(matches!(q.get_timeout(t), Err(multiproc::Error::Empty)));
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_wait(wait_for(timeout))?.ok_or(Error::Empty)
    }

    /// Takes the oldest item if there is one, else [`Error::Empty`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.queue::<u8>().unwrap();
    /// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.get_wait(Wait::No)?.ok_or(Error::Empty)
    }

    fn get_wait(&self, wait: Wait) -> Result<Option<T>> {
        maybe(self.obj.call(Op::QueueGet(wait))?)
    }

    /// The number of items in the queue now.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.queue::<u8>().unwrap().qsize().unwrap(), 0);
    /// ```
    pub fn qsize(&self) -> Result<usize> {
        length(self.obj.call(Op::QueueSize)?)
    }

    /// Whether the queue is empty now.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.queue::<u8>().unwrap().empty().unwrap());
    /// ```
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether a bounded queue holds as many items as it may now (never for an unbounded
    /// one).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let q = m.bounded_queue::<u8>(1).unwrap();
    /// assert!(!q.full().unwrap());
    /// q.put(1).unwrap();
    /// assert!(q.full().unwrap());
    /// assert!(!m.queue::<u8>().unwrap().full().unwrap());
    /// ```
    pub fn full(&self) -> Result<bool> {
        match self.obj.call(Op::QueueFull)? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }
}

/// A single value in a manager (Python's `manager.Value(typecode, v)`), of any
/// serializable type.
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let v = m.value(10i64).unwrap();
/// v.set(11).unwrap();
/// assert_eq!(v.get().unwrap(), 11);
/// assert_eq!(v.swap(12).unwrap(), 11);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ValueProxy<T> {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<fn() -> T>,
}
proxy_common!(ValueProxy<T>);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The current value (`v.value`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.value("s".to_string()).unwrap().get().unwrap(), "s");
    /// ```
    pub fn get(&self) -> Result<T> {
        value(self.obj.call(Op::ValueGet)?)
    }

    /// Replaces the value (`v.value = x`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let v = m.value(1u8).unwrap();
    /// v.set(2).unwrap();
    /// assert_eq!(v.get().unwrap(), 2);
    /// ```
    pub fn set(&self, value: T) -> Result<()> {
        unit(self.obj.call(Op::ValueSet(enc(&value)?))?)
    }

    /// Replaces the value and returns the old one, atomically.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let v = m.value(1u8).unwrap();
    /// assert_eq!(v.swap(5).unwrap(), 1);
    /// ```
    pub fn swap(&self, value: T) -> Result<T> {
        self::value(self.obj.call(Op::ValueSwap(enc(&value)?))?)
    }
}

/// A lock held in a manager (Python's `manager.Lock()`). Any process may release it (it
/// has no owner, like Python's).
///
/// Better than Python's: if the process holding it dies (every connection of that process
/// to the server is gone), the server releases it, and the next acquirer gets
/// [`Error::OwnerDied`] — it then holds the lock, and the data the lock protects may be
/// half-updated. If the process that asked for it dies before hearing that it got it, the
/// server releases it silently.
///
/// A [`release`](LockProxy::release) by another process after the holder died succeeds
/// whether or not the server has noticed the death yet: it stands for the release the
/// holder never made, and the next acquirer is then not told [`Error::OwnerDied`]. (A
/// blocking [`acquire`](LockProxy::acquire) waits for the server to notice; a
/// [`try_acquire`](LockProxy::try_acquire) made before it has noticed sees the lock held.)
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let lock = m.lock().unwrap();
/// {
///     let _g = lock.lock().unwrap();
///     assert!(!lock.try_acquire().unwrap());
/// }
/// assert!(lock.try_acquire().unwrap());
/// lock.release().unwrap();
/// ```
#[derive(Serialize, Deserialize)]
pub struct LockProxy {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<()>,
}
proxy_common!(LockProxy);

impl LockProxy {
    /// Acquires the lock, waiting as long as it takes. [`Error::OwnerDied`]: acquired, but
    /// the previous holder died holding it.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.lock().unwrap();
    /// l.acquire().unwrap();
    /// assert!(l.locked().unwrap());
    /// l.release().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        if boolean(self.obj.call(Op::LockAcquire(Wait::Forever))?)? {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Acquires the lock, waiting at most `timeout`; returns whether it got it
    /// ([`Error::OwnerDied`] as for [`acquire`](LockProxy::acquire)).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.lock().unwrap();
    /// let t = std::time::Duration::from_millis(10);
    /// assert!(l.acquire_timeout(t).unwrap());
    /// assert!(!l.acquire_timeout(t).unwrap());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        boolean(self.obj.call(Op::LockAcquire(wait_for(timeout)))?)
    }

    /// Acquires the lock if it is free now; returns whether it got it.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.lock().unwrap();
    /// assert!(l.try_acquire().unwrap());
    /// assert!(!l.try_acquire().unwrap());
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        boolean(self.obj.call(Op::LockAcquire(Wait::No))?)
    }

    /// Releases the lock; releasing an unlocked lock → [`Error::InvalidOperation`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.lock().unwrap();
    /// assert!(matches!(l.release(), Err(multiproc::Error::InvalidOperation(_))));
    /// ```
    pub fn release(&self) -> Result<()> {
        match self.obj.call(Op::LockRelease) {
            Ok(r) => unit(r),
            Err(Error::Remote {
                kind: RemoteErrorKind::ValueError,
                message,
            }) => Err(Error::InvalidOperation(message)),
            Err(e) => Err(e),
        }
    }

    /// Whether the lock is held now.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(!m.lock().unwrap().locked().unwrap());
    /// ```
    pub fn locked(&self) -> Result<bool> {
        boolean(self.obj.call(Op::LockLocked)?)
    }

    /// Acquires the lock and returns a guard that releases it when dropped.
    /// [`Error::OwnerDied`]: the lock was acquired (its previous holder died holding it)
    /// but no guard is returned: release it with [`release`](LockProxy::release) once the
    /// protected data is checked.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let l = m.lock().unwrap();
    /// drop(l.lock().unwrap());
    /// assert!(!l.locked().unwrap());
    /// ```
    pub fn lock(&self) -> Result<LockProxyGuard<'_>> {
        self.acquire()?;
        Ok(LockProxyGuard { lock: self })
    }
}

/// Holds a [`LockProxy`] until dropped (see [`LockProxy::lock`]).
///
/// ```
/// # multiproc::init();
/// # let m = multiproc::Manager::start().unwrap();
/// let l = m.lock().unwrap();
/// let g: multiproc::manager::LockProxyGuard<'_> = l.lock().unwrap();
/// drop(g);
/// ```
#[derive(Debug)]
pub struct LockProxyGuard<'a> {
    lock: &'a LockProxy,
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

/// An event held in a manager (Python's `manager.Event()`).
///
/// ```
/// multiproc::init();
/// let m = multiproc::Manager::start().unwrap();
/// let e = m.event().unwrap();
/// fn setter(e: multiproc::manager::EventProxy) { e.set().unwrap(); }
/// multiproc::spawn(setter, e.clone()).unwrap().join().unwrap();
/// assert!(e.wait_timeout(std::time::Duration::from_secs(5)).unwrap());
/// ```
#[derive(Serialize, Deserialize)]
pub struct EventProxy {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<()>,
}
proxy_common!(EventProxy);

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let e = m.event().unwrap();
    /// e.set().unwrap();
    /// assert!(e.is_set().unwrap());
    /// ```
    pub fn set(&self) -> Result<()> {
        unit(self.obj.call(Op::EventSet)?)
    }

    /// Clears the flag.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let e = m.event().unwrap();
    /// e.set().unwrap();
    /// e.clear().unwrap();
    /// assert!(!e.is_set().unwrap());
    /// ```
    pub fn clear(&self) -> Result<()> {
        unit(self.obj.call(Op::EventClear)?)
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(!m.event().unwrap().is_set().unwrap());
    /// ```
    pub fn is_set(&self) -> Result<bool> {
        boolean(self.obj.call(Op::EventIsSet)?)
    }

    /// Waits until the flag is set.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let e = m.event().unwrap();
    /// e.set().unwrap();
    /// e.wait().unwrap();
    /// ```
    pub fn wait(&self) -> Result<()> {
        if boolean(self.obj.call(Op::EventWait(Wait::Forever))?)? {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Waits at most `timeout` for the flag; returns whether it is set.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let e = m.event().unwrap();
    /// assert!(!e.wait_timeout(std::time::Duration::from_millis(10)).unwrap());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        boolean(self.obj.call(Op::EventWait(wait_for(timeout)))?)
    }
}

/// A type whose values can live in a manager and be used through a [`SharedProxy`]
/// (Python's `BaseManager.register(typeid, callable)`).
///
/// Requests and replies are your own serializable types (an enum of methods works well);
/// the server calls [`handle`](Shared::handle) for each, one at a time per object. Register
/// the type with [`ManagerBuilder::register`](super::ManagerBuilder::register) before the
/// manager starts.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Counter { n: i64 }
/// #[derive(Serialize, Deserialize)]
/// enum CounterOp { Add(i64), Get }
/// impl multiproc::manager::Shared for Counter {
///     type Request = CounterOp;
///     type Reply = i64;
///     fn handle(&mut self, op: CounterOp) -> i64 {
///         if let CounterOp::Add(k) = op { self.n += k; }
///         self.n
///     }
/// }
/// multiproc::init();
/// let m = multiproc::Manager::builder().register::<Counter>().start().unwrap();
/// let c = m.create(Counter { n: 1 }).unwrap();
/// assert_eq!(c.call(CounterOp::Add(2)).unwrap(), 3);
/// assert_eq!(c.get().unwrap().n, 3);
/// ```
pub trait Shared: Serialize + DeserializeOwned + Send + 'static {
    /// What a proxy sends to call a method.
    type Request: Serialize + DeserializeOwned;
    /// What the method returns to the proxy.
    type Reply: Serialize + DeserializeOwned;
    /// Runs one request on the object, in the server.
    fn handle(&mut self, request: Self::Request) -> Self::Reply;
    /// The name the type is registered under (the same in every binary that talks to the
    /// server). Defaults to the type's Rust path.
    fn registered_name() -> String {
        std::any::type_name::<Self>().to_string()
    }
}

/// The server's view of a registered type.
pub(crate) trait ErasedShared: Send {
    fn call(&mut self, request: &[u8]) -> std::result::Result<Vec<u8>, (RemoteErrorKind, String)>;
    fn snapshot(&self) -> std::result::Result<Vec<u8>, (RemoteErrorKind, String)>;
}

impl<S: Shared> ErasedShared for S {
    fn call(&mut self, request: &[u8]) -> std::result::Result<Vec<u8>, (RemoteErrorKind, String)> {
        let req: S::Request = codec::decode(request)
            .map_err(|e| (RemoteErrorKind::TypeError, format!("bad request: {e}")))?;
        let reply = self.handle(req);
        codec::encode(&reply).map_err(|e| (RemoteErrorKind::TypeError, e.to_string()))
    }
    fn snapshot(&self) -> std::result::Result<Vec<u8>, (RemoteErrorKind, String)> {
        codec::encode(self).map_err(|e| (RemoteErrorKind::TypeError, e.to_string()))
    }
}

/// Builds a registered type's value in the server from its encoded initial value.
pub(crate) fn construct<S: Shared>(
    init: Vec<u8>,
) -> std::result::Result<Box<dyn ErasedShared>, (RemoteErrorKind, String)> {
    let v: S = codec::decode(&init).map_err(|e| {
        (
            RemoteErrorKind::TypeError,
            format!("bad initial value: {e}"),
        )
    })?;
    Ok(Box::new(v))
}

/// A proxy to a value of a registered [`Shared`] type living in a manager.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Maths;
/// # impl multiproc::manager::Shared for Maths {
/// #     type Request = (i32, i32);
/// #     type Reply = i32;
/// #     fn handle(&mut self, (a, b): (i32, i32)) -> i32 { a + b }
/// # }
/// multiproc::init();
/// let m = multiproc::Manager::builder().register::<Maths>().start().unwrap();
/// let maths = m.create(Maths).unwrap();
/// fn add(p: multiproc::manager::SharedProxy<Maths>) -> i32 { p.call((2, 3)).unwrap() }
/// assert_eq!(multiproc::spawn(add, maths).unwrap().join().unwrap(), 5);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SharedProxy<S> {
    obj: ObjRef,
    #[serde(skip)]
    _t: PhantomData<fn() -> S>,
}
proxy_common!(SharedProxy<S>);

impl<S: Shared> SharedProxy<S> {
    /// Runs `request` on the object in the server and returns its reply. A panic in
    /// [`Shared::handle`] → [`Error::Remote`] with [`RemoteErrorKind::Panicked`]; the
    /// server keeps serving.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)]
    /// # struct Echo;
    /// # impl multiproc::manager::Shared for Echo {
    /// #     type Request = String;
    /// #     type Reply = String;
    /// #     fn handle(&mut self, s: String) -> String { s }
    /// # }
    /// # multiproc::init();
    /// let m = multiproc::Manager::builder().register::<Echo>().start().unwrap();
    /// assert_eq!(m.create(Echo).unwrap().call("hi".into()).unwrap(), "hi");
    /// ```
    pub fn call(&self, request: S::Request) -> Result<S::Reply> {
        value(self.obj.call(Op::SharedCall(enc(&request)?))?)
    }

    /// A copy of the object's current state.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, PartialEq, Debug)]
    /// # struct Cell(u8);
    /// # impl multiproc::manager::Shared for Cell {
    /// #     type Request = u8;
    /// #     type Reply = ();
    /// #     fn handle(&mut self, v: u8) { self.0 = v; }
    /// # }
    /// # multiproc::init();
    /// let m = multiproc::Manager::builder().register::<Cell>().start().unwrap();
    /// let c = m.create(Cell(0)).unwrap();
    /// c.call(7).unwrap();
    /// assert_eq!(c.get().unwrap(), Cell(7));
    /// ```
    pub fn get(&self) -> Result<S> {
        value(self.obj.call(Op::SharedGet)?)
    }
}
