//! Pipes and connections, within one process and across processes under every start method.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::*;
use multiproc::{pipe, pipe_simplex, Connection, Error, Process, StartMethod};

fn raw_writer(c: &Connection<impl Sized>) -> std::fs::File {
    std::fs::File::from(c.as_fd().try_clone_to_owned().unwrap())
}

#[test]
fn messages_never_merge_or_split() {
    multiproc::init();
    let (a, b) = pipe::<Vec<u8>>().unwrap();
    let sizes = [
        0usize,
        1,
        15,
        16,
        17,
        4095,
        65_535,
        65_536,
        65_537,
        1 << 20,
        3 << 20,
    ];
    let writer = std::thread::spawn(move || {
        for (i, &n) in sizes.iter().enumerate() {
            let v: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
            a.send_bytes(&v).unwrap();
            a.send(&v).unwrap();
        }
    });
    for (i, &n) in sizes.iter().enumerate() {
        let v: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        assert_eq!(b.recv_bytes().unwrap(), v, "raw message {i}");
        assert_eq!(b.recv().unwrap(), v, "typed message {i}");
    }
    writer.join().unwrap();
    assert!(matches!(b.recv(), Err(Error::Eof)));
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn simplex_direction_is_enforced() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<u32>().unwrap();
    assert!(matches!(rx.send(&1), Err(Error::InvalidOperation(_))));
    assert!(matches!(
        rx.send_bytes(b"x"),
        Err(Error::InvalidOperation(_))
    ));
    assert!(matches!(tx.recv(), Err(Error::InvalidOperation(_))));
    assert!(matches!(tx.poll(None), Err(Error::InvalidOperation(_))));
    tx.send(&9).unwrap();
    assert_eq!(rx.recv().unwrap(), 9);
    tx.close();
    assert!(matches!(rx.recv(), Err(Error::Eof)));
}

#[test]
fn poll_and_fileno() {
    multiproc::init();
    let (a, b) = pipe::<u8>().unwrap();
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    assert!(!b.poll(Some(Duration::from_millis(100))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(90));
    a.send(&1).unwrap();
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    // The raw descriptor works with poll(2), like Python's fileno().
    let mut fds = [rustix::event::PollFd::new(&b, rustix::event::PollFlags::IN)];
    assert_eq!(rustix::event::poll(&mut fds, None).unwrap(), 1);
    assert_eq!(b.recv().unwrap(), 1);
    drop(a);
    assert!(
        b.poll(Some(Duration::from_secs(5))).unwrap(),
        "EOF makes it readable"
    );
}

#[test]
fn garbage_bytes_give_codec_errors() {
    multiproc::init();
    // Raw bytes are written on the socket of a one-way pipe's writing end (a receiving end
    // hands out a stand-in descriptor for poll(2) instead of its socket). The socket
    // carries packets: each raw write is one, announced by no message.
    // Not a frame at all: an error for it, and the pipe goes on.
    let (b, a) = pipe_simplex::<String>().unwrap();
    raw_writer(&a)
        .write_all(b"this is not a multiproc frame!!")
        .unwrap();
    assert!(matches!(b.recv(), Err(Error::Codec(_))));
    a.send(&"after garbage".to_string()).unwrap();
    assert_eq!(b.recv().unwrap(), "after garbage");

    // A frame header claiming an absurd length: refused before allocating.
    let (b, a) = pipe_simplex::<String>().unwrap();
    let mut h = Vec::new();
    h.extend_from_slice(&0x3143_504du32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&u64::MAX.to_le_bytes());
    raw_writer(&a).write_all(&h).unwrap();
    assert!(matches!(b.recv(), Err(Error::Codec(_))));

    // A well-framed payload that is not a String: an error, and the stream stays usable.
    let (b, a) = pipe_simplex::<String>().unwrap();
    a.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
    a.send(&"fine".to_string()).unwrap();
    assert!(matches!(b.recv(), Err(Error::Codec(_))));
    assert_eq!(b.recv().unwrap(), "fine");

    // A frame announcing a length that never arrives: an error, then the end, not a hang.
    let (b, a) = pipe_simplex::<String>().unwrap();
    let mut h = Vec::new();
    h.extend_from_slice(&0x3143_504du32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&1000u64.to_le_bytes());
    h.extend_from_slice(b"short");
    raw_writer(&a).write_all(&h).unwrap();
    drop(a);
    assert!(matches!(b.recv(), Err(Error::Codec(_))));
    assert!(matches!(b.recv(), Err(Error::Eof)));
}

#[test]
fn send_to_closed_peer_is_an_error_not_sigpipe() {
    multiproc::init();
    let (a, b) = pipe::<u64>().unwrap();
    drop(b);
    match a.send(&1) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected BrokenPipe, got {other:?}"),
    }
}

