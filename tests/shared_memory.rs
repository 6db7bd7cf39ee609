//! Named shared memory blocks and their tracker.

use std::path::Path;
use std::time::Duration;

use multiproc::shared_memory::{self, SharedMemory};
use multiproc::{Error, Event, Process, StartMethod};
use rustix::process::{Pid, Signal};

mod common;

fn unique(tag: &str) -> String {
    format!("mp_test_{tag}_{}", std::process::id())
}

fn exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

/// Waits up to `limit` for the block to disappear from /dev/shm.
fn gone_within(name: &str, limit: Duration) -> bool {
    common::eventually(limit, || !exists(name))
}

#[test]
fn create_attach_read_write_unlink() {
    multiproc::init();
    let name = unique("basic");
    let a = SharedMemory::create(Some(&name), 1000).unwrap();
    assert_eq!(a.name(), name);
    assert_eq!(a.len(), 1000);
    assert!(exists(&name));
    assert!(matches!(
        SharedMemory::create(Some(&name), 10),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists
    ));
    a.write_at(0, b"hello").unwrap();
    assert!(a.write_at(998, b"abc").is_err());

    // Another process attaches by name, reads, writes.
    fn child(name: String) -> Vec<u8> {
        let b = SharedMemory::attach(&name).unwrap();
        let mut buf = [0u8; 5];
        b.read_at(0, &mut buf).unwrap();
        b.write_at(500, b"world").unwrap();
        buf.to_vec()
    }
    let got = multiproc::spawn(child, name.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(got, b"hello");
    let mut buf = [0u8; 5];
    a.read_at(500, &mut buf).unwrap();
    assert_eq!(&buf, b"world");

    // The handle itself can be sent: it attaches by name.
    fn via_handle(shm: SharedMemory) -> usize {
        shm.len()
    }
    assert_eq!(
        multiproc::spawn(via_handle, a.clone())
            .unwrap()
            .join()
            .unwrap(),
        1000
    );

    a.unlink().unwrap();
    assert!(!exists(&name));
    assert!(SharedMemory::attach(&name).is_err());
    // The mapping stays usable after unlink.
    a.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");

    // Generated names are unique.
    let x = SharedMemory::create(None, 10).unwrap();
    let y = SharedMemory::create(None, 10).unwrap();
    assert_ne!(x.name(), y.name());
    x.unlink().unwrap();
    y.unlink().unwrap();

    assert!(SharedMemory::create(None, 0).is_err());
    assert!(SharedMemory::create(Some("a/b"), 10).is_err());
}

fn create_and_hang((name, ready): (String, Event)) {
    let shm = SharedMemory::create(Some(&name), 4096).unwrap();
    shm.write_at(0, b"x").unwrap();
    hang_after(ready)
}

/// Sets `ready`, then waits to be killed.
fn hang_after(ready: Event) -> ! {
    ready.set();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn block_of_killed_creator_is_unlinked() {
    multiproc::init();
    let name = unique("killed");
    let ready = Event::new().unwrap();
    let h = multiproc::spawn(create_and_hang, (name.clone(), ready.clone())).unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(10)).unwrap());
    assert!(exists(&name));
    h.kill().unwrap();
    let _ = h.join();
    assert!(
        gone_within(&name, Duration::from_secs(5)),
        "{name} left in /dev/shm"
    );
}

#[test]
fn block_of_creator_that_forgot_to_unlink_is_unlinked() {
    multiproc::init();
    let name = unique("forgot");
    fn create_and_leave(name: String) {
        let shm = SharedMemory::create(Some(&name), 100).unwrap();
        shm.write_at(0, b"bye").unwrap();
    }
    multiproc::spawn(create_and_leave, name.clone())
        .unwrap()
        .join()
        .unwrap();
    assert!(gone_within(&name, Duration::from_secs(5)));
}

