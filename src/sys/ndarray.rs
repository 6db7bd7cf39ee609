//! The `ndarray` feature's `unsafe` part: recognising an owned ndarray array inside a value
//! being encoded (so that the codec copies its elements with one `memcpy`), and views of
//! shared memory as ndarray arrays in place — the Rust form of Python's
//! `np.ndarray(shape, dtype, buffer=shm.buf)`.
//!
//! # The rule for the views
//!
//! The crate's rule for memory that other processes write (see `sys::linux::memfd`) is
//! that Rust code reads and writes it through atomics, or copies a range with plain loads
//! and stores only while the range is handed over to it by a protocol (a lock, a ring's
//! release/acquire pair). An ndarray view is plain `&[T]`/`&mut [T]` access to the
//! elements for as long as the view lives, so it can only be sound under such a hand-over,
//! and nothing in this process can check that another process keeps it: the views are
//! therefore `unsafe fn`s, whose contract (in each one's `# Safety`) is that hand-over.
//! The safe ways in are the copies: [`RawArray::to_ndarray`], [`RawArray::set`] and
//! [`SharedMemory::read_at`]/[`write_at`](SharedMemory::write_at).

use ndarray::{ArcArray, Array, ArrayView, ArrayViewMut, Dimension, ShapeError, StrideShape};

use super::plain::Plain;
use crate::shared_memory::SharedMemory;
use crate::value::{self, RawArray};
use crate::{Error, Result};

/// `v` as an owned array of `P`s with dimension `D`, if that is its type.
#[inline]
pub(crate) fn as_array<T: ?Sized, P: Plain, D: Dimension>(v: &T) -> Option<&Array<P, D>> {
    if typeid::of::<T>() != typeid::of::<Array<P, D>>() {
        return None;
    }
    // SAFETY: `Array<P, D>` has no lifetime parameter (`P` is a plain number; `D` is one of
    // ndarray's dimension types — `Dimension` is sealed — none of which has one), so `T`,
    // with the same type id once lifetimes are erased, is `Array<P, D>` itself: the cast
    // reads `v` at its own type, for the same borrow.
    Some(unsafe { &*(v as *const T).cast::<Array<P, D>>() })
}

/// `v` as a shared-ownership array of `P`s with dimension `D`, if that is its type.
#[inline]
pub(crate) fn as_arc_array<T: ?Sized, P: Plain, D: Dimension>(v: &T) -> Option<&ArcArray<P, D>> {
    if typeid::of::<T>() != typeid::of::<ArcArray<P, D>>() {
        return None;
    }
    // SAFETY: as in `as_array`: `ArcArray<P, D>` has no lifetime parameter either.
    Some(unsafe { &*(v as *const T).cast::<ArcArray<P, D>>() })
}

/// The element count of `shape`, and that `first + count` elements fit in `len`.
fn elements<D: Dimension>(shape: &StrideShape<D>, first: usize, len: usize) -> Result<usize> {
    let n = shape
        .raw_dim()
        .size_checked()
        .ok_or_else(|| Error::invalid("the shape's element count overflows"))?;
    match first.checked_add(n) {
        Some(end) if end <= len => Ok(n),
        _ => Err(Error::invalid(format!(
            "elements {first}..{} of a view are outside the {len} elements there",
            first.saturating_add(n)
        ))),
    }
}

fn shape_error(e: ShapeError) -> Error {
    Error::invalid(format!("cannot view shared memory in that shape: {e}"))
}

/// A view of `shape` from element `first` of the `len` `T`s that start at `base`: the first
/// element's address, the element count and the shape, checked to lie in the `len`
/// elements and to be aligned for `T`.
fn parts<T, D: Dimension, Sh: Into<StrideShape<D>>>(
    base: *mut u8,
    len: usize,
    first: usize,
    shape: Sh,
) -> Result<(*mut T, usize, StrideShape<D>)> {
    let shape = shape.into();
    let n = elements(&shape, first, len)?;
    let p = base.wrapping_add(first * std::mem::size_of::<T>());
    if !(p as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Error::invalid(format!(
            "element {first} is not aligned for {}",
            std::any::type_name::<T>()
        )));
    }
    Ok((p.cast::<T>(), n, shape))
}