#[test]
fn handles_outside_multiproc_channels_fail_clearly() {
    multiproc::init();
    let (a, _b) = pipe::<u8>().unwrap();
    assert!(matches!(multiproc::codec::encode(&a), Err(Error::Codec(_))));
}

#[test]
fn handles_in_messages_do_not_leak_descriptors() {
    multiproc::init();
    let (a, b) = pipe::<Connection<u8>>().unwrap();
    let before = fd_count();
    for _ in 0..200 {
        let (x, y) = pipe::<u8>().unwrap();
        a.send(&x).unwrap();
        drop(x);
        let x2 = b.recv().unwrap();
        x2.send(&5).unwrap();
        assert_eq!(y.recv().unwrap(), 5);
    }
    assert_eq!(fd_count(), before);
}

fn echo(conn: Connection<String>) {
    while let Ok(m) = conn.recv() {
        let done = m == "end";
        conn.send(&format!("echo {m}")).unwrap();
        if done {
            break;
        }
    }
}

fn sender((conn, n): (Connection<u64>, u64)) {
    for i in 0..n {
        conn.send(&i).unwrap();
    }
}

/// `n` bytes where byte `i` is `i % 251`, built at memcpy speed (debug builds too).
fn pattern(n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..251u32).map(|i| i as u8).collect();
    v.reserve(n);
    while v.len() < n {
        let k = (n - v.len()).min(v.len() / 251 * 251);
        v.extend_from_within(..k);
    }
    v.truncate(n);
    v
}

/// Sends `mib` MiB, setting `sending` just before the send starts.
fn big_sender((conn, mib, sending): (Connection<()>, usize, multiproc::Event)) {
    let big = pattern(mib << 20);
    sending.set();
    conn.send_bytes(&big).unwrap();
}

/// Receives a connection through a pipe, then uses it.
fn relay((inbox, count): (Connection<Connection<u64>>, u64)) {
    let out = inbox.recv().unwrap();
    for i in 0..count {
        out.send(&(i * 10)).unwrap();
    }
}

