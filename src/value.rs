//! Numbers and arrays of numbers in shared memory: [`Value`], [`Array`] (each with its own
//! [`Lock`]), [`RawValue`], [`RawArray`] (no lock), like Python's
//! `multiprocessing.Value`/`Array`/`RawValue`/`RawArray`.
//!
//! The element type is one of Python's typecode types, the [`Number`]s: `i8`…`i64`,
//! `u8`…`u64`, `f32`, `f64`, `bool`. Every read and write of an element is one atomic load
//! or store, so processes racing on a [`RawValue`] lose updates (the seeds' lesson) without
//! undefined behaviour; the lock of a [`Value`] is what makes a read-modify-write whole.
//!
//! ```
//! multiproc::init();
//! use multiproc::{Array, Value};
//!
//! fn square_list((list, result, sum): (Vec<i32>, Array<i32>, Value<i32>)) {
//!     for (i, n) in list.iter().enumerate() {
//!         result.set(i, n * n);
//!     }
//!     sum.set(result.to_vec().iter().sum());
//! }
//! let result = Array::<i32>::new(4).unwrap();
//! let sum = Value::new(0i32).unwrap();
//! let h = multiproc::spawn(square_list, (vec![1, 2, 3, 4], result.clone(), sum.clone())).unwrap();
//! h.join().unwrap();
//! assert_eq!(sum.get(), 30);
//! assert_eq!(result.to_vec(), vec![1, 4, 9, 16]);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ipc::segment::{Kind, SegRef, Segment};
use crate::sync::kinds;
use crate::sync::raw::{Acquired, MUTEX_SIZE};
use crate::sync::{Lock, LockResult, OwnerDiedError};
use crate::{codec, Error, Result};

mod private {
    pub trait Sealed {}
}

/// A number type that can live in shared memory: the types of Python's typecodes
/// (`b B h H i I q Q f d ?`). Sealed: implemented for `i8`, `u8`, `i16`, `u16`, `i32`,
/// `u32`, `i64`, `u64`, `f32`, `f64` and `bool`.
///
/// ```
/// use multiproc::value::Number;
/// assert_eq!(<i32 as Number>::TYPECODE, 'i');
/// assert_eq!(<f64 as Number>::TYPECODE, 'd');
/// ```
pub trait Number:
    Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static + private::Sealed
{
    /// Python's typecode for this type.
    const TYPECODE: char;
    #[doc(hidden)]
    const WIDTH: usize;
    #[doc(hidden)]
    fn to_bits(self) -> u64;
    #[doc(hidden)]
    fn from_bits(bits: u64) -> Self;
}

macro_rules! int_number {
    ($($t:ty, $u:ty, $code:literal);* $(;)?) => {$(
        impl private::Sealed for $t {}
        impl Number for $t {
            const TYPECODE: char = $code;
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn to_bits(self) -> u64 {
                self as $u as u64
            }
            #[inline]
            fn from_bits(bits: u64) -> Self {
                bits as $u as $t
            }
        }
    )*};
}

int_number! {
    i8, u8, 'b'; u8, u8, 'B'; i16, u16, 'h'; u16, u16, 'H';
    i32, u32, 'i'; u32, u32, 'I'; i64, u64, 'q'; u64, u64, 'Q';
}

impl private::Sealed for f32 {}
impl Number for f32 {
    const TYPECODE: char = 'f';
    const WIDTH: usize = 4;
    #[inline]
    fn to_bits(self) -> u64 {
        f32::to_bits(self) as u64
    }
    #[inline]
    fn from_bits(bits: u64) -> Self {
        f32::from_bits(bits as u32)
    }
}

impl private::Sealed for f64 {}
impl Number for f64 {
    const TYPECODE: char = 'd';
    const WIDTH: usize = 8;
    #[inline]
    fn to_bits(self) -> u64 {
        f64::to_bits(self)
    }
    #[inline]
    fn from_bits(bits: u64) -> Self {
        f64::from_bits(bits)
    }
}

/// A [`Number`] whose every bit pattern is a valid value: all of them but `bool`
/// (`i8`…`i64`, `u8`…`u64`, `f32`, `f64`). Only these can be seen in place in memory that
/// other processes write (the `ndarray` feature's views of a [`RawArray`] or a
/// [`SharedMemory`](crate::shared_memory::SharedMemory) block): whatever bytes another
/// process stores, they read as some number. Sealed.
///
/// ```
/// fn in_place<T: multiproc::value::Plain>() {}
/// in_place::<f64>();
/// in_place::<u8>();
/// ```
pub trait Plain: Number + crate::sys::plain::Plain {}

