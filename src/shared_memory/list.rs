//! [`ShareableList`]: a fixed-length list of values in a named shared memory block.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SharedMemory;
use crate::manager::{resolve_index, ListIndex};
use crate::{codec, Error, Result};

const MAGIC: &[u8; 8] = b"mpSLIST1";
/// The smallest slot: room for any integer or float (a `u128` takes 19 bytes encoded).
const MIN_SLOT: u64 = 24;

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// A fixed-length list of values of type `T` stored in a named [`SharedMemory`] block
/// (Python's `multiprocessing.shared_memory.ShareableList`): any process that knows the
/// name attaches to it and reads and writes the items in place, with no server between.
///
/// Each item has a slot of fixed size, chosen at creation: its initial value's encoded
/// size rounded up to 8 bytes, and never less than 24 bytes (room for any number), or
/// `slot_bytes` if [`create_with_slot`](ShareableList::create_with_slot) asks for more.
/// Storing a value whose encoding does not fit its slot is an
/// [`Error::InvalidOperation`], as Python raises `ValueError` for a string longer than the
/// one it replaces. The length never changes.
///
/// Like Python's, it has no lock: a read concurrent with a write of the same item may see
/// a mix of the two, which decodes as a wrong value or gives [`Error::Codec`], never
/// undefined behaviour. Guard writers with a [`Lock`](crate::Lock) when items change
/// while others read. Reads and writes copy through the block's descriptor (see
/// [Truncation](super#truncation)).
///
/// It serializes as its name: sent to another process, it attaches there.
///
/// ```
/// multiproc::init();
/// use multiproc::shared_memory::ShareableList;
/// fn shout(l: ShareableList<String>) {
///     let s = l.get(1).unwrap();
///     l.set(1, &s.to_uppercase()).unwrap();
/// }
/// let l = ShareableList::create(None, &["alpha".to_string(), "beta".into()]).unwrap();
/// multiproc::spawn(shout, l.clone()).unwrap().join().unwrap();
/// assert_eq!(l.to_vec().unwrap(), vec!["alpha", "BETA"]);
/// // Longer than the slot of "beta" (24 bytes here):
/// assert!(l.set(1, &"x".repeat(100)).is_err());
/// l.unlink().unwrap();
/// ```
pub struct ShareableList<T> {
    shm: SharedMemory,
    /// Each slot: (offset of its length word, bytes of room after it).
    slots: Vec<(u64, u64)>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for ShareableList<T> {
    fn clone(&self) -> Self {
        ShareableList {
            shm: self.shm.clone(),
            slots: self.slots.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ShareableList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("name", &self.shm.name())
            .field("len", &self.slots.len())
            .finish()
    }
}

/// The encoded items and the block size a list of them needs.
pub(super) struct Layout {
    encoded: Vec<Vec<u8>>,
    slots: Vec<(u64, u64)>,
    pub(super) size: usize,
}

impl Layout {
    pub(super) fn of<T: Serialize>(items: &[T], min_slot: usize) -> Result<Layout> {
        let encoded = items
            .iter()
            .map(|v| codec::encode(v))
            .collect::<Result<Vec<_>>>()?;
        let mut at = 16 + 8 * items.len() as u64;
        let mut slots = Vec::with_capacity(items.len());
        for e in &encoded {
            let room = round8(e.len() as u64)
                .max(MIN_SLOT)
                .max(round8(min_slot as u64));
            slots.push((at, room));
            at += 8 + room;
        }
        Ok(Layout {
            encoded,
            slots,
            size: at as usize,
        })
    }

    /// Writes the header and the items into `shm` (at least `size` bytes).
    pub(super) fn write<T>(self, shm: SharedMemory) -> Result<ShareableList<T>> {
        let mut head = Vec::with_capacity(16 + 8 * self.slots.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(self.slots.len() as u64).to_le_bytes());
        for (off, _) in &self.slots {
            head.extend_from_slice(&off.to_le_bytes());
        }
        let list = ShareableList {
            shm,
            slots: self.slots,
            _t: PhantomData,
        };
        for (i, e) in self.encoded.iter().enumerate() {
            list.put_bytes(i, e)?;
        }
        // The magic last: an attacher never sees a half-written header as a list.
        list.shm.write_at(8, &head[8..])?;
        list.shm.write_at(0, MAGIC)?;
        Ok(list)
    }
}

impl<T> ShareableList<T> {
    /// Attaches to the list in the block `name` (Python's `ShareableList(name=name)`).
    /// A block that does not hold a list → [`Error::Codec`].
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::shared_memory::ShareableList;
    /// let l = ShareableList::create(None, &[1u32, 2, 3]).unwrap();
    /// let again = ShareableList::<u32>::attach(l.name()).unwrap();
    /// assert_eq!(again.get(2).unwrap(), 3);
    /// l.unlink().unwrap();
    /// ```
    pub fn attach(name: &str) -> Result<ShareableList<T>> {
        ShareableList::from_block(SharedMemory::attach(name)?)
    }

    fn from_block(shm: SharedMemory) -> Result<ShareableList<T>> {
        let bad = || {
            Error::codec(format!(
                "shared memory {:?} holds no ShareableList",
                shm.name()
            ))
        };
        let total = shm.len() as u64;
        let mut head = [0u8; 16];
        if total < 16 {
            return Err(bad());
        }
        shm.read_at(0, &mut head)?;
        if &head[..8] != MAGIC {
            return Err(bad());
        }
        let n = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
        if n > (total - 16) / 16 {
            return Err(bad());
        }
        let mut offs = vec![0u8; 8 * n as usize];
        shm.read_at(16, &mut offs)?;
        let offs: Vec<u64> = offs
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let mut slots = Vec::with_capacity(offs.len());
        let mut floor = 16 + 8 * n;
        for (i, &off) in offs.iter().enumerate() {
            let end = offs.get(i + 1).copied().unwrap_or(total);
            if off < floor || end > total || end < off + 8 {
                return Err(bad());
            }
            slots.push((off, end - off - 8));
            floor = end;
        }
        Ok(ShareableList {
            shm,
            slots,
            _t: PhantomData,
        })
    }

    /// The number of items (fixed at creation).
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[0u8; 5]).unwrap();
    /// assert_eq!(l.len(), 5);
    /// l.unlink().unwrap();
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it has no items.
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::<u8>::create(None, &[]).unwrap();
    /// assert!(l.is_empty());
    /// l.unlink().unwrap();
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The block's name, to attach to it elsewhere.
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(Some("mp_doc_sl"), &[1u8]).unwrap();
    /// assert_eq!(l.name(), "mp_doc_sl");
    /// l.unlink().unwrap();
    /// ```
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The block underneath (Python's `ShareableList.shm`).
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[1u8]).unwrap();
    /// assert!(l.shm().len() >= 40);
    /// l.unlink().unwrap();
    /// ```
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Removes the block's name (see [`SharedMemory::unlink`]).
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[1u8]).unwrap();
    /// l.unlink().unwrap();
    /// ```
    pub fn unlink(&self) -> Result<()> {
        self.shm.unlink()
    }

