//! Reproduces the notebook's Pipe program (seed 003, "notebook", cells In [27]–[30]): one
//! process sends messages through a pipe, the other prints them until it receives "end".
//!
//! ```python
//! msgs=["hey","hello","hru?","end"]
//!
//! def send_msg(conn,msgs):
//!     for msg in msgs:
//!         conn.send(msg)
//!     conn.close()
//!
//! def rcv_msg(conn):
//!     while(1):
//!         msg=conn.recv()
//!         if msg=="end":
//!             break
//!         print(msg)
//!
//! parent_conn,child_conn=multiprocessing.Pipe()
//! p1 = multiprocessing.Process(target=send_msg,args=(parent_conn,msgs))
//! p2 = multiprocessing.Process(target=rcv_msg,args=(child_conn,))
//! p1.start()
//! p2.start()
//! p1.join()
//! p2.join()
//! ```
//!
//! ```text
//! hey
//! hello
//! hru?
//! ```

use multiproc::{Connection, Process};

fn send_msg((conn, msgs): (Connection<String>, Vec<String>)) {
    for msg in &msgs {
        if let Err(e) = conn.send(msg) {
            eprintln!("send failed: {e}");
            return;
        }
    }
    conn.close();
}

fn rcv_msg(conn: Connection<String>) {
    loop {
        let msg = match conn.recv() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("recv failed: {e}");
                return;
            }
        };
        if msg == "end" {
            break;
        }
        println!("{msg}");
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let msgs: Vec<String> = ["hey", "hello", "hru?", "end"].map(String::from).to_vec();

    let (parent_conn, child_conn) = multiproc::pipe::<String>()?;
    let mut p1 = Process::new(send_msg, (parent_conn, msgs));
    let mut p2 = Process::new(rcv_msg, child_conn);
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
