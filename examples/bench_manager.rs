//! Manager benchmark workloads (side by side with `benches/py/manager.py`):
//! list append, dict set+get and proxied lock acquire/release, each run in a child process
//! through a proxy passed in its arguments. Prints µs per operation.
//!
//! `cargo run --release --example bench_manager [ops]`

use std::time::Instant;

use multiproc::manager::{DictProxy, ListProxy, LockProxy};
use multiproc::Manager;

fn list_append((l, n): (ListProxy<(String, u32)>, u32)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        l.push(("Jeff".to_string(), i)).unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn dict_set_get((d, n): (DictProxy<u32, u32>, u32)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        d.insert(i % 1024, i).unwrap();
        std::hint::black_box(d.get(&(i % 1024)).unwrap());
    }
    // One "op" = one set + one get, as in the Python script.
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn lock_cycle((l, n): (LockProxy, u32)) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        l.acquire().unwrap();
        l.release().unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let m = Manager::start()?;
    let l = m.list(Vec::<(String, u32)>::new())?;
    let d = m.dict::<u32, u32>()?;
    let lock = m.lock()?;
    // Warm-up run, then the measured one (best of 3).
    let best = |f: &dyn Fn() -> multiproc::Result<f64>| -> multiproc::Result<f64> {
        let mut b = f64::MAX;
        for _ in 0..3 {
            b = b.min(f()?);
        }
        Ok(b)
    };
    let la = best(&|| multiproc::spawn(list_append, (l.clone(), n))?.join())?;
    let ds = best(&|| multiproc::spawn(dict_set_get, (d.clone(), n))?.join())?;
    let lk = best(&|| multiproc::spawn(lock_cycle, (lock.clone(), n))?.join())?;
    let net = Manager::serve("127.0.0.1:0", b"bench")?;
    let nl = net.list(Vec::<(String, u32)>::new())?;
    let tcp = best(&|| multiproc::spawn(list_append, (nl.clone(), n))?.join())?;
    println!("manager_list_append_child   {la:8.2} us/op");
    println!("manager_list_append_tcp     {tcp:8.2} us/op (network mode, 127.0.0.1)");
    println!("manager_dict_set_get_child  {ds:8.2} us/op (set + get)");
    println!("manager_lock_cycle_child    {lk:8.2} us/op (acquire + release)");
    Ok(())
}