#[test]
fn untracked_block_outlives_its_creator() {
    multiproc::init();
    let name = unique("untracked");
    let control = unique("untracked_control");
    fn create_untracked((name, control): (String, String)) {
        let shm = SharedMemory::create_untracked(Some(&name), 100).unwrap();
        shm.write_at(0, b"kept").unwrap();
        // A tracked block beside it: gone once the tracker has dealt with our exit.
        SharedMemory::create(Some(&control), 100).unwrap();
    }
    multiproc::spawn(create_untracked, (name.clone(), control.clone()))
        .unwrap()
        .join()
        .unwrap();
    assert!(gone_within(&control, Duration::from_secs(30)));
    assert!(exists(&name));
    let shm = SharedMemory::attach(&name).unwrap();
    let mut b = [0u8; 4];
    shm.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"kept");
    shm.unlink().unwrap();
    assert!(!exists(&name));
}

#[test]
fn unlinked_block_is_not_unlinked_again() {
    multiproc::init();
    // A tracked block unlinked by its creator, then re-created untracked elsewhere under the
    // same name, must survive the first creator's exit.
    let name = unique("reuse");
    let control = unique("reuse_control");
    fn create_unlink((name, control, unlinked, recreated): (String, String, Event, Event)) {
        let shm = SharedMemory::create(Some(&name), 10).unwrap();
        shm.unlink().unwrap();
        // A tracked block left behind: gone once the tracker has dealt with our exit.
        SharedMemory::create(Some(&control), 10).unwrap();
        unlinked.set();
        recreated.wait().unwrap();
    }
    let (unlinked, recreated) = (Event::new().unwrap(), Event::new().unwrap());
    let args = (
        name.clone(),
        control.clone(),
        unlinked.clone(),
        recreated.clone(),
    );
    let h = multiproc::spawn(create_unlink, args).unwrap();
    // Re-created while the first creator still lives: its exit comes after.
    unlinked.wait().unwrap();
    let again = SharedMemory::create_untracked(Some(&name), 10).unwrap();
    recreated.set();
    h.join().unwrap();
    assert!(gone_within(&control, Duration::from_secs(30)));
    assert!(exists(&name));
    again.unlink().unwrap();
}

/// Issue 11.5: a block truncated by another process, then read and written through the
/// API, gives an error, not SIGBUS.
#[test]
fn truncated_block_gives_an_error_not_sigbus() {
    multiproc::init();
    let name = unique("truncated");
    let shm = SharedMemory::create(Some(&name), 3 * 4096).unwrap();
    shm.write_at(8192, b"tail").unwrap();
    fn truncate(name: String) {
        // Any process that can open the name can do this: it needs no multiproc handle.
        std::fs::OpenOptions::new()
            .write(true)
            .open(Path::new("/dev/shm").join(&name))
            .unwrap()
            .set_len(4096)
            .unwrap();
    }
    multiproc::spawn(truncate, name.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        std::fs::metadata(Path::new("/dev/shm").join(&name))
            .unwrap()
            .len(),
        4096
    );

    // The bytes still there work; the ones cut off are an error, read or written.
    shm.write_at(0, b"head").unwrap();
    let mut b = [0u8; 4];
    shm.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"head");
    let gone = |r: multiproc::Result<()>| matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof);
    assert!(gone(shm.read_at(8192, &mut b)));
    assert!(gone(shm.read_at(4094, &mut b)), "a read across the new end");
    assert!(gone(shm.write_at(8192, b"more")));
    assert!(matches!(shm.to_vec(), Err(Error::Io(_))));
    // A failed write does not grow the block back.
    assert_eq!(
        std::fs::metadata(Path::new("/dev/shm").join(&name))
            .unwrap()
            .len(),
        4096
    );
    shm.unlink().unwrap();
}

/// SIGKILLs `pid` and waits (bounded) until it is dead.
fn kill_and_wait(pid: u32) {
    rustix::process::kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
    // Dead means every thread gone, not just the leader: a zombie leader's other threads
    // (the tracker runs on the test harness's second thread of its binary) may still hold
    // its sockets open for a moment.
    assert!(common::eventually(Duration::from_secs(10), || {
        !common::running(pid)
            && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count()) <= 1
    }));
}