fn loop_forever(conn: Connection<()>) {
    conn.send_bytes(b"ready").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

macro_rules! method_tests {
    ($modname:ident, $method:expr) => {
        mod $modname {
            use super::*;

            fn start<A>(f: fn(A), args: A) -> Process
            where
                A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                if $method == StartMethod::Fork {
                    allow_fork();
                }
                let mut p = Process::new(f, args).with_start_method($method);
                p.start().unwrap();
                p
            }

            #[test]
            fn duplex_echo_until_end() {
                multiproc::init();
                let (ours, theirs) = pipe::<String>().unwrap();
                let p = start(echo, theirs);
                for m in ["hello", "world", "end"] {
                    ours.send(&m.to_string()).unwrap();
                    assert_eq!(ours.recv().unwrap(), format!("echo {m}"));
                }
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(0));
                let r = ours.recv();
                assert!(matches!(r, Err(Error::Eof)), "{r:?}");
            }

            #[test]
            fn eof_after_child_exits_and_pipe_drained() {
                multiproc::init();
                let (rx, tx) = pipe_simplex::<u64>().unwrap();
                let p = start(sender, (tx, 1000));
                for i in 0..1000 {
                    assert_eq!(rx.recv().unwrap(), i);
                }
                assert!(matches!(rx.recv(), Err(Error::Eof)));
                p.join().unwrap();
            }

            #[test]
            fn connection_travels_through_a_pipe() {
                multiproc::init();
                let (inbox_rx, inbox_tx) = pipe_simplex::<Connection<u64>>().unwrap();
                let p = start(relay, (inbox_rx, 3));
                let (rx, tx) = pipe_simplex::<u64>().unwrap();
                inbox_tx.send(&tx).unwrap();
                drop(tx);
                assert_eq!(
                    (0..3).map(|_| rx.recv().unwrap()).collect::<Vec<_>>(),
                    vec![0, 10, 20]
                );
                assert!(matches!(rx.recv(), Err(Error::Eof)));
                p.join().unwrap();
            }

            #[test]
            fn peer_killed_mid_message() {
                multiproc::init();
                let (rx, tx) = pipe_simplex::<()>().unwrap();
                let sending = multiproc::Event::new().unwrap();
                let p = start(big_sender, (tx, 64, sending.clone()));
                // Killed as its send begins: the message arrives whole or not at all,
                // then the end of file.
                assert!(sending.wait_timeout(Duration::from_secs(30)).unwrap());
                p.kill().unwrap();
                p.join().unwrap();
                assert!(
                    rx.poll(Some(Duration::from_secs(30))).unwrap(),
                    "neither a message nor the end of file"
                );
                match rx.recv_bytes() {
                    Ok(v) => {
                        assert!(v == pattern(64 << 20), "a cut or corrupted message");
                        assert!(matches!(rx.recv_bytes(), Err(Error::Eof)));
                    }
                    Err(Error::Eof) => {}
                    Err(e) => panic!("expected the message or the end, got {e:?}"),
                }
            }

            #[test]
            fn peer_killed_while_idle_gives_eof() {
                multiproc::init();
                let (rx, tx) = pipe_simplex::<()>().unwrap();
                let p = start(loop_forever, tx);
                assert_eq!(rx.recv_bytes().unwrap(), b"ready");
                p.kill().unwrap();
                assert!(matches!(rx.recv_bytes(), Err(Error::Eof)));
                p.join().unwrap();
            }
        }
    };
}

method_tests!(forkserver, StartMethod::ForkServer);
method_tests!(spawn, StartMethod::Spawn);
method_tests!(fork, StartMethod::Fork);