impl<T: value::Plain> RawArray<T> {
    /// Elements `first..first + n` (`n` = the shape's element count) seen in place as an
    /// ndarray view of `shape` (row-major, or column-major with `shape.f()`): no copy.
    /// Python's `np.frombuffer(raw_array, dtype)[first:first + n].reshape(shape)`.
    ///
    /// An [`Error::InvalidOperation`] if the elements are not all in the array or the
    /// shape does not fit them.
    ///
    /// # Safety
    ///
    /// While the view lives, no process and no thread may write the elements it covers —
    /// not through [`set`](RawArray::set), another view, a clone of this array, nor any
    /// other way — and the writes before it must be ordered before it (the writers have
    /// finished and told this process so: a joined process, a `Pool::map` that returned, a
    /// message received, an [`Event`](crate::Event) or [`Barrier`](crate::Barrier) passed).
    /// A write during the view's life is a data race: undefined behaviour, not only stale
    /// numbers. For memory that is written while it is read, use
    /// [`get`](RawArray::get) or [`to_ndarray`](RawArray::to_ndarray), which read each
    /// element atomically.
    ///
    /// ```
    /// use multiproc::ndarray::array;
    /// let a = multiproc::RawArray::from_slice(&[1i32, 2, 3, 4, 5, 6, 7]).unwrap();
    /// // SAFETY: nothing else writes `a` while the view lives (no other process has it).
    /// let v = unsafe { a.as_array_view(1, (2, 3)) }.unwrap();
    /// assert_eq!(v, array![[2, 3, 4], [5, 6, 7]]);
    /// assert_eq!(v.sum(), 27);
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
    pub unsafe fn as_array_view<D, Sh>(
        &self,
        first: usize,
        shape: Sh,
    ) -> Result<ArrayView<'_, T, D>>
    where
        D: Dimension,
        Sh: Into<StrideShape<D>>,
    {
        let (p, n, shape) = parts::<T, D, Sh>(self.data_ptr(), self.len(), first, shape)?;
        // SAFETY: elements `first..first + n` lie inside the array's data (checked above),
        // which stays mapped while `self` is borrowed (the view borrows it); `p` is aligned
        // (checked) and non-null; every bit pattern is a `T` (`Plain`). Nobody writes them
        // while the slice lives: the caller's contract (see Safety).
        let s = unsafe { std::slice::from_raw_parts(p.cast_const(), n) };
        ArrayView::from_shape(shape, s).map_err(shape_error)
    }

    /// Elements `first..first + n` seen in place as a mutable ndarray view of `shape`, as
    /// [`as_array_view`](RawArray::as_array_view): what a process writes through it, every
    /// process holding the array sees. Typical use: pool workers each fill their own rows of
    /// one shared matrix (see `examples/shared_matrix.rs`).
    ///
    /// # Safety
    ///
    /// While the view lives, no other process or thread may read or write the elements it
    /// covers (nor may another view of them exist in this process), and accesses before
    /// and after it must be ordered with it (as for
    /// [`as_array_view`](RawArray::as_array_view): the view's writes are seen by another
    /// process once it has learnt that this one is done — a message, a result returned, a
    /// joined process). Views of disjoint elements may live at the same time, in any
    /// processes.
    ///
    /// ```
    /// let a = multiproc::RawArray::<f64>::new(6).unwrap();
    /// // SAFETY: no other process or view touches `a` while this view lives.
    /// let mut v = unsafe { a.as_array_view_mut(0, (2, 3)) }.unwrap();
    /// v.row_mut(1).fill(2.5);
    /// assert_eq!(a.to_vec(), vec![0.0, 0.0, 0.0, 2.5, 2.5, 2.5]);
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
    #[allow(clippy::mut_from_ref)] // the memory is shared; exclusivity is the caller's contract
    pub unsafe fn as_array_view_mut<D, Sh>(
        &self,
        first: usize,
        shape: Sh,
    ) -> Result<ArrayViewMut<'_, T, D>>
    where
        D: Dimension,
        Sh: Into<StrideShape<D>>,
    {
        let (p, n, shape) = parts::<T, D, Sh>(self.data_ptr(), self.len(), first, shape)?;
        // SAFETY: in bounds, aligned, mapped for the borrow of `self`, any bytes a valid `T`
        // (as in `as_array_view`); no other access to these elements while the slice lives:
        // the caller's contract (see Safety).
        let s = unsafe { std::slice::from_raw_parts_mut(p, n) };
        ArrayViewMut::from_shape(shape, s).map_err(shape_error)
    }
}