macro_rules! plain_number {
    ($($t:ty),*) => { $(impl Plain for $t {})* };
}
plain_number!(i8, u8, i16, u16, i32, u32, i64, u64, f32, f64);

impl private::Sealed for bool {}
impl Number for bool {
    const TYPECODE: char = '?';
    const WIDTH: usize = 1;
    #[inline]
    fn to_bits(self) -> u64 {
        self as u64
    }
    #[inline]
    fn from_bits(bits: u64) -> Self {
        bits != 0
    }
}

#[inline]
fn load<T: Number>(seg: &Segment, off: usize) -> T {
    let b = match T::WIDTH {
        1 => seg.atomic::<AtomicU8>(off).load(Ordering::Relaxed) as u64,
        2 => seg.atomic::<AtomicU16>(off).load(Ordering::Relaxed) as u64,
        4 => seg.atomic::<AtomicU32>(off).load(Ordering::Relaxed) as u64,
        _ => seg.atomic::<AtomicU64>(off).load(Ordering::Relaxed),
    };
    T::from_bits(b)
}

#[inline]
fn store<T: Number>(seg: &Segment, off: usize, v: T) {
    let b = v.to_bits();
    match T::WIDTH {
        1 => seg
            .atomic::<AtomicU8>(off)
            .store(b as u8, Ordering::Relaxed),
        2 => seg
            .atomic::<AtomicU16>(off)
            .store(b as u16, Ordering::Relaxed),
        4 => seg
            .atomic::<AtomicU32>(off)
            .store(b as u32, Ordering::Relaxed),
        _ => seg.atomic::<AtomicU64>(off).store(b, Ordering::Relaxed),
    }
}

fn tag<T: Number>() -> u32 {
    T::TYPECODE as u32
}

/// Maps a received segment of `kind` and checks that it holds `T`s with the layout
/// `data_len(len)`, where `len` is read at `len_off` (or 1 if `None`).
fn decode_seg<'de, D: Deserializer<'de>, T: Number>(
    d: D,
    kind: Kind,
    tag_off: usize,
    len_off: Option<usize>,
    data_len: fn(usize) -> usize,
) -> std::result::Result<(Arc<Segment>, usize), D::Error> {
    let seg = Segment::deserialize_handle(d, kind)?;
    check_seg::<T>(seg, kind, tag_off, len_off, data_len).map_err(serde::de::Error::custom)
}

/// Checks a received segment: its element type and its length.
fn check_seg<T: Number>(
    seg: Arc<Segment>,
    kind: Kind,
    tag_off: usize,
    len_off: Option<usize>,
    data_len: fn(usize) -> usize,
) -> std::result::Result<(Arc<Segment>, usize), String> {
    let bad = |m: &str| format!("received {}: {m}", kind_name(kind));
    if seg.data_len() < tag_off + 4 || seg.u32(tag_off).load(Ordering::Relaxed) != tag::<T>() {
        return Err(bad("element type differs"));
    }
    let len = match len_off {
        Some(o) => {
            usize::try_from(seg.u64(o).load(Ordering::Relaxed)).map_err(|_| bad("length"))?
        }
        None => 1,
    };
    if len
        .checked_mul(T::WIDTH)
        .map(|_| data_len(len) != seg.data_len())
        .unwrap_or(true)
    {
        return Err(bad("length does not match the segment"));
    }
    Ok((seg, len))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        kinds::VALUE => "Value",
        kinds::ARRAY => "Array",
        kinds::RAW_VALUE => "RawValue",
        _ => "RawArray",
    }
}

// --- Value --------------------------------------------------------------------------------

const V_TAG: usize = MUTEX_SIZE;
const V_DATA: usize = MUTEX_SIZE + 8;

/// A number in shared memory with its own [`Lock`], like Python's
/// `multiprocessing.Value(typecode, v)`.
///
/// [`get`](Value::get) and [`set`](Value::set) are each atomic. A read-modify-write must
/// hold the lock: through the guard of [`lock`](Value::lock), or
/// [`get_lock`](Value::get_lock) around `get`/`set` (which then do not take the lock
/// again when this process holds it, as Python's re-entrant lock would allow).
///
/// ```
/// let balance = multiproc::Value::new(100i32).unwrap();
/// *balance.lock().unwrap() -= 1;
/// assert_eq!(balance.get(), 99);
/// {
///     let _g = balance.get_lock().lock().unwrap();
///     balance.set(balance.get() + 1);
/// }
/// assert_eq!(balance.get(), 100);
/// ```
pub struct Value<T: Number> {
    seg: Arc<Segment>,
    lock: Lock,
    _t: PhantomData<T>,
}