/// Issue 11.3: `kill -9` of a whole process group (job control, a shell's Ctrl-\ on a
/// pipeline, a supervisor killing a job) with named blocks alive in two of its processes.
/// The tracker has left the group, sees every connection close, and unlinks both.
#[test]
fn process_group_sigkill_leaves_nothing_in_dev_shm() {
    multiproc::init();
    fn leader((a, b, ready): (String, String, Event)) {
        // A process group of its own, as a shell makes for a job.
        rustix::process::setpgid(None, None).unwrap();
        let shm = SharedMemory::create(Some(&a), 4096).unwrap();
        shm.write_at(0, b"a").unwrap();
        // A second member of the group (exec'd from the leader, so in its group).
        let member_ready = Event::new().unwrap();
        let mut p = Process::new(create_and_hang, (b, member_ready.clone()))
            .with_start_method(StartMethod::Spawn);
        p.start().unwrap();
        assert!(member_ready.wait_timeout(Duration::from_secs(20)).unwrap());
        hang_after(ready)
    }
    let (a, b) = (unique("group_a"), unique("group_b"));
    let ready = Event::new().unwrap();
    let mut h = Process::new(leader, (a.clone(), b.clone(), ready.clone()));
    h.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)).unwrap());
    assert!(exists(&a) && exists(&b));
    let pgid = h.pid().unwrap();
    rustix::process::kill_process_group(Pid::from_raw(pgid as i32).unwrap(), Signal::KILL).unwrap();
    h.join().unwrap();
    assert_eq!(h.exitcode(), Some(-9));
    for n in [&a, &b] {
        assert!(
            gone_within(n, Duration::from_secs(10)),
            "{n} left in /dev/shm"
        );
    }
}

/// Issue 15.3 and 11.3: a tracker killed on its own is replaced at the next `create`,
/// which succeeds, and the names the dead one held are registered with the replacement:
/// the process's blocks are still unlinked when it is killed later.
#[test]
fn killed_tracker_is_replaced_and_keeps_every_name() {
    multiproc::init();
    fn kill_tracker_then_create((a, b, ready): (String, String, Event)) {
        let _x = SharedMemory::create(Some(&a), 4096).unwrap();
        let t1 = shared_memory::tracker_pid().unwrap();
        kill_and_wait(t1);
        let _y = SharedMemory::create(Some(&b), 4096).unwrap();
        let t2 = shared_memory::tracker_pid().unwrap();
        assert_ne!(t1, t2);
        hang_after(ready)
    }
    let (a, b) = (unique("retrack_a"), unique("retrack_b"));
    let ready = Event::new().unwrap();
    let h = multiproc::spawn(
        kill_tracker_then_create,
        (a.clone(), b.clone(), ready.clone()),
    )
    .unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)).unwrap());
    assert!(exists(&a) && exists(&b));
    h.kill().unwrap();
    let _ = h.join();
    for n in [&a, &b] {
        assert!(
            gone_within(n, Duration::from_secs(10)),
            "{n} left in /dev/shm"
        );
    }
}

/// Issue 15.3: the create after the tracker was killed does not fail, and the dead
/// tracker (our child) is reaped.
#[test]
fn create_after_the_tracker_was_killed_succeeds() {
    multiproc::init();
    let a = SharedMemory::create(None, 100).unwrap();
    let t1 = shared_memory::tracker_pid().unwrap();
    kill_and_wait(t1);
    let b = SharedMemory::create(None, 100).unwrap();
    assert_ne!(shared_memory::tracker_pid(), Some(t1));
    assert!(
        !common::zombies_of_me().contains(&t1),
        "dead tracker not reaped"
    );
    a.unlink().unwrap();
    b.unlink().unwrap();
}

/// The tracker a child process uses (it creates a block to be sure it has one).
fn tracker_of_child(_: ()) -> Option<u32> {
    let s = SharedMemory::create(None, 10).unwrap();
    let t = shared_memory::tracker_pid();
    s.unlink().unwrap();
    t
}

/// Issue 15.3: children (plain processes and pool workers) use their parent's tracker
/// instead of starting one each.
#[test]
fn children_use_their_parents_tracker() {
    multiproc::init();
    let mine = SharedMemory::create(None, 10).unwrap();
    let t = shared_memory::tracker_pid();
    assert!(t.is_some());
    let child = multiproc::spawn(tracker_of_child, ())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(child, t);
    let pool = multiproc::Pool::new(3).unwrap();
    let workers = pool.map(tracker_of_child, vec![(); 6]).unwrap();
    assert!(workers.iter().all(|w| *w == t), "{workers:?} != {t:?}");
    drop(pool);
    mine.unlink().unwrap();
}

