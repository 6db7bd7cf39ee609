//! A fixed-length array kept by the server (Python's `manager.Array(typecode, seq)`). The
//! server keeps it as a list; this proxy offers only what keeps its length.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::view_proxy;
use crate::manager::{ListIndex, ListProxy, Manager};
use crate::{Error, Result};

view_proxy! {
    /// A fixed-length array kept by a manager (Python's `manager.Array(typecode, seq)`): read
    /// and write values by position (negative: from the end) or by range, from any process.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::manager::ArrayProxy;
    /// fn square_all(a: ArrayProxy<i64>) {
    ///     for i in 0..a.len().unwrap() {
    ///         let v = a.get(i).unwrap();
    ///         a.set(i, v * v).unwrap();
    ///     }
    /// }
    /// let m = multiproc::Manager::start().unwrap();
    /// let a = m.array(vec![1i64, 2, 3]).unwrap();
    /// multiproc::spawn(square_all, a.clone()).unwrap().join().unwrap();
    /// assert_eq!(a.to_vec().unwrap(), vec![1, 4, 9]);
    /// ```
    #[doc(alias = "Array")]
    ArrayProxy<T> { list: ListProxy<T> },
    List
}

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The value at `index` (negative: from the end); out of range →
    /// [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let a = m.array(vec![1u8, 2]).unwrap();
    /// assert_eq!(a.get(-1).unwrap(), 2);
    /// assert!(a.get(2).is_err());
    /// ```
    #[doc(alias = "__getitem__")]
    pub fn get(&self, index: impl ListIndex) -> Result<T> {
        self.list.get(index)
    }

    /// Replaces the value at `index` (negative: from the end).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let a = m.array(vec![0u8; 2]).unwrap();
    /// a.set(1, 7).unwrap();
    /// assert_eq!(a.to_vec().unwrap(), vec![0, 7]);
    /// ```
    #[doc(alias = "__setitem__")]
    pub fn set(&self, index: impl ListIndex, value: T) -> Result<()> {
        self.list.set(index, value)
    }

    /// The number of values (fixed at creation).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.array(vec![0u8; 4]).unwrap().len().unwrap(), 4);
    /// ```
    #[doc(alias = "__len__")]
    pub fn len(&self) -> Result<usize> {
        self.list.len()
    }

    /// Whether it has no values.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert!(m.array(Vec::<u8>::new()).unwrap().is_empty().unwrap());
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        self.list.is_empty()
    }

    /// A copy of every value (`a[:]`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// assert_eq!(m.array(vec![1u8, 2]).unwrap().to_vec().unwrap(), vec![1, 2]);
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.list.to_vec()
    }

    /// The values in `range`, clamped to the array (`a[i:j]`).
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let a = m.array(vec![1u8, 2, 3]).unwrap();
    /// assert_eq!(a.get_range(1..).unwrap(), vec![2, 3]);
    /// ```
    #[doc(alias = "__getitem__")]
    pub fn get_range(&self, range: impl std::ops::RangeBounds<usize>) -> Result<Vec<T>> {
        self.list.get_range(range)
    }

    /// Writes `values` from position `start` on, atomically (`a[start:start + n] =
    /// values`). They must fit: past the end → [`Error::IndexOutOfRange`] (for the first
    /// position past the end), and nothing is written.
    ///
    /// ```
    /// # multiproc::init();
    /// # let m = multiproc::Manager::start().unwrap();
    /// let a = m.array(vec![0u8; 4]).unwrap();
    /// a.set_range(1, vec![5, 6]).unwrap();
    /// assert_eq!(a.to_vec().unwrap(), vec![0, 5, 6, 0]);
    /// assert!(a.set_range(3, vec![1, 2]).is_err());
    /// ```
    #[doc(alias = "__setitem__")]
    pub fn set_range(&self, start: usize, values: Vec<T>) -> Result<()> {
        let len = self.len()?;
        let end = start.saturating_add(values.len());
        if end > len {
            // The first position past the end that would be written.
            return Err(Error::index_out_of_range(start.max(len), len));
        }
        self.list.set_range(start..end, values)
    }
}

impl Manager {
    /// A new fixed-length array holding `values` (Python's `manager.Array(typecode,
    /// sequence)`; the element type takes the place of the typecode).
    ///
    /// ```
    /// multiproc::init();
    /// let m = multiproc::Manager::start().unwrap();
    /// let a = m.array([1.5f64, 2.5]).unwrap();
    /// assert_eq!(a.get(1).unwrap(), 2.5);
    /// ```
    #[doc(alias = "Array")]
    pub fn array<T, I>(&self, values: I) -> Result<ArrayProxy<T>>
    where
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        Ok(ArrayProxy {
            list: self.list(values)?,
        })
    }
}