impl SharedMemory {
    /// The block's bytes from `offset` seen in place as an ndarray view of `T`s in `shape`
    /// (row-major, or column-major with `shape.f()`): no copy. Python's
    /// `np.ndarray(shape, dtype, buffer=shm.buf, offset=offset)`.
    ///
    /// An [`Error::InvalidOperation`] if the elements do not all lie in the block, or
    /// `offset` is not a multiple of `T`'s size.
    ///
    /// # Safety
    ///
    /// As for [`RawArray::as_array_view`]: while the view lives, no process or thread may
    /// write the bytes it covers, and earlier writes must be ordered before it. In addition,
    /// no process may truncate the block while the view lives (a named block cannot be
    /// sealed; touching a page past its new end raises `SIGBUS`, see
    /// [Truncation](crate::shared_memory#truncation)). [`read_at`](SharedMemory::read_at)
    /// is the safe copy.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 8 * 6).unwrap();
    /// shm.write_at(8 * 5, &7.5f64.to_ne_bytes()).unwrap();
    /// // SAFETY: no other process has the block.
    /// let m = unsafe { shm.as_array_view::<f64, _, _>(0, (2, 3)) }.unwrap();
    /// assert_eq!(m[[1, 2]], 7.5);
    /// drop(m);
    /// shm.unlink().unwrap();
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
    pub unsafe fn as_array_view<T, D, Sh>(
        &self,
        offset: usize,
        shape: Sh,
    ) -> Result<ArrayView<'_, T, D>>
    where
        T: value::Plain,
        D: Dimension,
        Sh: Into<StrideShape<D>>,
    {
        let (p, n, shape) = self.view_parts::<T, D, Sh>(offset, shape)?;
        // SAFETY: the `n` elements from `offset` lie inside the mapping (checked), which
        // stays mapped while `self` is borrowed; `p` is aligned (checked) and non-null;
        // every bit pattern is a `T`. No write and no truncation while the slice lives: the
        // caller's contract (see Safety).
        let s = unsafe { std::slice::from_raw_parts(p.cast_const(), n) };
        ArrayView::from_shape(shape, s).map_err(shape_error)
    }

    /// The block's bytes from `offset` seen in place as a mutable ndarray view of `T`s in
    /// `shape`, as [`as_array_view`](SharedMemory::as_array_view).
    ///
    /// # Safety
    ///
    /// As for [`RawArray::as_array_view_mut`] (no other access to the bytes the view covers
    /// while it lives), and no process may truncate the block meanwhile.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(None, 4 * 4).unwrap();
    /// // SAFETY: no other process has the block.
    /// let mut m = unsafe { shm.as_array_view_mut::<u32, _, _>(0, (2, 2)) }.unwrap();
    /// m[[0, 1]] = 9;
    /// drop(m);
    /// let mut b = [0u8; 4];
    /// shm.read_at(4, &mut b).unwrap();
    /// assert_eq!(u32::from_ne_bytes(b), 9);
    /// shm.unlink().unwrap();
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
    #[allow(clippy::mut_from_ref)] // the memory is shared; exclusivity is the caller's contract
    pub unsafe fn as_array_view_mut<T, D, Sh>(
        &self,
        offset: usize,
        shape: Sh,
    ) -> Result<ArrayViewMut<'_, T, D>>
    where
        T: value::Plain,
        D: Dimension,
        Sh: Into<StrideShape<D>>,
    {
        let (p, n, shape) = self.view_parts::<T, D, Sh>(offset, shape)?;
        // SAFETY: as in `as_array_view`; no other access and no truncation while the slice
        // lives: the caller's contract (see Safety).
        let s = unsafe { std::slice::from_raw_parts_mut(p, n) };
        ArrayViewMut::from_shape(shape, s).map_err(shape_error)
    }

    /// The first element's address, the element count and the shape of a view at byte
    /// `offset`, checked against the block's length and `T`'s alignment.
    fn view_parts<T, D: Dimension, Sh: Into<StrideShape<D>>>(
        &self,
        offset: usize,
        shape: Sh,
    ) -> Result<(*mut T, usize, StrideShape<D>)> {
        let size = std::mem::size_of::<T>();
        if !offset.is_multiple_of(size) {
            return Err(Error::invalid(format!(
                "byte offset {offset} is not a multiple of {}'s size {size}",
                std::any::type_name::<T>()
            )));
        }
        parts::<T, D, Sh>(self.as_ptr(), self.len() / size, offset / size, shape)
    }
}