#[test]
fn one_gib_message_from_a_child() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<()>().unwrap();
    let mut p = Process::new(big_sender, (tx, 1024, multiproc::Event::new().unwrap()));
    p.start().unwrap();
    let v = rx.recv_bytes().unwrap();
    assert_eq!(v.len(), 1 << 30);
    for i in (0..v.len()).step_by(4099) {
        assert_eq!(v[i], (i % 251) as u8);
    }
    assert_eq!(v[v.len() - 1], ((v.len() - 1) % 251) as u8);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn connection_clones_share_one_end() {
    multiproc::init();
    let (a, b) = multiproc::pipe::<u32>().unwrap();
    let a2 = a.clone();
    let t = std::thread::spawn(move || {
        for i in 0..1000 {
            a2.send(&i).unwrap();
        }
    });
    for i in 1000..2000 {
        a.send(&i).unwrap();
    }
    t.join().unwrap();
    let mut got: Vec<u32> = (0..2000).map(|_| b.recv().unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
    drop(a);
    // One clone was dropped above (a2, with its thread); now the last one is gone too.
    assert!(matches!(b.recv(), Err(Error::Eof)));
}

// --- the shared-memory lanes under a pipe ------------------------------------------------
// Small messages travel through a ring in shared memory, large ones and those carrying
// handles through the socket; the tests below check that the two ways keep one order, that
// several processes can share an end, and that every fault still ends in a clear error.

/// A tagged message: sender id, sequence number, body, maybe a handle.
type Tagged = (u32, u32, Vec<u8>, Option<Connection<u8>>);

/// Sends `n` messages tagged with `id`: small ones, with every 97th a large one and every
/// 89th carrying a handle, so that both paths interleave.
fn tagged_sender((conn, id, n): (Connection<Tagged>, u32, u32)) {
    for i in 0..n {
        let body = if i % 97 == 0 {
            vec![id as u8; 200_000]
        } else {
            vec![id as u8; (i % 40) as usize]
        };
        let handle = (i % 89 == 0).then(|| pipe::<u8>().unwrap().0);
        conn.send(&(id, i, body, handle)).unwrap();
    }
}

#[test]
fn inline_and_socket_messages_keep_one_order() {
    multiproc::init();
    let (rx, tx) = pipe_simplex().unwrap();
    let mut p = Process::new(tagged_sender, (tx, 7, 2000));
    p.start().unwrap();
    for i in 0..2000u32 {
        let (id, seq, body, handle) = rx.recv().unwrap();
        assert_eq!((id, seq), (7, i));
        let want = if i % 97 == 0 {
            200_000
        } else {
            (i % 40) as usize
        };
        assert_eq!(body.len(), want);
        assert!(body.iter().all(|&b| b == 7));
        assert_eq!(handle.is_some(), i % 89 == 0, "message {i}");
    }
    p.join().unwrap();
    assert!(matches!(rx.recv(), Err(Error::Eof)));
}

#[test]
fn several_processes_share_one_sending_end() {
    multiproc::init();
    let (rx, tx) = pipe_simplex().unwrap();
    let n = 1500u32;
    let mut ps: Vec<Process> = (0..3)
        .map(|id| Process::new(tagged_sender, (tx.clone(), id, n)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    drop(tx);
    let mut next = [0u32; 3];
    for _ in 0..3 * n {
        let (id, seq, body, _) = rx.recv().unwrap();
        // Each sender's messages arrive whole and in that sender's order.
        assert_eq!(seq, next[id as usize], "sender {id}");
        next[id as usize] += 1;
        assert!(body.iter().all(|&b| b == id as u8));
    }
    for p in &ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    assert!(matches!(rx.recv(), Err(Error::Eof)));
}

/// Receives until end of file; returns how many messages and their sum.
fn draining_receiver(conn: Connection<u64>) -> (u64, u64) {
    let (mut n, mut sum) = (0, 0);
    while let Ok(v) = conn.recv() {
        n += 1;
        sum += v;
    }
    (n, sum)
}

#[test]
fn several_processes_share_one_receiving_end() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<u64>().unwrap();
    let hs: Vec<_> = (0..3)
        .map(|_| multiproc::spawn(draining_receiver, rx.clone()).unwrap())
        .collect();
    drop(rx);
    let count = 30_000u64;
    for i in 0..count {
        tx.send(&i).unwrap();
    }
    drop(tx);
    let (mut n, mut sum) = (0, 0);
    for h in hs {
        let (k, s) = h.join().unwrap();
        n += k;
        sum += s;
    }
    // Every message was taken by exactly one receiver.
    assert_eq!((n, sum), (count, count * (count - 1) / 2));
}

#[test]
fn a_full_pipe_waits_for_the_reader() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<Vec<u8>>().unwrap();
    // Far more than the ring and the socket buffer hold together: the writer must wait.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        tid_tx.send(my_tid()).unwrap();
        for i in 0..4000u32 {
            tx.send(&vec![i as u8; 1000]).unwrap();
        }
    });
    // The writer goes to sleep in a send (it has nothing else to wait for) and stays there.
    let tid = tid_rx.recv().unwrap();
    let me = std::process::id();
    assert!(eventually(Duration::from_secs(30), || writer.is_finished()
        || thread_asleep(me, tid)));
    assert!(
        !writer.is_finished(),
        "the writer cannot have finished: nobody read"
    );
    for i in 0..4000u32 {
        assert_eq!(rx.recv().unwrap(), vec![i as u8; 1000]);
    }
    writer.join().unwrap();
}

fn fill_forever((conn, filling): (Connection<u64>, multiproc::Event)) {
    filling.set();
    let mut i = 0;
    loop {
        if let Err(e) = conn.send(&i) {
            // Report how it failed through the exit code.
            let broken = matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe);
            std::process::exit(if broken { 3 } else { 4 });
        }
        i += 1;
    }
}

fn read_one_then_hang(conn: Connection<u64>) {
    conn.recv().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn writer_to_a_killed_reader_gets_broken_pipe() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<u64>().unwrap();
    let mut reader = Process::new(read_one_then_hang, rx);
    reader.start().unwrap();
    let filling = multiproc::Event::new().unwrap();
    let mut writer = Process::new(fill_forever, (tx, filling.clone()));
    writer.start().unwrap();
    // Once the writer has filled the pipe and sleeps waiting for the reader, kill the reader.
    filling.wait().unwrap();
    until_asleep(writer.pid().unwrap());
    assert!(writer.is_alive());
    reader.kill().unwrap();
    reader.join().unwrap();
    assert!(
        writer.join_timeout(Duration::from_secs(10)).unwrap(),
        "the writer hangs"
    );
    assert_eq!(writer.exitcode(), Some(3));
}

