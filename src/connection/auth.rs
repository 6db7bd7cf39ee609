//! Mutual authentication with a shared key, as Python's `multiprocessing.connection`
//! (`deliver_challenge` / `answer_challenge`, HMAC-SHA256 since Python 3.12).
//!
//! The side that *delivers* a challenge sends a fresh random nonce; the other side answers
//! with `HMAC-SHA256(authkey, challenge)`; the deliverer checks it in constant time and
//! says welcome or failure. Each side challenges the other (the listener first), so both
//! learn that the peer knows the key, and neither ever sends the key itself.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::ipc::RawConn;
use crate::{Error, Result};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Sent by a server that refuses a connection because it has too many (instead of a
/// challenge, or of its welcome): the client is told so, not that its key is wrong.
const BUSY: &[u8] = b"#BUSY#";
const ALGO: &[u8] = b"{sha256}";
const NONCE_LEN: usize = 40;
/// Largest frame accepted while authenticating: every message of the handshake is tiny.
pub(crate) const HANDSHAKE_MAX_FRAME: u64 = 256;

fn mac(authkey: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(authkey)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(message);
    m
}

/// Receives one message of the handshake. Bytes that are not a frame of ours (garbage,
/// another protocol, a frame longer than the handshake's limit, handles announced) mean
/// that the peer does not speak the protocol: an [`Error::AuthenticationFailed`], as
/// Python raises `AuthenticationError` for a peer whose messages are not the expected
/// ones. End of stream and time-outs stay what they are.
fn recv_message(conn: &RawConn) -> Result<Vec<u8>> {
    conn.recv_bytes().map_err(|e| match e {
        Error::Codec(_) => Error::AuthenticationFailed,
        e => e,
    })
}

/// Sends a challenge and checks the answer. Tells the peer the outcome.
pub(crate) fn deliver_challenge(conn: &RawConn, authkey: &[u8]) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::Io(std::io::Error::other(format!("no randomness: {e}"))))?;
    let mut message = Vec::with_capacity(ALGO.len() + NONCE_LEN);
    message.extend_from_slice(ALGO);
    message.extend_from_slice(&nonce);
    let mut frame = CHALLENGE.to_vec();
    frame.extend_from_slice(&message);
    conn.send_bytes(&frame, &[])?;
    let response = recv_message(conn)?;
    let ok = match response.strip_prefix(ALGO) {
        Some(digest) => mac(authkey, &message).verify_slice(digest).is_ok(),
        None => false,
    };
    if ok {
        conn.send_bytes(WELCOME, &[])?;
        Ok(())
    } else {
        let _ = conn.send_bytes(FAILURE, &[]);
        Err(Error::AuthenticationFailed)
    }
}

/// Answers the peer's challenge and reads the verdict.
/// Tells a client, before hanging up, that the server is too busy to take it.
pub(crate) fn send_busy(conn: &RawConn) {
    let _ = conn.send_bytes(BUSY, &[]);
}

/// The error for a server that refused us: busy, or (anything else) our key.
fn refused(frame: &[u8]) -> Error {
    if frame == BUSY {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "the server is busy (too many connections waiting to authenticate); try again",
        ))
    } else {
        Error::AuthenticationFailed
    }
}

pub(crate) fn answer_challenge(conn: &RawConn, authkey: &[u8]) -> Result<()> {
    let frame = match recv_message(conn) {
        Ok(f) => f,
        // The peer hung up instead of challenging us: it refused us.
        Err(Error::Eof) => return Err(Error::AuthenticationFailed),
        Err(e) => return Err(e),
    };
    let Some(message) = frame.strip_prefix(CHALLENGE) else {
        return Err(refused(&frame));
    };
    if !message.starts_with(ALGO) || message.len() < ALGO.len() + 16 {
        return Err(Error::AuthenticationFailed);
    }
    let digest = mac(authkey, message).finalize().into_bytes();
    let mut reply = ALGO.to_vec();
    reply.extend_from_slice(&digest);
    conn.send_bytes(&reply, &[])?;
    match recv_message(conn) {
        Ok(v) if v == WELCOME => Ok(()),
        Ok(v) => Err(refused(&v)),
        Err(Error::Eof) => Err(Error::AuthenticationFailed),
        Err(Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Err(Error::AuthenticationFailed)
        }
        Err(e) => Err(e),
    }
}

/// The listening side: challenge the peer, then answer its challenge.
pub(crate) fn server_handshake(conn: &RawConn, authkey: &[u8]) -> Result<()> {
    deliver_challenge(conn, authkey)?;
    answer_challenge(conn, authkey)
}

/// The connecting side: answer the listener's challenge, then challenge it.
pub(crate) fn client_handshake(conn: &RawConn, authkey: &[u8]) -> Result<()> {
    answer_challenge(conn, authkey)?;
    deliver_challenge(conn, authkey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(server_key: &'static [u8], client_key: &'static [u8]) -> (Result<()>, Result<()>) {
        let (a, b) = RawConn::pair().unwrap();
        let t = std::thread::spawn(move || server_handshake(&a, server_key));
        let c = client_handshake(&b, client_key);
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_key_passes_both_ways() {
        let (s, c) = run(b"secret", b"secret");
        assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (s, c) = run(b"secret", b"guess");
        assert!(matches!(s, Err(Error::AuthenticationFailed)), "{s:?}");
        assert!(matches!(c, Err(Error::AuthenticationFailed)), "{c:?}");
    }

    #[test]
    fn a_busy_server_is_not_a_wrong_key() {
        let (a, b) = RawConn::pair().unwrap();
        send_busy(&a);
        match client_handshake(&b, b"k") {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                assert!(e.to_string().contains("busy"), "{e}");
            }
            other => panic!("expected a busy refusal, got {other:?}"),
        }
    }

    #[test]
    fn garbage_answer_is_refused() {
        let (a, b) = RawConn::pair().unwrap();
        let t = std::thread::spawn(move || deliver_challenge(&a, b"k"));
        let _challenge = b.recv_bytes().unwrap();
        b.send_bytes(b"not an answer", &[]).unwrap();
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::AuthenticationFailed)
        ));
        assert_eq!(b.recv_bytes().unwrap(), FAILURE);
    }
}
