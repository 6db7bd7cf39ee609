//! [`SharedMemoryManager`]: blocks owned by a manager process, unlinked when it stops.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::list::{Layout, ShareableList};
use super::SharedMemory;
use crate::manager::{Shared, SharedProxy};
use crate::{Error, Manager, Result};

/// The blocks a [`SharedMemoryManager`] made, held in its server process. They are
/// tracked there: if the server dies, the tracker unlinks them.
#[derive(Serialize, Deserialize, Default)]
struct Blocks {
    #[serde(skip)]
    held: Vec<SharedMemory>,
}

#[derive(Serialize, Deserialize)]
enum BlocksRequest {
    /// Make a block of this many bytes; the reply is its name.
    Create(usize),
    /// Unlink every block made so far.
    UnlinkAll,
}

impl Shared for Blocks {
    type Request = BlocksRequest;
    type Reply = std::result::Result<String, String>;

    fn handle(&mut self, request: BlocksRequest) -> Self::Reply {
        match request {
            BlocksRequest::Create(size) => {
                let shm = SharedMemory::create(None, size).map_err(|e| e.to_string())?;
                let name = shm.name().to_string();
                self.held.push(shm);
                Ok(name)
            }
            BlocksRequest::UnlinkAll => {
                for shm in self.held.drain(..) {
                    // A block someone else unlinked already is fine.
                    let _ = shm.unlink();
                }
                Ok(String::new())
            }
        }
    }

    fn registered_name() -> String {
        "multiproc::SharedMemoryManager".into()
    }
}

/// The starting handle: unlinks everything and stops the server when the last clone goes.
struct Owner {
    manager: Manager,
    blocks: SharedProxy<Blocks>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.blocks.call(BlocksRequest::UnlinkAll);
        let _ = self.manager.shutdown();
    }
}

/// Shared memory blocks owned by a manager process, not by the process that asks for
/// them (Python's `multiprocessing.managers.SharedMemoryManager`): a block made through it
/// outlives the process that made it — a child or pool worker may make blocks and exit —
/// and every block is unlinked when the manager shuts down, is dropped, or its server or
/// owner dies.
///
/// Clone it or pass it to other processes in their arguments; blocks made through any
/// copy belong to the same server. Only the handle that started it (and its clones in the
/// same process) can [`shutdown`](SharedMemoryManager::shutdown).
///
/// ```
/// multiproc::init();
/// use multiproc::shared_memory::{SharedMemory, SharedMemoryManager};
///
/// fn make_block(smm: SharedMemoryManager) -> String {
///     let shm = smm.shared_memory(16).unwrap();
///     shm.write_at(0, b"made by a child").unwrap();
///     shm.name().to_string()
/// }
/// let smm = SharedMemoryManager::start().unwrap();
/// let name = multiproc::spawn(make_block, smm.clone()).unwrap().join().unwrap();
/// // The child has exited; its block lives on, owned by the manager.
/// let shm = SharedMemory::attach(&name).unwrap();
/// assert_eq!(&shm.to_vec().unwrap()[..15], b"made by a child");
/// smm.shutdown().unwrap();
/// assert!(SharedMemory::attach(&name).is_err());
/// ```
#[derive(Clone)]
pub struct SharedMemoryManager {
    owner: Option<Arc<Owner>>,
    blocks: SharedProxy<Blocks>,
}

impl fmt::Debug for SharedMemoryManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemoryManager")
            .field("owner", &self.owner.is_some())
            .finish()
    }
}

impl SharedMemoryManager {
    /// Starts the manager's server process (Python's `SharedMemoryManager().start()`).
    ///
    /// ```
    /// multiproc::init();
    /// let smm = multiproc::shared_memory::SharedMemoryManager::start().unwrap();
    /// smm.shutdown().unwrap();
    /// ```
    pub fn start() -> Result<SharedMemoryManager> {
        let manager = Manager::builder().register::<Blocks>().start()?;
        let blocks = manager.create(Blocks::default())?;
        Ok(SharedMemoryManager {
            owner: Some(Arc::new(Owner {
                manager,
                blocks: blocks.clone(),
            })),
            blocks,
        })
    }

    /// A new block of `size` bytes, owned by the manager (Python's
    /// `smm.SharedMemory(size)`).
    ///
    /// ```
    /// multiproc::init();
    /// let smm = multiproc::shared_memory::SharedMemoryManager::start().unwrap();
    /// let shm = smm.shared_memory(100).unwrap();
    /// assert_eq!(shm.len(), 100);
    /// ```
    #[doc(alias = "SharedMemory")]
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory> {
        let name = self
            .blocks
            .call(BlocksRequest::Create(size))?
            .map_err(Error::InvalidOperation)?;
        SharedMemory::attach(&name)
    }

    /// A new [`ShareableList`] holding `items`, in a block owned by the manager (Python's
    /// `smm.ShareableList(sequence)`).
    ///
    /// ```
    /// multiproc::init();
    /// let smm = multiproc::shared_memory::SharedMemoryManager::start().unwrap();
    /// let l = smm.shareable_list(&["a".to_string(), "b".into()]).unwrap();
    /// assert_eq!(l.get(1).unwrap(), "b");
    /// ```
    #[doc(alias = "ShareableList")]
    pub fn shareable_list<T: Serialize>(&self, items: &[T]) -> Result<ShareableList<T>> {
        let layout = Layout::of(items, 0)?;
        let shm = self.shared_memory(layout.size)?;
        layout.write(shm)
    }

    /// Unlinks every block made through this manager and stops its server. Blocks stay
    /// mapped in the processes that hold them until dropped. Calling it again does nothing;
    /// on a copy received from another process → [`Error::InvalidOperation`].
    ///
    /// ```
    /// multiproc::init();
    /// let smm = multiproc::shared_memory::SharedMemoryManager::start().unwrap();
    /// let shm = smm.shared_memory(8).unwrap();
    /// smm.shutdown().unwrap();
    /// assert!(multiproc::shared_memory::SharedMemory::attach(shm.name()).is_err());
    /// smm.shutdown().unwrap();
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        let Some(owner) = &self.owner else {
            return Err(Error::invalid(
                "only the process that started a SharedMemoryManager can shut it down",
            ));
        };
        // After a first shutdown the server is gone: nothing is left to unlink.
        let _ = owner.blocks.call(BlocksRequest::UnlinkAll);
        owner.manager.shutdown()
    }
}

impl Serialize for SharedMemoryManager {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.blocks.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemoryManager {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SharedMemoryManager {
            owner: None,
            blocks: SharedProxy::deserialize(d)?,
        })
    }
}