/// Children started before their parent ever used shared memory share one tracker too.
#[test]
fn siblings_share_one_tracker() {
    multiproc::init();
    let pool = multiproc::Pool::new(3).unwrap();
    let workers = pool.map(tracker_of_child, vec![(); 6]).unwrap();
    assert!(workers[0].is_some());
    assert!(workers.iter().all(|w| *w == workers[0]), "{workers:?}");
}

// --- attaching without tracking, create-or-attach, ShareableList, SharedMemoryManager ---------

/// Attaches to `name`, creates a tracked block `mine`, then waits to be killed.
fn attach_create_and_hang((name, mine, ready): (String, String, Event)) {
    let other = SharedMemory::attach(&name).unwrap();
    other.write_at(0, b"seen").unwrap();
    let own = SharedMemory::create(Some(&mine), 64).unwrap();
    own.write_at(0, b"x").unwrap();
    hang_after(ready)
}

#[test]
fn a_killed_attacher_does_not_take_the_block_away() {
    multiproc::init();
    let name = unique("attached");
    let mine = unique("attachers_own");
    let shm = SharedMemory::create(Some(&name), 64).unwrap();
    let ready = Event::new().unwrap();
    let h = multiproc::spawn(
        attach_create_and_hang,
        (name.clone(), mine.clone(), ready.clone()),
    )
    .unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(10)).unwrap());
    h.kill().unwrap();
    let _ = h.join();
    // The tracker dealt with the dead child's names (its own block is gone); the block it
    // only attached to stays.
    assert!(gone_within(&mine, Duration::from_secs(5)));
    assert!(exists(&name));
    assert_eq!(&shm.to_vec().unwrap()[..4], b"seen");
    shm.unlink().unwrap();
}

fn race_to_create((name, start): (String, multiproc::Barrier)) -> bool {
    start.wait().unwrap();
    let (shm, created) = SharedMemory::create_or_attach(&name, 128).unwrap();
    assert_eq!(shm.len(), 128);
    // Everyone holds the block before the creator may exit and take it away.
    start.wait().unwrap();
    created
}