    /// The position `i` names (negative: from the end).
    fn position(&self, i: impl ListIndex) -> Result<usize> {
        resolve_index(i.wire(), self.slots.len())
    }

    fn slot(&self, i: usize) -> Result<(u64, u64)> {
        self.slots
            .get(i)
            .copied()
            .ok_or_else(|| Error::index_out_of_range(i, self.slots.len()))
    }

    fn put_bytes(&self, i: usize, bytes: &[u8]) -> Result<()> {
        let (off, room) = self.slot(i)?;
        if bytes.len() as u64 > room {
            return Err(Error::invalid(format!(
                "item {i} takes {} bytes encoded; its slot holds {room}",
                bytes.len()
            )));
        }
        self.shm.write_at(off as usize + 8, bytes)?;
        self.shm
            .write_at(off as usize, &(bytes.len() as u64).to_le_bytes())
    }

    fn get_bytes(&self, i: usize) -> Result<Vec<u8>> {
        let (off, room) = self.slot(i)?;
        let mut len = [0u8; 8];
        self.shm.read_at(off as usize, &mut len)?;
        let len = u64::from_le_bytes(len);
        if len > room {
            return Err(Error::codec(format!(
                "item {i} of ShareableList {:?} claims {len} bytes in a slot of {room}",
                self.name()
            )));
        }
        let mut v = vec![0u8; len as usize];
        self.shm.read_at(off as usize + 8, &mut v)?;
        Ok(v)
    }
}

