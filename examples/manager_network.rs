//! A manager in network mode (Python's `BaseManager(address, authkey)`): the server
//! publishes a job queue and a results dict; workers connect by address and authkey (as
//! programs on other machines would), look the objects up by name and work on them.
//! A client with the wrong key is refused.

use multiproc::manager::{DictProxy, QueueProxy, Shared};
use multiproc::{Error, Manager};
use serde::{Deserialize, Serialize};

const AUTHKEY: &[u8] = b"change me";

/// A user type living in the server (Python's `BaseManager.register("Stats", Stats)`).
#[derive(Serialize, Deserialize, Default)]
struct Stats {
    jobs_done: u32,
}

impl Shared for Stats {
    type Request = ();
    type Reply = u32;
    fn handle(&mut self, _: ()) -> u32 {
        self.jobs_done += 1;
        self.jobs_done
    }
}

fn worker((address, id): (String, u32)) -> Result<u32, String> {
    work(&address, id).map_err(|e| e.to_string())
}

fn work(address: &str, id: u32) -> multiproc::Result<u32> {
    let manager = Manager::connect(address, AUTHKEY)?;
    let jobs: QueueProxy<Option<u64>> = manager.lookup("jobs")?;
    let results: DictProxy<u64, String> = manager.lookup("results")?;
    let stats = manager.lookup::<multiproc::manager::SharedProxy<Stats>>("stats")?;
    let mut done = 0;
    while let Some(n) = jobs.get()? {
        results.insert(n, format!("{n}² = {} (worker {id})", n * n))?;
        stats.call(())?;
        done += 1;
    }
    Ok(done)
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let server = Manager::builder()
        .address("127.0.0.1:0") // any free port; a fixed one works too
        .authkey(AUTHKEY)
        .register::<Stats>()
        .start()?;
    println!("manager listening on {}", server.address());

    let jobs = server.queue::<Option<u64>>()?;
    let results = server.dict::<u64, String>()?;
    let stats = server.create(Stats::default())?;
    server.publish("jobs", &jobs)?;
    server.publish("results", &results)?;
    server.publish("stats", &stats)?;

    let workers: Vec<_> = (0..2)
        .map(|id| multiproc::spawn(worker, (server.address().to_string(), id)))
        .collect::<Result<_, _>>()?;
    for n in 1..=6 {
        jobs.put(Some(n))?;
    }
    for _ in &workers {
        jobs.put(None)?; // one stop signal per worker
    }
    for w in workers {
        let done = w.join()?.map_err(|e| Error::Io(std::io::Error::other(e)))?;
        println!("a worker did {done} jobs");
    }
    let mut lines = results.items()?;
    lines.sort();
    for (_, line) in lines {
        println!("{line}");
    }
    println!("jobs done: {}", stats.get()?.jobs_done);

    match Manager::connect(server.address(), b"wrong key") {
        Err(Error::AuthenticationFailed) => println!("a client with the wrong key was refused"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