#[test]
fn create_or_attach_creates_exactly_once_among_racers() {
    multiproc::init();
    let name = unique("race");
    let start = multiproc::Barrier::new(4).unwrap();
    let racers: Vec<_> = (0..4)
        .map(|_| multiproc::spawn(race_to_create, (name.clone(), start.clone())).unwrap())
        .collect();
    let created: Vec<bool> = racers.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
    // The creator's block was tracked: it went with the creator.
    assert!(gone_within(&name, Duration::from_secs(5)));
    // An existing block is attached whatever the size asked for.
    let own = SharedMemory::create(Some(&name), 16).unwrap();
    let (again, created) = SharedMemory::create_or_attach(&name, 4096).unwrap();
    assert!(!created);
    assert_eq!(again.len(), 16);
    own.unlink().unwrap();
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Item {
    Int(i64),
    Text(String),
    Flag(bool),
    Nothing,
}

fn edit_list(name: String) -> Vec<Item> {
    let l = shared_memory::ShareableList::<Item>::attach(&name).unwrap();
    l.set(0, &Item::Int(-5)).unwrap();
    l.set(1, &Item::Text("HOWDY".into())).unwrap();
    l.set(3, &Item::Flag(false)).unwrap();
    // Longer than the slot its first value sized.
    assert!(matches!(
        l.set(1, &Item::Text("x".repeat(200))),
        Err(Error::InvalidOperation(_))
    ));
    l.to_vec().unwrap()
}

#[test]
fn shareable_list_across_processes() {
    multiproc::init();
    let name = unique("slist");
    let items = vec![
        Item::Int(1),
        Item::Text("howdy".into()),
        Item::Nothing,
        Item::Flag(true),
    ];
    let l = shared_memory::ShareableList::create(Some(&name), &items).unwrap();
    assert_eq!(l.len(), 4);
    let child_saw = multiproc::spawn(edit_list, name.clone())
        .unwrap()
        .join()
        .unwrap();
    let want = vec![
        Item::Int(-5),
        Item::Text("HOWDY".into()),
        Item::Nothing,
        Item::Flag(false),
    ];
    assert_eq!(child_saw, want);
    assert_eq!(l.to_vec().unwrap(), want);
    assert_eq!(l.count(&Item::Nothing).unwrap(), 1);
    assert_eq!(l.index(&Item::Flag(false)).unwrap(), Some(3));
    // As an argument: it attaches in the child.
    fn first(l: shared_memory::ShareableList<Item>) -> Item {
        l.get(0).unwrap()
    }
    assert_eq!(
        multiproc::spawn(first, l.clone()).unwrap().join().unwrap(),
        Item::Int(-5)
    );
    // A block that holds no list.
    let plain = SharedMemory::create(None, 64).unwrap();
    assert!(matches!(
        shared_memory::ShareableList::<Item>::attach(plain.name()),
        Err(Error::Codec(_))
    ));
    plain.unlink().unwrap();
    l.unlink().unwrap();
    assert!(!exists(&name));
}

fn make_through_manager(smm: shared_memory::SharedMemoryManager) -> (String, String) {
    let shm = smm.shared_memory(32).unwrap();
    shm.write_at(0, b"from the child").unwrap();
    let l = smm.shareable_list(&[10u32, 20, 30]).unwrap();
    l.set(2, &33).unwrap();
    (shm.name().to_string(), l.name().to_string())
}

#[test]
fn shared_memory_manager_owns_what_children_make() {
    multiproc::init();
    let smm = shared_memory::SharedMemoryManager::start().unwrap();
    let (block, list) = multiproc::spawn(make_through_manager, smm.clone())
        .unwrap()
        .join()
        .unwrap();
    // The child has exited; what it made belongs to the manager and stays.
    assert!(exists(&block) && exists(&list));
    let shm = SharedMemory::attach(&block).unwrap();
    assert_eq!(&shm.to_vec().unwrap()[..14], b"from the child");
    let l = shared_memory::ShareableList::<u32>::attach(&list).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![10, 20, 33]);
    let own = smm.shared_memory(8).unwrap();
    // Only the starting handle stops it.
    fn try_shutdown(smm: shared_memory::SharedMemoryManager) -> bool {
        matches!(smm.shutdown(), Err(Error::InvalidOperation(_)))
    }
    assert!(multiproc::spawn(try_shutdown, smm.clone())
        .unwrap()
        .join()
        .unwrap());
    smm.shutdown().unwrap();
    assert!(!exists(&block) && !exists(&list) && !exists(own.name()));
    // Dropping the last starting handle does the same.
    let smm = shared_memory::SharedMemoryManager::start().unwrap();
    let name = smm.shared_memory(8).unwrap().name().to_string();
    assert!(exists(&name));
    drop(smm);
    assert!(!exists(&name));
}

fn block_len(shm: SharedMemory) -> usize {
    shm.len()
}