impl<T: Number> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            seg: self.seg.clone(),
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Number> Value<T> {
    /// A shared number holding `v`.
    ///
    /// ```
    /// let v = multiproc::Value::new(2.5f64).unwrap();
    /// assert_eq!(v.get(), 2.5);
    /// ```
    pub fn new(v: T) -> Result<Value<T>> {
        let seg = Segment::new(kinds::VALUE, V_DATA + 8)?;
        seg.u32(V_TAG).store(tag::<T>(), Ordering::Relaxed);
        store(&seg, V_DATA, v);
        Ok(Value::from_seg(seg, None))
    }

    /// A shared number holding `v`, guarded by an existing `lock` instead of a lock of its
    /// own (Python's `Value(typecode, v, lock=lock)`): several values (and arrays) under
    /// one lock change together.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::{Lock, Value};
    /// fn transfer((from, to): (Value<i64>, Value<i64>)) {
    ///     let _g = from.get_lock().lock().unwrap(); // the one lock of both
    ///     from.set(from.get() - 30);
    ///     to.set(to.get() + 30);
    /// }
    /// let lock = Lock::new().unwrap();
    /// let a = Value::with_lock(100i64, lock.clone()).unwrap();
    /// let b = Value::with_lock(0i64, lock.clone()).unwrap();
    /// multiproc::spawn(transfer, (a.clone(), b.clone())).unwrap().join().unwrap();
    /// let _g = lock.lock().unwrap();
    /// assert_eq!(a.get() + b.get(), 100);
    /// ```
    pub fn with_lock(v: T, lock: Lock) -> Result<Value<T>> {
        let seg = Segment::new(kinds::VALUE, V_DATA + 8)?;
        seg.u32(V_TAG).store(tag::<T>(), Ordering::Relaxed);
        store(&seg, V_DATA, v);
        Ok(Value::from_seg(seg, Some(lock)))
    }

    /// `lock`: a shared lock; `None`: the one in the segment.
    fn from_seg(seg: Arc<Segment>, lock: Option<Lock>) -> Value<T> {
        Value {
            lock: lock.unwrap_or_else(|| Lock::in_segment(seg.clone(), 0)),
            seg,
            _t: PhantomData,
        }
    }

    fn locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let m = self.lock.raw();
        if m.held_here() {
            return f();
        }
        // A holder that died cannot have left a half-written number: writes are single
        // atomic stores. So a take-over is as good as a clean acquisition here.
        m.lock(None);
        let r = f();
        m.unlock();
        r
    }

    /// The current value (read under the lock, unless this thread holds it already).
    ///
    /// It cannot fail: a lock whose holder died is taken over without an
    /// [`Error::OwnerDied`] (the number is written by one atomic store, so the dead holder
    /// cannot have left it half-written); the same holds for
    /// [`set`](Value::set). [`lock`](Value::lock) reports such a death.
    ///
    /// ```
    /// assert_eq!(multiproc::Value::new(7u8).unwrap().get(), 7);
    /// ```
    pub fn get(&self) -> T {
        self.locked(|| load(&self.seg, V_DATA))
    }

    /// Stores `v` (under the lock, unless this thread holds it already: another thread of
    /// this process waits for the holder like any other process).
    ///
    /// ```
    /// let v = multiproc::Value::new(0i64).unwrap();
    /// v.set(-5);
    /// assert_eq!(v.get(), -5);
    /// ```
    pub fn set(&self, v: T) {
        self.locked(|| store(&self.seg, V_DATA, v))
    }

    /// Takes the lock and returns a guard through which the value is read and written;
    /// the new value is stored when the guard drops, then the lock is released.
    ///
    /// Taking it while this thread holds [`get_lock`](Value::get_lock) deadlocks. While
    /// the guard lives, [`get`](Value::get) in this thread reads the stored value, not the
    /// guard's pending one.
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] if the previous holder died holding the lock (the number itself
    /// cannot be half written, but a computation that spans several values may be); the
    /// lock is then released again. [`lock_recoverable`](Value::lock_recoverable) hands
    /// over the guard instead.
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32).unwrap();
    /// *v.lock().unwrap() += 41;
    /// assert_eq!(v.get(), 42);
    /// ```
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        Ok(self.lock_recoverable()?)
    }

    /// As [`lock`](Value::lock), but a previous holder that died gives an
    /// [`OwnerDiedError`] holding the guard (the lock held), as
    /// [`Lock::lock_recoverable`] does; `?` turns it into [`Error::OwnerDied`] and
    /// releases the lock.
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32).unwrap();
    /// *v.lock_recoverable().unwrap_or_else(|died| died.into_inner()) += 1;
    /// assert_eq!(v.get(), 2);
    /// ```
    pub fn lock_recoverable(&self) -> LockResult<ValueGuard<'_, T>> {
        let died = self.lock.raw().lock(None) == Acquired::OwnerDied;
        let guard = ValueGuard {
            val: load(&self.seg, V_DATA),
            v: self,
            dirty: false,
        };
        if died {
            Err(OwnerDiedError::new(guard))
        } else {
            Ok(guard)
        }
    }

    /// The value's lock.
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32).unwrap();
    /// let lock = v.get_lock();
    /// lock.acquire().unwrap();
    /// v.set(v.get() * 2);
    /// lock.release().unwrap();
    /// assert_eq!(v.get(), 2);
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }
}