#[test]
fn sending_after_the_reader_was_killed_fails_soon() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<u64>().unwrap();
    let mut reader = Process::new(read_one_then_hang, rx);
    reader.start().unwrap();
    tx.send(&0).unwrap();
    reader.kill().unwrap();
    reader.join().unwrap();
    // The ring has room, but the reader is gone: within a few milliseconds sends fail.
    let t = Instant::now();
    let err = loop {
        match tx.send(&1) {
            Ok(()) => assert!(t.elapsed() < Duration::from_secs(5), "sends never fail"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "{err:?}"
    );
}

#[test]
fn descriptor_readiness_follows_the_messages() {
    multiproc::init();
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ready = |c: &Connection<u32>| {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut fds = [PollFd::new(c, PollFlags::IN)];
        poll(&mut fds, Some(&zero)).unwrap() == 1
    };
    let (a, b) = pipe::<u32>().unwrap();
    // Sent before the descriptor was asked for: still seen by poll(2).
    a.send(&1).unwrap();
    a.send(&2).unwrap();
    assert!(ready(&b));
    assert_eq!(b.recv().unwrap(), 1);
    assert!(ready(&b));
    assert_eq!(b.recv().unwrap(), 2);
    assert!(!ready(&b), "nothing left, yet poll(2) says readable");
    // Sent after: the same.
    a.send(&3).unwrap();
    assert!(ready(&b));
    assert_eq!(b.recv().unwrap(), 3);
    assert!(!ready(&b));
    drop(a);
    assert!(ready(&b), "end of file makes it readable");
    assert!(matches!(b.recv(), Err(Error::Eof)));
}

fn send_huge_then_wait((conn, sending): (Connection<()>, multiproc::Event)) {
    let huge = pattern(64 << 20);
    sending.set();
    let _ = conn.send_bytes(&huge);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Receives one message on another thread, so that a receiver that hangs fails the test
/// instead of hanging the suite.
fn recv_within(conn: &Connection<()>, limit: Duration) -> multiproc::Result<Vec<u8>> {
    let c = conn.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.recv_bytes());
    });
    rx.recv_timeout(limit)
        .expect("the receiver hangs: no message, no error")
}

const PATIENCE: Duration = Duration::from_secs(60);

/// Starts `f` in a process that shares the end `conn`, and waits until it sets its event.
fn start_sharing(f: fn((Connection<()>, multiproc::Event)), conn: Connection<()>) -> Process {
    let event = multiproc::Event::new().unwrap();
    let mut p = Process::new(f, (conn, event.clone()));
    p.start().unwrap();
    assert!(event.wait_timeout(PATIENCE).unwrap());
    p
}

/// Receives the message that a killed process was sending or receiving when it died, if it
/// is there (it must then be whole: `whole`), and the message after it; returns the latter.
fn skip_whole_or_nothing(rx: &Connection<()>, whole: &[u8], round: u32) -> Vec<u8> {
    let first = recv_within(rx, PATIENCE).unwrap();
    if first.len() != whole.len() {
        return first;
    }
    assert!(first == whole, "round {round}: a corrupted message");
    recv_within(rx, PATIENCE).unwrap()
}

/// Starts `victim` in a process that shares the sending end `tx`, kills it (once it sleeps,
/// if `asleep`), then sends "after" and `mine` from a thread of this process (should the
/// sends block, the test's receiver fails instead of this thread hanging the test).
fn kill_a_sender_then_send(
    tx: &Connection<()>,
    victim: fn((Connection<()>, multiproc::Event)),
    asleep: bool,
    mine: &[u8],
) -> std::thread::JoinHandle<multiproc::Result<()>> {
    let a = start_sharing(victim, tx.clone());
    if asleep {
        let pid = a.pid().unwrap();
        assert!(eventually(PATIENCE, || matches!(stat(pid), Some(('S', _)))));
    }
    a.kill().unwrap();
    a.join().unwrap();
    let (tx, mine) = (tx.clone(), mine.to_vec());
    std::thread::spawn(move || {
        tx.send_bytes(b"after")?;
        tx.send_bytes(&mine)
    })
}