#[test]
fn a_block_unlinked_in_flight_gives_a_typed_error_naming_it() {
    multiproc::init();
    let name = unique("gone");
    // Through a pipe: the receiver cannot attach a block unlinked after it was sent.
    let (tx, rx) = multiproc::pipe::<(u8, SharedMemory)>().unwrap();
    let shm = SharedMemory::create(Some(&name), 64).unwrap();
    tx.send(&(1, shm.clone())).unwrap();
    shm.unlink().unwrap();
    match rx.recv() {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains(&name), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The channel stays usable.
    let other = SharedMemory::create(None, 8).unwrap();
    tx.send(&(2, other.clone())).unwrap();
    assert_eq!(rx.recv().unwrap().1.len(), 8);
    other.unlink().unwrap();
    // As a pool task's argument: that task fails with the same error.
    let pool = multiproc::Pool::new(1).unwrap();
    let shm = SharedMemory::create(None, 16).unwrap();
    let gone = SharedMemory::create(Some(&name), 16).unwrap();
    gone.unlink().unwrap();
    let res: Vec<_> = pool.imap(block_len, vec![shm.clone(), gone]).collect();
    assert_eq!(res[0].as_ref().ok(), Some(&16));
    match &res[1] {
        Err(Error::Io(e)) => assert!(e.to_string().contains(&name), "{e}"),
        other => panic!("{other:?}"),
    }
    shm.unlink().unwrap();
}

// --- SharedBytes ---------------------------------------------------------------------------

use multiproc::shared_memory::SharedBytes;
use multiproc::{Connection, Queue};

/// Bytes whose every position can be checked: byte `i` is `i * 31 + i / 4096` (mod 256).
fn bytes_at(i: usize) -> u8 {
    (i.wrapping_mul(31) + i / 4096) as u8
}

/// The child's answer: the set's id, the lengths it saw, whether every byte was right, and
/// bytes of its own.
type Answer = (u32, Vec<usize>, bool, SharedBytes);

fn answer_shared((q, reply): (Queue<(u32, Vec<SharedBytes>)>, Connection<Answer>)) {
    loop {
        let (id, parts) = q.get().unwrap();
        if id == u32::MAX {
            return;
        }
        let lens = parts.iter().map(|p| p.len()).collect();
        let ok = parts
            .iter()
            .all(|p| p.iter().enumerate().all(|(i, &b)| b == bytes_at(i)));
        // One made here, filled in place, sent back by handle.
        let back = SharedBytes::build(3 << 20, |b| {
            for (i, x) in b.iter_mut().enumerate() {
                *x = bytes_at(i);
            }
        })
        .unwrap();
        reply.send(&(id, lens, ok, back)).unwrap();
    }
}

#[test]
fn shared_bytes_travel_by_handle_inside_items_both_ways() {
    multiproc::init();
    let q = Queue::new().unwrap();
    let (rx, tx) = multiproc::pipe::<Answer>().unwrap();
    let mut p = Process::new(answer_shared, (q.clone(), tx));
    p.start().unwrap();
    let filled = |n: usize| {
        SharedBytes::build(n, |b| {
            for (i, x) in b.iter_mut().enumerate() {
                *x = bytes_at(i);
            }
        })
        .unwrap()
    };
    let copied: Vec<u8> = (0..10_000).map(bytes_at).collect();
    let sets = [
        vec![],
        vec![SharedBytes::from_slice(&[]).unwrap()],
        vec![filled(1), SharedBytes::from_slice(&copied).unwrap()],
        vec![filled(8 << 20), filled(4096), filled(5000)],
    ];
    for (id, parts) in sets.iter().enumerate() {
        q.put((id as u32, parts.clone())).unwrap();
        let (got, lens, ok, back) = rx.recv().unwrap();
        assert_eq!(got, id as u32);
        assert_eq!(lens, parts.iter().map(|p| p.len()).collect::<Vec<_>>());
        assert!(ok, "set {id}: the child saw other bytes");
        assert_eq!(back.len(), 3 << 20);
        assert!(back.iter().enumerate().all(|(i, &b)| b == bytes_at(i)));
    }
    // The sender's copies are untouched and still readable after the handover.
    assert_eq!(sets[3][0][(8 << 20) - 1], bytes_at((8 << 20) - 1));
    q.put((u32::MAX, Vec::new())).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn shared_bytes_only_encode_for_a_multiproc_channel() {
    let b = SharedBytes::from_slice(b"abc").unwrap();
    assert!(matches!(multiproc::codec::encode(&b), Err(Error::Codec(_))));
}

/// `_TestSharedMemory.test_shared_memory_ShareableList_basics`: `sl[-2]`, `sl[-1] = 77`;
/// an index out of range, from either end, is `IndexError` (here `IndexOutOfRange`, the
/// same error as a manager's list gives) and changes nothing.
#[test]
fn shareable_list_negative_indices_count_from_the_end() {
    use multiproc::shared_memory::ShareableList;
    multiproc::init();
    let l = ShareableList::create(None, &[10i64, 20, 30]).unwrap();
    assert_eq!(l.get(-1).unwrap(), 30);
    assert_eq!(l.get(-3).unwrap(), 10);
    l.set(-1, &77).unwrap();
    assert_eq!(l.get(2).unwrap(), 77);
    assert!(matches!(
        l.get(-4),
        Err(Error::IndexOutOfRange { index: -4, len: 3 })
    ));
    assert!(matches!(
        l.set(3usize, &0),
        Err(Error::IndexOutOfRange { index: 3, len: 3 })
    ));
    assert!(matches!(
        l.set(i64::MIN, &0),
        Err(Error::IndexOutOfRange {
            index: i64::MIN,
            len: 3
        })
    ));
    assert_eq!(l.to_vec().unwrap(), vec![10, 20, 77]);
    l.unlink().unwrap();
}

/// The abstract socket name of this process's tracker (it chose it: the name holds our pid),
/// from the kernel's table of Unix sockets.
fn our_tracker_socket() -> String {
    let prefix = format!("@multiproc-shm-tracker-{}-", std::process::id());
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let name = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .find(|n| n.starts_with(&prefix))
        .expect("the tracker's socket");
    name[1..].to_string()
}

/// A peer that is not a client of ours (same user) connects to the tracker, sends part of
/// a message and stops: the tracker drops it after a short while instead of waiting for
/// the rest for ever, and keeps serving the tree (a `create` and an `unlink` complete,
/// names are still unlinked).
#[test]
fn a_peer_that_stops_inside_a_message_does_not_stop_the_tracker() {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    multiproc::init();
    let a = SharedMemory::create(Some(&unique("stall_a")), 4096).unwrap();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(our_tracker_socket()).unwrap();
    let mut hostile = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    // One frame: a 16-byte header (its length in bytes 8..16), and the handle of the
    // tracker's state file (the descriptor itself is dropped by a plain read).
    let mut header = [0u8; 16];
    hostile.read_exact(&mut header).unwrap();
    let len = u64::from_le_bytes(header[8..].try_into().unwrap());
    hostile.read_exact(&mut vec![0u8; len as usize]).unwrap();
    // Half of a frame header, then nothing more.
    hostile.write_all(&0x3143_504du32.to_le_bytes()).unwrap();
    hostile.write_all(&[0u8; 4]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let b_name = unique("stall_b");
    std::thread::spawn(move || {
        let r = SharedMemory::create(Some(&b_name), 4096).and_then(|b| b.unlink());
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the tracker stopped serving: create/unlink hung");
    r.unwrap();
    // The tracker hung up on the peer.
    hostile
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(hostile.read(&mut [0u8; 1]).unwrap(), 0);
    a.unlink().unwrap();
}

/// Creates a block, kills the tracker that holds its name, and ends normally without
/// unlinking it or making any other registration.
fn create_kill_the_tracker_and_end(name: String) {
    let _shm = SharedMemory::create(Some(&name), 4096).unwrap();
    kill_and_wait(shared_memory::tracker_pid().unwrap());
}

/// The tracker is killed on its own while a process holds a block it registered, and that
/// process then ends normally without unlinking it: the name is still unlinked (at exit,
/// the process hands its names to a replacement tracker) instead of being left in
/// /dev/shm for want of a later registration that would have noticed the dead tracker.
#[test]
fn names_held_by_a_killed_tracker_are_unlinked_when_their_creator_ends() {
    multiproc::init();
    let name = unique("orphaned_by_tracker");
    multiproc::spawn(create_kill_the_tracker_and_end, name.clone())
        .unwrap()
        .join()
        .unwrap();
    assert!(
        gone_within(&name, Duration::from_secs(10)),
        "{name} left in /dev/shm"
    );
}

/// This process uses the tracker (it holds `mine`), a child creates the block `name` and
/// hangs (`h`), then the tracker (`tracker`) is killed.
fn a_creator_whose_tracker_was_killed(
    tag: &str,
) -> (SharedMemory, String, multiproc::JoinHandle<()>, u32) {
    let mine = SharedMemory::create(None, 10).unwrap();
    let name = unique(tag);
    let ready = Event::new().unwrap();
    let h = multiproc::spawn(create_and_hang, (name.clone(), ready.clone())).unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)).unwrap());
    let tracker = shared_memory::tracker_pid().unwrap();
    kill_and_wait(tracker);
    (mine, name, h, tracker)
}

/// Issue 12.1: the tracker is killed, and then a process holding a block it registered is
/// killed too, with no registration in between (so nothing had noticed the dead tracker).
/// The name stays until the next use of the tracker by a process that had used the dead
/// one: the replacement takes over the dead tracker's state and unlinks the names of
/// owners that are gone before it answers, so the name is gone as soon as that use
/// returns.
#[test]
fn names_of_a_process_killed_after_its_tracker_are_unlinked_at_the_next_use() {
    multiproc::init();
    let (mine, name, h, tracker) = a_creator_whose_tracker_was_killed("killed_after_tracker");
    h.kill().unwrap();
    assert!(h.join().is_err());
    assert!(exists(&name), "nothing watched it meanwhile");
    let next = SharedMemory::create(None, 10).unwrap();
    assert_ne!(shared_memory::tracker_pid(), Some(tracker));
    assert!(!exists(&name), "{name} left in /dev/shm");
    next.unlink().unwrap();
    mine.unlink().unwrap();
}

/// Uses the tracker (so it holds the tracker's state), says which one, and ends normally
/// once `go` is set, without any other registration.
fn use_the_tracker_then_end((tracker, go): (Connection<u32>, Event)) {
    SharedMemory::create(None, 10).unwrap().unlink().unwrap();
    tracker
        .send(&shared_memory::tracker_pid().unwrap())
        .unwrap();
    assert!(go.wait_timeout(Duration::from_secs(60)).unwrap());
}

/// Issue 12.1: as above, but no process uses the tracker again: one that had used the
/// dead tracker hands its state to a replacement when it ends normally, so the name of
/// the killed process is gone once it has ended, although it held no name itself.
#[test]
fn names_of_a_process_killed_after_its_tracker_are_unlinked_when_a_user_ends() {
    multiproc::init();
    let name = unique("killed_after_tracker_exit");
    let (tracker, theirs) = multiproc::pipe::<u32>().unwrap();
    let (go, created) = (Event::new().unwrap(), Event::new().unwrap());
    let user = multiproc::spawn(use_the_tracker_then_end, (theirs, go.clone())).unwrap();
    let tracker = tracker.recv().unwrap();
    let h = multiproc::spawn(create_and_hang, (name.clone(), created.clone())).unwrap();
    assert!(created.wait_timeout(Duration::from_secs(30)).unwrap());
    kill_and_wait(tracker);
    h.kill().unwrap();
    assert!(h.join().is_err());
    assert!(exists(&name), "nothing watched it meanwhile");
    go.set();
    user.join().unwrap();
    assert!(!exists(&name), "{name} left in /dev/shm");
}

/// Issue 12.1: the tracker is killed while a process holding a block lives on; the
/// replacement (started by another process's use) takes its name over and watches it, so
/// when that process is killed later, the name is unlinked: gone by the end of the next
/// use of the tracker after its death (the tracker handles ended owners before messages).
#[test]
fn names_taken_over_from_a_killed_tracker_are_unlinked_when_their_owner_is_killed() {
    multiproc::init();
    let (mine, name, h, tracker) = a_creator_whose_tracker_was_killed("adopted_then_killed");
    let next = SharedMemory::create(None, 10).unwrap();
    assert_ne!(shared_memory::tracker_pid(), Some(tracker));
    assert!(exists(&name), "its owner lives: the name stays");
    h.kill().unwrap();
    assert!(h.join().is_err());
    next.unlink().unwrap();
    assert!(!exists(&name), "{name} left in /dev/shm");
    mine.unlink().unwrap();
}

/// Issue 12.2: a tracker this process started, killed on its own, is reaped at once
/// rather than left a zombie until the next `create` notices.
#[test]
fn a_killed_tracker_is_reaped_without_another_call() {
    multiproc::init();
    let a = SharedMemory::create(None, 100).unwrap();
    let t = shared_memory::tracker_pid().unwrap();
    rustix::process::kill_process(Pid::from_raw(t as i32).unwrap(), Signal::KILL).unwrap();
    assert!(
        common::eventually(Duration::from_secs(30), || common::stat(t).is_none()),
        "the killed tracker is left: {:?}",
        common::stat(t)
    );
    a.unlink().unwrap();
}