impl<T: Number> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({:?})", load::<T>(&self.seg, V_DATA))
    }
}

impl<T: Number> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_locked(&self.seg, &self.lock, s)
    }
}

impl<'de, T: Number> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (seg, lock) = deserialize_locked(d, kinds::VALUE)?;
        let (seg, _) = check_seg::<T>(seg, kinds::VALUE, V_TAG, None, |_| V_DATA + 8)
            .map_err(serde::de::Error::custom)?;
        Ok(Value::from_seg(seg, lock))
    }
}

/// A `Value`'s or `Array`'s wire form: its segment, and the lock it shares if it has no
/// lock of its own.
fn serialize_locked<S: Serializer>(
    seg: &Arc<Segment>,
    lock: &Lock,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let shared = (!lock.lives_in(seg)).then_some(lock);
    (SegRef(seg), shared).serialize(s)
}

fn deserialize_locked<'de, D: Deserializer<'de>>(
    d: D,
    kind: Kind,
) -> std::result::Result<(Arc<Segment>, Option<Lock>), D::Error> {
    let ((fd, len), lock) = <((codec::FdOwned, u64), Option<Lock>)>::deserialize(d)?;
    let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
    let seg = Segment::from_fd(fd.0, kind, len).map_err(serde::de::Error::custom)?;
    Ok((seg, lock))
}

/// The lock of a [`Value`], held, with the value to read and write. Made by
/// [`Value::lock`]; stores the value and releases the lock when dropped.
///
/// ```
/// let v = multiproc::Value::new(10i32).unwrap();
/// let mut g = v.lock().unwrap();
/// *g *= 3;
/// drop(g);
/// assert_eq!(v.get(), 30);
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct ValueGuard<'a, T: Number> {
    v: &'a Value<T>,
    val: T,
    dirty: bool,
}

impl<T: Number> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.val
    }
}

impl<T: Number> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.dirty = true;
        &mut self.val
    }
}

impl<T: Number> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        if self.dirty {
            store(&self.v.seg, V_DATA, self.val);
        }
        self.v.lock.raw().unlock();
    }
}

impl<T: Number> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueGuard({:?})", self.val)
    }
}

// --- Array --------------------------------------------------------------------------------

const A_TAG: usize = MUTEX_SIZE;
const A_LEN: usize = MUTEX_SIZE + 8;
const A_DATA: usize = MUTEX_SIZE + 16;

fn array_data_len<T: Number>(len: usize) -> usize {
    A_DATA + len * T::WIDTH
}

/// The bounds check of [`Array`] and [`RawArray`]'s `get` and `set`: the panic of slice
/// indexing, with its message.
#[inline]
#[track_caller]
fn check_index(i: usize, len: usize) {
    if i >= len {
        panic!("index out of bounds: the len is {len} but the index is {i}");
    }
}

fn check_len<T: Number>(len: usize) -> Result<()> {
    if len
        .checked_mul(T::WIDTH)
        .is_none_or(|b| b > isize::MAX as usize / 2)
    {
        return Err(Error::invalid("array too large"));
    }
    Ok(())
}

