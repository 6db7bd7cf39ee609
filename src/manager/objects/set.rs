//! A set kept by the server (Python 3.14's `manager.set()`). The server keeps it as a
//! dictionary whose values are all `()`; this proxy offers what a set does.

use std::collections::HashSet;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::view_proxy;
use crate::manager::{DictProxy, Manager};
use crate::Result;

view_proxy! {
    /// A set kept by a manager (Python 3.14's `manager.set()`): add, remove and test values
    /// from any process, each call one atomic step in the server. Values are compared by
    /// their encoded bytes, as a [`DictProxy`]'s keys are (equality for integers, strings,
    /// tuples of them, …). The set algebra (`union`, `is_subset`, …) works on a snapshot:
    /// [`to_set`](SetProxy::to_set) and the methods of [`HashSet`].
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::SetProxy;
    /// fn tag(s: SetProxy<String>) {
    ///     s.add("seen".to_string()).unwrap();
    /// }
    /// let m = multiproc::Manager::start().unwrap();
    /// let s = m.set(["a".to_string()]).unwrap();
    /// multiproc::spawn(tag, s.clone()).unwrap().join().unwrap();
    /// assert!(s.contains(&"seen".to_string()).unwrap());
    /// assert_eq!(s.len().unwrap(), 2);
    /// ```
    SetProxy<T> { dict: DictProxy<T, ()> },
    Dict
}

impl<T: Serialize + DeserializeOwned> SetProxy<T> {
    /// Adds `value`; returns whether it was not there yet (as [`HashSet::insert`]).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.set(Vec::<u8>::new()).unwrap();
    /// assert!(s.add(1).unwrap());
    /// assert!(!s.add(1).unwrap());
    /// ```
    #[doc(alias = "insert")]
    pub fn add(&self, value: T) -> Result<bool> {
        Ok(self.dict.insert(value, ())?.is_none())
    }

    /// Removes `value`; returns whether it was there (Python's `discard`; its `remove`
    /// raises `KeyError` where this returns `false`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.set([1u8, 2]).unwrap();
    /// assert!(s.remove(&1).unwrap());
    /// assert!(!s.remove(&1).unwrap());
    /// ```
    #[doc(alias = "discard")]
    pub fn remove(&self, value: &T) -> Result<bool> {
        Ok(self.dict.remove(value)?.is_some())
    }

    /// Whether `value` is in the set (Python's `value in s`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.set(['x']).unwrap().contains(&'x').unwrap());
    /// ```
    #[doc(alias = "__contains__")]
    pub fn contains(&self, value: &T) -> Result<bool> {
        self.dict.contains_key(value)
    }

    /// The number of values.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.set([1, 1, 2]).unwrap().len().unwrap(), 2);
    /// ```
    #[doc(alias = "__len__")]
    pub fn len(&self) -> Result<usize> {
        self.dict.len()
    }

    /// Whether the set is empty.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.set(Vec::<u8>::new()).unwrap().is_empty().unwrap());
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Adds every value of `values`, in one atomic step (Python's `update`, `|=`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.set([1u8]).unwrap();
    /// s.update([1, 2, 3]).unwrap();
    /// assert_eq!(s.len().unwrap(), 3);
    /// ```
    pub fn update<I: IntoIterator<Item = T>>(&self, values: I) -> Result<()> {
        self.dict.update(values.into_iter().map(|v| (v, ())))
    }

    /// Removes and returns some value, `None` if the set is empty (Python's `pop`, which
    /// raises `KeyError` then).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.set([7u8]).unwrap();
    /// assert_eq!(s.pop().unwrap(), Some(7));
    /// assert_eq!(s.pop().unwrap(), None);
    /// ```
    pub fn pop(&self) -> Result<Option<T>> {
        Ok(self.dict.popitem()?.map(|(v, ())| v))
    }

    /// Removes every value.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.set([1u8, 2]).unwrap();
    /// s.clear().unwrap();
    /// assert!(s.is_empty().unwrap());
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.dict.clear()
    }

    /// The values, in the order they were added (a snapshot).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.set([3u8, 1, 3]).unwrap().to_vec().unwrap(), vec![3, 1]);
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.dict.keys()
    }
}

impl<T: Serialize + DeserializeOwned + Eq + Hash> SetProxy<T> {
    /// A copy of the whole set (Python's `s.copy()`, `set(s)`): the set algebra then is
    /// [`HashSet`]'s.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let s = m.set(['a', 'b', 'c']).unwrap();
    /// let other = std::collections::HashSet::from(['b', 'c', 'd']);
    /// assert_eq!(s.to_set().unwrap().intersection(&other).count(), 2);
    /// ```
    #[doc(alias = "copy")]
    pub fn to_set(&self) -> Result<HashSet<T>> {
        Ok(self.to_vec()?.into_iter().collect())
    }
}

impl Manager {
    /// A new shared set holding `values` (Python 3.14's `manager.set(iterable)`).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let s = m.set(["a", "b", "a"].map(String::from)).unwrap();
    /// assert_eq!(s.len().unwrap(), 2);
    /// ```
    pub fn set<T, I>(&self, values: I) -> Result<SetProxy<T>>
    where
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        Ok(SetProxy {
            dict: self.dict_from(values.into_iter().map(|v| (v, ())))?,
        })
    }
}