#[test]
fn a_sender_killed_mid_message_leaves_the_pipe_working_for_the_others() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<()>().unwrap();
    let killed = pattern(64 << 20);
    let mut mine = pattern(3 << 20);
    mine.reverse();
    for round in 0..3 {
        // Another process shares the sending end and sends 64 MiB while nobody reads. It is
        // killed as its send begins (rounds 0 and 1), or once it sleeps (round 2): on a
        // byte stream it would be stuck in the middle of the frame then.
        let survivor = kill_a_sender_then_send(&tx, send_huge_then_wait, round == 2, &mine);
        // The receiver gets the killed sender's message whole or not at all, then the
        // survivor's, in order: never a cut message, never a hang.
        let next = skip_whole_or_nothing(&rx, &killed, round);
        assert_eq!(next, b"after", "round {round}");
        assert!(recv_within(&rx, PATIENCE).unwrap() == mine, "round {round}");
        survivor.join().unwrap().unwrap();
        assert!(!rx.poll(Some(Duration::ZERO)).unwrap(), "nothing else");
    }
    drop(tx);
    assert!(matches!(recv_within(&rx, PATIENCE), Err(Error::Eof)));
}

/// Sends 1.5 MiB messages for ever (through the lanes' large-message area), setting
/// `sending` just before the first.
fn send_big_forever((conn, sending): (Connection<()>, multiproc::Event)) {
    let m = pattern(3 << 19);
    sending.set();
    while conn.send_bytes(&m).is_ok() {}
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_sender_killed_in_the_large_message_area_leaves_the_pipe_working() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<()>().unwrap();
    let theirs = pattern(3 << 19);
    let mut mine = pattern((1 << 20) + 3);
    mine.reverse();
    for round in 0..4 {
        // Another process shares the sending end and fills the pipe with large messages;
        // it is killed while it sends (rounds 0 and 1: it may be copying into the area),
        // or once it sleeps waiting for room (rounds 2 and 3, holding the senders' lock).
        let survivor = kill_a_sender_then_send(&tx, send_big_forever, round >= 2, &mine);
        // Whole messages of the killed sender (any number), then the survivor's in order.
        let mut whole = 0;
        let next = loop {
            let m = recv_within(&rx, PATIENCE).unwrap();
            if m.len() != theirs.len() {
                break m;
            }
            assert!(m == theirs, "round {round}: a corrupted message");
            whole += 1;
        };
        assert_eq!(
            next, b"after",
            "round {round} (after {whole} whole messages)"
        );
        assert!(recv_within(&rx, PATIENCE).unwrap() == mine, "round {round}");
        survivor.join().unwrap().unwrap();
        assert!(!rx.poll(Some(Duration::ZERO)).unwrap(), "nothing else");
    }
}