/// A fixed-length array of numbers in shared memory with its own [`Lock`], like Python's
/// `multiprocessing.Array(typecode, n)`.
///
/// [`get`](Array::get), [`set`](Array::set) and [`to_vec`](Array::to_vec) each hold the
/// lock (unless this thread holds it already). [`lock`](Array::lock) gives a guard that
/// derefs to `[T]`: it copies the elements in when taken and back when dropped (if
/// changed), so it costs O(len).
///
/// ```
/// let a = multiproc::Array::from_slice(&[1i32, 2, 3]).unwrap();
/// a.set(0, 10);
/// a.lock().unwrap()[2] = 30;
/// assert_eq!(a.to_vec(), vec![10, 2, 30]);
/// assert_eq!(a.len(), 3);
/// ```
pub struct Array<T: Number> {
    seg: Arc<Segment>,
    lock: Lock,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Number> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            seg: self.seg.clone(),
            lock: self.lock.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Number> Array<T> {
    /// An array of `len` zeros.
    ///
    /// ```
    /// let a = multiproc::Array::<f64>::new(3).unwrap();
    /// assert_eq!(a.to_vec(), vec![0.0; 3]);
    /// ```
    pub fn new(len: usize) -> Result<Array<T>> {
        check_len::<T>(len)?;
        let seg = Segment::new(kinds::ARRAY, array_data_len::<T>(len))?;
        seg.u32(A_TAG).store(tag::<T>(), Ordering::Relaxed);
        seg.u64(A_LEN).store(len as u64, Ordering::Relaxed);
        Ok(Array::from_seg(seg, len, None))
    }

    /// An array holding a copy of `items`.
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(&[true, false]).unwrap();
    /// assert!(a.get(0));
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let a = Array::new(items.len())?;
        for (i, &v) in items.iter().enumerate() {
            store(&a.seg, A_DATA + i * T::WIDTH, v);
        }
        Ok(a)
    }

    /// An array holding a copy of `items`, guarded by an existing `lock` instead of a lock
    /// of its own (Python's `Array(typecode, items, lock=lock)`).
    ///
    /// ```
    /// use multiproc::{Array, Lock, Value};
    /// let lock = Lock::new().unwrap();
    /// let total = Value::with_lock(0u32, lock.clone()).unwrap();
    /// let parts = Array::with_lock(&[0u32; 3], lock.clone()).unwrap();
    /// {
    ///     let _g = lock.lock().unwrap(); // both change together
    ///     parts.set(1, 5);
    ///     total.set(total.get() + 5);
    /// }
    /// assert_eq!(parts.to_vec().iter().sum::<u32>(), total.get());
    /// ```
    pub fn with_lock(items: &[T], lock: Lock) -> Result<Array<T>> {
        check_len::<T>(items.len())?;
        let seg = Segment::new(kinds::ARRAY, array_data_len::<T>(items.len()))?;
        seg.u32(A_TAG).store(tag::<T>(), Ordering::Relaxed);
        seg.u64(A_LEN).store(items.len() as u64, Ordering::Relaxed);
        for (i, &v) in items.iter().enumerate() {
            store(&seg, A_DATA + i * T::WIDTH, v);
        }
        Ok(Array::from_seg(seg, items.len(), Some(lock)))
    }

    /// `lock`: a shared lock; `None`: the one in the segment.
    fn from_seg(seg: Arc<Segment>, len: usize, lock: Option<Lock>) -> Array<T> {
        Array {
            lock: lock.unwrap_or_else(|| Lock::in_segment(seg.clone(), 0)),
            seg,
            len,
            _t: PhantomData,
        }
    }

    fn locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let m = self.lock.raw();
        if m.held_here() {
            return f();
        }
        m.lock(None);
        let r = f();
        m.unlock();
        r
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(multiproc::Array::<u8>::new(5).unwrap().len(), 5);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it empty?
    ///
    /// ```
    /// assert!(multiproc::Array::<u8>::new(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`, read under the lock (Python's `a[i]`). An element cannot be lent out
    /// as `&T` while other processes may write it, so there is no `Index`: this returns
    /// a copy, and indexing works on the guard of [`lock`](Array::lock).
    ///
    /// # Panics
    ///
    /// If `i >= len()`, like slice indexing (the length is fixed at creation, so this is
    /// a bug of the caller, never the doing of another process).
    /// [`try_get`](Array::try_get) is the form that returns `None` instead.
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(&[4u16, 5]).unwrap();
    /// assert_eq!(a.get(1), 5);
    /// ```
    #[doc(alias = "__getitem__")]
    #[track_caller]
    pub fn get(&self, i: usize) -> T {
        check_index(i, self.len);
        self.locked(|| load(&self.seg, A_DATA + i * T::WIDTH))
    }