impl<T: Serialize> ShareableList<T> {
    /// Creates a block named `name` (or a fresh name) holding `items` (Python's
    /// `ShareableList(sequence, name=name)`). The block is tracked like
    /// [`SharedMemory::create`]'s.
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[1.5f64, -2.0]).unwrap();
    /// assert_eq!(l.get(0).unwrap(), 1.5);
    /// l.unlink().unwrap();
    /// ```
    pub fn create(name: Option<&str>, items: &[T]) -> Result<ShareableList<T>> {
        ShareableList::create_with_slot(name, items, 0)
    }

    /// As [`create`](ShareableList::create), with every slot at least `slot_bytes` long, so
    /// that items can later hold values larger than their first ones.
    ///
    /// ```
    /// multiproc::init();
    /// use multiproc::shared_memory::ShareableList;
    /// let l = ShareableList::create_with_slot(None, &[String::new()], 64).unwrap();
    /// l.set(0, &"a longer text than the first".to_string()).unwrap();
    /// l.unlink().unwrap();
    /// ```
    pub fn create_with_slot(
        name: Option<&str>,
        items: &[T],
        slot_bytes: usize,
    ) -> Result<ShareableList<T>> {
        let layout = Layout::of(items, slot_bytes)?;
        let shm = SharedMemory::create(name, layout.size)?;
        layout.write(shm)
    }

    /// Stores `value` as item `i` (negative: from the end, as in Python; see
    /// [`ListIndex`]). An index out of range → [`Error::IndexOutOfRange`] (Python's
    /// `IndexError`); a value too large for the item's slot → [`Error::InvalidOperation`].
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[1i64, 2]).unwrap();
    /// l.set(1, &i64::MIN).unwrap();
    /// assert_eq!(l.get(1).unwrap(), i64::MIN);
    /// l.set(-2, &7).unwrap();
    /// assert_eq!(l.get(0).unwrap(), 7);
    /// assert!(l.set(2, &0).is_err());
    /// l.unlink().unwrap();
    /// ```
    pub fn set(&self, i: impl ListIndex, value: &T) -> Result<()> {
        self.put_bytes(self.position(i)?, &codec::encode(value)?)
    }
}

impl<T: DeserializeOwned> ShareableList<T> {
    /// Item `i` (negative: from the end, as in Python; see [`ListIndex`]). An index out of
    /// range → [`Error::IndexOutOfRange`] (Python's `IndexError`).
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[(1u8, true)]).unwrap();
    /// assert_eq!(l.get(0).unwrap(), (1, true));
    /// assert_eq!(l.get(-1).unwrap(), (1, true));
    /// assert!(l.get(1).is_err());
    /// l.unlink().unwrap();
    /// ```
    pub fn get(&self, i: impl ListIndex) -> Result<T> {
        codec::decode(&self.get_bytes(self.position(i)?)?)
    }

    /// Every item, in order.
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &['a', 'b']).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec!['a', 'b']);
    /// l.unlink().unwrap();
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

impl<T: DeserializeOwned + PartialEq> ShareableList<T> {
    /// How many items equal `value` (Python's `count`).
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[1u8, 2, 1]).unwrap();
    /// assert_eq!(l.count(&1).unwrap(), 2);
    /// l.unlink().unwrap();
    /// ```
    pub fn count(&self, value: &T) -> Result<usize> {
        Ok(self.to_vec()?.iter().filter(|v| *v == value).count())
    }

    /// The index of the first item equal to `value`, `None` if there is none (Python's
    /// `index`, which raises `ValueError` instead).
    ///
    /// ```
    /// multiproc::init();
    /// let l = multiproc::shared_memory::ShareableList::create(None, &[5u8, 6]).unwrap();
    /// assert_eq!(l.index(&6).unwrap(), Some(1));
    /// assert_eq!(l.index(&7).unwrap(), None);
    /// l.unlink().unwrap();
    /// ```
    pub fn index(&self, value: &T) -> Result<Option<usize>> {
        for i in 0..self.len() {
            if self.get(i)? == *value {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

impl<T> Serialize for ShareableList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ShareableList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shm = SharedMemory::deserialize(d)?;
        ShareableList::from_block(shm).map_err(crate::codec::handle_error)
    }
}