/// Receives for ever, setting `ready` before its first receive.
fn receive_forever((conn, ready): (Connection<()>, multiproc::Event)) {
    ready.set();
    while conn.recv_bytes().is_ok() {}
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_receiver_killed_mid_message_does_not_poison_the_others() {
    receiver_killed_mid_message(64 << 20, 5 << 20, receive_forever);
}

#[test]
fn a_receiver_killed_in_the_large_message_area_does_not_poison_the_others() {
    // Messages past a record's size and within the lanes' large-message area (2 MiB). They
    // are taken so fast that a victim receiving for ever could take all three before the
    // kill lands: this one takes at most the first.
    receiver_killed_mid_message(3 << 19, (1 << 20) + 5, receive_one_then_hang);
}

/// Receives one message (setting `ready` before), then hangs.
fn receive_one_then_hang((conn, ready): (Connection<()>, multiproc::Event)) {
    ready.set();
    let _ = conn.recv_bytes();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn receiver_killed_mid_message(
    big_len: usize,
    second_len: usize,
    victim: fn((Connection<()>, multiproc::Event)),
) {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<()>().unwrap();
    let big = pattern(big_len);
    let mut second = pattern(second_len);
    second.reverse();
    for round in 0..3 {
        // Another process shares the receiving end and waits in `recv`.
        let victim = start_sharing(victim, rx.clone());
        // A thread sends a large message, a small one and another large one; the victim
        // is killed as the first send begins (on a byte stream: while it reads it).
        let (started_tx, started) = std::sync::mpsc::channel();
        let sender = {
            let (tx, big, second) = (tx.clone(), big.clone(), second.clone());
            std::thread::spawn(move || {
                started_tx.send(()).unwrap();
                tx.send_bytes(&big)?;
                tx.send_bytes(b"between")?;
                tx.send_bytes(&second)
            })
        };
        started.recv_timeout(PATIENCE).unwrap();
        victim.kill().unwrap();
        victim.join().unwrap();
        // The survivor (this process) goes on with whole messages: the first one unless the
        // victim took it, then the others; never garbage.
        let next = skip_whole_or_nothing(&rx, &big, round);
        assert_eq!(next, b"between", "round {round}");
        assert!(
            recv_within(&rx, PATIENCE).unwrap() == second,
            "round {round}"
        );
        sender.join().unwrap().unwrap();
    }
}

/// Echoes every message back until the end of file.
fn echo_bytes(conn: Connection<()>) {
    while let Ok(v) = conn.recv_bytes() {
        conn.send_bytes(&v).unwrap();
    }
}

#[test]
fn large_messages_round_trip_bit_exact_without_descriptor_growth() {
    multiproc::init();
    let (a, b) = pipe::<()>().unwrap();
    let h = multiproc::spawn(echo_bytes, b).unwrap();
    // Around the size where messages leave the ring, and well past it.
    let sizes = [
        0,
        1,
        (32 << 10) - 9,
        (32 << 10) - 8,
        32 << 10,
        1 << 20,
        (2 << 20) - 1,
        2 << 20,
        (2 << 20) + 1,
        (4 << 20) + 3,
    ];
    let round = |a: &Connection<()>| {
        for &n in &sizes {
            let mut v = pattern(n);
            v.rotate_left(n / 3);
            a.send_bytes(&v).unwrap();
            assert!(recv_within(a, PATIENCE).unwrap() == v, "{n} bytes");
        }
    };
    round(&a);
    let before = fd_count();
    for _ in 0..20 {
        round(&a);
    }
    // Up to the spare message files this process keeps (bounded), not one per message.
    assert!(
        fd_count() <= before + common::SPARE_MESSAGE_FILES,
        "descriptors grow with large messages: {before} then {}",
        fd_count()
    );
    drop(a);
    h.join().unwrap();
}

// --- recv_bytes_into, part of a buffer, descriptors ---------------------------------------------

fn send_parts(conn: Connection<()>) {
    let buf: Vec<u8> = (0..100).collect();
    conn.send_bytes(&buf[10..10 + 20]).unwrap();
    conn.send_bytes(&buf).unwrap();
    conn.send_bytes(&[]).unwrap();
}

#[test]
fn recv_bytes_into_and_part_of_a_buffer_across_processes() {
    multiproc::init();
    let (ours, theirs) = pipe::<()>().unwrap();
    let h = multiproc::spawn(send_parts, theirs).unwrap();
    let mut buf = [0xeeu8; 64];
    // Into an offset of the buffer.
    assert_eq!(ours.recv_bytes_into(&mut buf[4..]).unwrap(), 20);
    assert_eq!(&buf[4..24], &(10..30).collect::<Vec<u8>>()[..]);
    assert_eq!(buf[..4], [0xee; 4]);
    assert_eq!(buf[24], 0xee);
    // Too long: the whole message comes back in the error; the buffer is untouched and
    // the next message is still in order.
    let before = buf;
    match ours.recv_bytes_into(&mut buf) {
        Err(Error::BufferTooShort { message }) => {
            assert_eq!(message, (0..100).collect::<Vec<u8>>())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(buf, before);
    assert_eq!(ours.recv_bytes_into(&mut buf).unwrap(), 0);
    h.join().unwrap();
    assert!(matches!(ours.recv_bytes_into(&mut buf), Err(Error::Eof)));
}

/// Receives a descriptor as a handle, and another inside a value; writes on both.
fn write_on_handles(conn: Connection<(String, multiproc::connection::Fd)>) {
    let first = conn.recv_handle().unwrap();
    let (text, second) = conn.recv().unwrap();
    writeln!(std::fs::File::from(first), "one").unwrap();
    writeln!(std::fs::File::from(second.into_inner()), "{text}").unwrap();
}

#[test]
fn file_descriptors_travel_as_handles_and_inside_messages() {
    multiproc::init();
    let (ours, theirs) = pipe::<(String, multiproc::connection::Fd)>().unwrap();
    let h = multiproc::spawn(write_on_handles, theirs).unwrap();
    let (mut r1, w1) = std::os::unix::net::UnixStream::pair().unwrap();
    let (mut r2, w2) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.send_handle(&w1).unwrap();
    ours.send(&("two".to_string(), multiproc::connection::Fd::new(w2.into())))
        .unwrap();
    drop(w1);
    h.join().unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut r1, &mut s).unwrap();
    assert_eq!(s, "one\n");
    s.clear();
    std::io::Read::read_to_string(&mut r2, &mut s).unwrap();
    assert_eq!(s, "two\n");
    drop((ours, r1, r2));
    // Received descriptors are not leaked by failed receives either.
    let fds = fd_count();
    // A message without a descriptor is not a handle.
    let (a, b) = pipe::<(String, multiproc::connection::Fd)>().unwrap();
    a.send_bytes(b"x").unwrap();
    assert!(matches!(b.recv_handle(), Err(Error::Codec(_))));
    // A descriptor cannot be encoded outside a channel.
    let f = std::fs::File::open("/dev/null").unwrap();
    assert!(matches!(
        multiproc::codec::encode(&multiproc::connection::Fd::new(f.into())),
        Err(Error::Codec(_))
    ));
    drop((a, b));
    assert_eq!(fd_count(), fds);
}

/// Takes messages for ever from a shared end; says it is ready first.
fn take_forever((conn, ready): (Connection<()>, multiproc::Event)) {
    ready.set();
    while conn.recv_bytes().is_ok() {}
}

/// Message `i` of the random-kill test: its number, then a size that travels each of a
/// pipe's ways (a ring record, the large-message area, a sealed memory file).
fn numbered(i: u64) -> Vec<u8> {
    let len = [16, 100 << 10, 3 << 20][(i % 3) as usize];
    let mut m = vec![i as u8; len];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m
}

/// Receivers sharing one end, SIGKILLed at random moments while messages of every size
/// stream in: whatever is left afterwards comes out whole, `poll` says ready only when a
/// message can be received at once, and a message sent after the last kill arrives.
#[test]
fn receivers_killed_at_random_moments_leave_the_pipe_working() {
    multiproc::init();
    let (rx, tx) = pipe_simplex::<()>().unwrap();
    let mut rng = common::Rng::new();
    let mut below = |n: u64| rng.below(n);
    let mut next = 0u64;
    for _ in 0..8 {
        let a = start_sharing(take_forever, rx.clone());
        let b = start_sharing(take_forever, rx.clone());
        // Enough that the receivers are busy when the kills land; a full pipe would wait.
        for _ in 0..below(12) + 1 {
            tx.send_bytes(&numbered(next)).unwrap();
            next += 1;
        }
        std::thread::sleep(Duration::from_micros(below(3000)));
        a.kill().unwrap();
        std::thread::sleep(Duration::from_micros(below(1000)));
        b.kill().unwrap();
        a.join().unwrap();
        b.join().unwrap();
        // What the dead left: each message whole; poll never promises one that is not there.
        while rx.poll(Some(Duration::ZERO)).unwrap() {
            let m = recv_within(&rx, PATIENCE).unwrap();
            let i = u64::from_le_bytes(m[..8].try_into().unwrap());
            assert!(m == numbered(i), "message {i} is not whole");
        }
        tx.send_bytes(b"after the kills").unwrap();
        assert!(rx.poll(Some(PATIENCE)).unwrap());
        assert_eq!(recv_within(&rx, PATIENCE).unwrap(), b"after the kills");
    }
}