    /// Element `i`, read under the lock; `None` if `i >= len()`, like [`slice::get`]
    /// (the form of [`get`](Array::get) that does not panic).
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(&[4u16, 5]).unwrap();
    /// assert_eq!(a.try_get(1), Some(5));
    /// assert_eq!(a.try_get(2), None);
    /// ```
    pub fn try_get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| self.locked(|| load(&self.seg, A_DATA + i * T::WIDTH)))
    }

    /// Stores `v` at `i`, under the lock (Python's `a[i] = v`).
    ///
    /// # Panics
    ///
    /// If `i >= len()`, like slice indexing.
    ///
    /// ```
    /// let a = multiproc::Array::<i8>::new(2).unwrap();
    /// a.set(1, -1);
    /// assert_eq!(a.to_vec(), vec![0, -1]);
    /// ```
    #[track_caller]
    pub fn set(&self, i: usize, v: T) {
        check_index(i, self.len);
        self.locked(|| store(&self.seg, A_DATA + i * T::WIDTH, v))
    }

    /// A copy of all elements, taken under the lock.
    ///
    /// ```
    /// assert_eq!(multiproc::Array::from_slice(&[1u64, 2]).unwrap().to_vec(), vec![1, 2]);
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.locked(|| read_all(&self.seg, A_DATA, self.len))
    }

    /// Takes the lock; the guard derefs to the elements (a copy, stored back on drop if
    /// changed).
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`] if the previous holder died holding the lock (perhaps while
    /// storing its changes back); the lock is then released again.
    /// [`lock_recoverable`](Array::lock_recoverable) hands over the guard instead.
    ///
    /// ```
    /// let a = multiproc::Array::<i32>::new(3).unwrap();
    /// {
    ///     let mut g = a.lock().unwrap();
    ///     g[0] = 1;
    ///     g.iter_mut().for_each(|x| *x += 1);
    /// }
    /// assert_eq!(a.to_vec(), vec![2, 1, 1]);
    /// ```
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        Ok(self.lock_recoverable()?)
    }

    /// As [`lock`](Array::lock), but a previous holder that died gives an
    /// [`OwnerDiedError`] holding the guard (the lock held), as
    /// [`Lock::lock_recoverable`] does.
    ///
    /// ```
    /// let a = multiproc::Array::<i32>::new(2).unwrap();
    /// a.lock_recoverable().unwrap_or_else(|died| died.into_inner())[1] = 7;
    /// assert_eq!(a.to_vec(), vec![0, 7]);
    /// ```
    pub fn lock_recoverable(&self) -> LockResult<ArrayGuard<'_, T>> {
        let died = self.lock.raw().lock(None) == Acquired::OwnerDied;
        let guard = ArrayGuard {
            items: read_all(&self.seg, A_DATA, self.len),
            a: self,
            dirty: false,
        };
        if died {
            Err(OwnerDiedError::new(guard))
        } else {
            Ok(guard)
        }
    }

    /// The array's lock.
    ///
    /// ```
    /// let a = multiproc::Array::<i32>::new(1).unwrap();
    /// let _g = a.get_lock().lock().unwrap();
    /// a.set(0, 1); // this process holds the lock: not taken again
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }
}

fn read_all<T: Number>(seg: &Segment, data: usize, len: usize) -> Vec<T> {
    (0..len).map(|i| load(seg, data + i * T::WIDTH)).collect()
}

impl<T: Number> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Array")
            .field(&read_all::<T>(&self.seg, A_DATA, self.len))
            .finish()
    }
}

impl<T: Number> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_locked(&self.seg, &self.lock, s)
    }
}

impl<'de, T: Number> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (seg, lock) = deserialize_locked(d, kinds::ARRAY)?;
        let (seg, len) = check_seg::<T>(seg, kinds::ARRAY, A_TAG, Some(A_LEN), array_data_len::<T>)
            .map_err(serde::de::Error::custom)?;
        Ok(Array::from_seg(seg, len, lock))
    }
}

/// The lock of an [`Array`], held, with a copy of its elements to read and write. Made by
/// [`Array::lock`]; stores changed elements and releases the lock when dropped.
///
/// ```
/// let a = multiproc::Array::from_slice(&[3u8, 1, 2]).unwrap();
/// a.lock().unwrap().sort();
/// assert_eq!(a.to_vec(), vec![1, 2, 3]);
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct ArrayGuard<'a, T: Number> {
    a: &'a Array<T>,
    items: Vec<T>,
    dirty: bool,
}

impl<T: Number> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T: Number> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.dirty = true;
        &mut self.items
    }
}

impl<T: Number> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        if self.dirty {
            for (i, &v) in self.items.iter().enumerate() {
                store(&self.a.seg, A_DATA + i * T::WIDTH, v);
            }
        }
        self.a.lock.raw().unlock();
    }
}

impl<T: Number> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&self.items).finish()
    }
}

// --- RawValue -----------------------------------------------------------------------------

const RV_TAG: usize = 0;
const RV_DATA: usize = 8;

/// A number in shared memory without a lock, like Python's `multiprocessing.RawValue`.
///
/// Each [`get`](RawValue::get) and [`set`](RawValue::set) is atomic, but
/// `r.set(r.get() + 1)` from two processes loses updates: that is the race the seeds
/// demonstrate (safely: no undefined behaviour). Guard it with a [`Lock`] to fix it.
///
/// ```
/// let r = multiproc::RawValue::new(0i32).unwrap();
/// r.set(r.get() + 1);
/// assert_eq!(r.get(), 1);
/// ```
pub struct RawValue<T: Number> {
    seg: Arc<Segment>,
    _t: PhantomData<T>,
}

impl<T: Number> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            seg: self.seg.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Number> RawValue<T> {
    /// A shared number holding `v`.
    ///
    /// ```
    /// assert_eq!(multiproc::RawValue::new(3u16).unwrap().get(), 3);
    /// ```
    pub fn new(v: T) -> Result<RawValue<T>> {
        let seg = Segment::new(kinds::RAW_VALUE, RV_DATA + 8)?;
        seg.u32(RV_TAG).store(tag::<T>(), Ordering::Relaxed);
        store(&seg, RV_DATA, v);
        Ok(RawValue {
            seg,
            _t: PhantomData,
        })
    }

    /// The current value (one atomic load).
    ///
    /// ```
    /// assert!(multiproc::RawValue::new(true).unwrap().get());
    /// ```
    #[inline]
    pub fn get(&self) -> T {
        load(&self.seg, RV_DATA)
    }

    /// Stores `v` (one atomic store).
    ///
    /// ```
    /// let r = multiproc::RawValue::new(0.0f32).unwrap();
    /// r.set(1.5);
    /// assert_eq!(r.get(), 1.5);
    /// ```
    #[inline]
    pub fn set(&self, v: T) {
        store(&self.seg, RV_DATA, v)
    }
}

impl<T: Number> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue({:?})", self.get())
    }
}

impl<T: Number> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.seg.serialize_handle(s)
    }
}

impl<'de, T: Number> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (seg, _) = decode_seg::<D, T>(d, kinds::RAW_VALUE, RV_TAG, None, |_| RV_DATA + 8)?;
        Ok(RawValue {
            seg,
            _t: PhantomData,
        })
    }
}

// --- RawArray -----------------------------------------------------------------------------

const RA_TAG: usize = 0;
const RA_LEN: usize = 8;
const RA_DATA: usize = 16;

fn raw_array_data_len<T: Number>(len: usize) -> usize {
    RA_DATA + len * T::WIDTH
}

/// A fixed-length array of numbers in shared memory without a lock, like Python's
/// `multiprocessing.RawArray`. Each element access is one atomic load or store.
///
/// ```
/// let a = multiproc::RawArray::from_slice(&[1.0f64, 2.0]).unwrap();
/// a.set(1, a.get(0) + a.get(1));
/// assert_eq!(a.to_vec(), vec![1.0, 3.0]);
/// ```
pub struct RawArray<T: Number> {
    seg: Arc<Segment>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Number> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            seg: self.seg.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Number> RawArray<T> {
    /// An array of `len` zeros.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<i64>::new(2).unwrap().to_vec(), vec![0, 0]);
    /// ```
    pub fn new(len: usize) -> Result<RawArray<T>> {
        check_len::<T>(len)?;
        let seg = Segment::new(kinds::RAW_ARRAY, raw_array_data_len::<T>(len))?;
        seg.u32(RA_TAG).store(tag::<T>(), Ordering::Relaxed);
        seg.u64(RA_LEN).store(len as u64, Ordering::Relaxed);
        Ok(RawArray {
            seg,
            len,
            _t: PhantomData,
        })
    }

    /// An array holding a copy of `items`.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::from_slice(&[7u32]).unwrap().get(0), 7);
    /// ```
    pub fn from_slice(items: &[T]) -> Result<RawArray<T>> {
        let a = RawArray::new(items.len())?;
        for (i, &v) in items.iter().enumerate() {
            a.set(i, v);
        }
        Ok(a)
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<u8>::new(4).unwrap().len(), 4);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it empty?
    ///
    /// ```
    /// assert!(!multiproc::RawArray::<u8>::new(4).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i` (Python's `a[i]`), a copy: there is no `Index`, since an element cannot
    /// be lent out as `&T` while other processes may write it.
    ///
    /// # Panics
    ///
    /// If `i >= len()`, like slice indexing. [`try_get`](RawArray::try_get) is the form
    /// that returns `None` instead.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<u8>::new(4).unwrap().get(3), 0);
    /// ```
    #[inline]
    #[doc(alias = "__getitem__")]
    #[track_caller]
    pub fn get(&self, i: usize) -> T {
        check_index(i, self.len);
        load(&self.seg, RA_DATA + i * T::WIDTH)
    }

    /// Element `i`, or `None` if `i >= len()`, like [`slice::get`] (the form of
    /// [`get`](RawArray::get) that does not panic).
    ///
    /// ```
    /// let a = multiproc::RawArray::<u8>::new(4).unwrap();
    /// assert_eq!(a.try_get(3), Some(0));
    /// assert_eq!(a.try_get(4), None);
    /// ```
    #[inline]
    pub fn try_get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| load(&self.seg, RA_DATA + i * T::WIDTH))
    }

    /// Stores `v` at `i` (Python's `a[i] = v`).
    ///
    /// # Panics
    ///
    /// If `i >= len()`, like slice indexing.
    ///
    /// ```
    /// let a = multiproc::RawArray::<i16>::new(1).unwrap();
    /// a.set(0, -300);
    /// assert_eq!(a.get(0), -300);
    /// ```
    #[inline]
    #[track_caller]
    pub fn set(&self, i: usize, v: T) {
        check_index(i, self.len);
        store(&self.seg, RA_DATA + i * T::WIDTH, v)
    }

    /// A copy of all elements (not a snapshot: others may write meanwhile).
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::from_slice(&[1u8, 2]).unwrap().to_vec(), vec![1, 2]);
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        read_all(&self.seg, RA_DATA, self.len)
    }
}

/// With the `ndarray` feature: the whole array copied into an owned ndarray array, and the
/// address of its elements for the in-place views (`as_array_view`, `as_array_view_mut`,
/// in `sys::ndarray` since they are `unsafe`).
#[cfg(feature = "ndarray")]
impl<T: Plain> RawArray<T> {
    /// A copy of the elements as an ndarray array of `shape` (in row-major order, or
    /// column-major with `shape.f()`), whose element count must be [`len`](RawArray::len):
    /// Python's `np.frombuffer(raw_array, dtype).reshape(shape).copy()`. Each element is
    /// read with one atomic load, so this is safe whatever other processes do meanwhile
    /// (it is not a snapshot: elements written during the copy may be old or new). A shape
    /// of another size is an [`Error::InvalidOperation`].
    ///
    /// ```
    /// use multiproc::ndarray::array;
    /// let a = multiproc::RawArray::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    /// assert_eq!(a.to_ndarray((2, 3)).unwrap(), array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    /// assert!(a.to_ndarray((4, 4)).is_err());
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
    pub fn to_ndarray<D, Sh>(&self, shape: Sh) -> Result<ndarray::Array<T, D>>
    where
        D: ndarray::Dimension,
        Sh: Into<ndarray::StrideShape<D>>,
    {
        ndarray::Array::from_shape_vec(shape, self.to_vec()).map_err(|e| {
            Error::invalid(format!(
                "a RawArray of {} elements as an ndarray array: {e}",
                self.len
            ))
        })
    }

    /// The address of element 0 in this process.
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        self.seg.data_ptr(RA_DATA)
    }
}

impl<T: Number> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T: Number> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.seg.serialize_handle(s)
    }
}

impl<'de, T: Number> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (seg, len) = decode_seg::<D, T>(
            d,
            kinds::RAW_ARRAY,
            RA_TAG,
            Some(RA_LEN),
            raw_array_data_len::<T>,
        )?;
        Ok(RawArray {
            seg,
            len,
            _t: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn retype<A: Serialize, B: serde::de::DeserializeOwned>(a: &A) -> Result<B> {
        let mut buf = Vec::new();
        let fds = codec::encode_with_fds(a, &mut buf)?;
        codec::decode_with_fds(&buf, fds)
    }

    #[test]
    fn handles_roundtrip_and_check_their_type() {
        let v = Value::new(5i32).unwrap();
        let back: Value<i32> = retype(&v).unwrap();
        back.set(6);
        assert_eq!(v.get(), 6);
        assert!(matches!(retype::<_, Value<i64>>(&v), Err(Error::Codec(_))));
        assert!(matches!(retype::<_, Value<u32>>(&v), Err(Error::Codec(_))));
        assert!(matches!(
            retype::<_, RawValue<i32>>(&v),
            Err(Error::Codec(_))
        ));
        let a = Array::from_slice(&[1u16, 2, 3]).unwrap();
        let b: Array<u16> = retype(&a).unwrap();
        assert_eq!(b.to_vec(), vec![1, 2, 3]);
        assert!(matches!(retype::<_, Array<u32>>(&a), Err(Error::Codec(_))));
        let r = RawArray::from_slice(&[1.5f32]).unwrap();
        let s: RawArray<f32> = retype(&r).unwrap();
        assert_eq!(s.get(0), 1.5);
        // A Value's lock travels as a Lock.
        let l: Lock = retype(v.get_lock()).unwrap();
        l.acquire().unwrap();
        assert!(v.get_lock().is_locked());
        l.release().unwrap();
    }
}
