use multiproc::manager::ListProxy;
use std::time::Instant;
fn ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
fn main() {
    multiproc::init();
    let m = multiproc::Manager::start().unwrap();
    let l: ListProxy<(String, u32)> = m.list(vec![]).unwrap();
    let spid = m.server_pid().unwrap();
    let me = std::process::id();
    for _ in 0..3 {
        let n = 50000u32;
        let (s0, c0) = (ticks(spid), ticks(me));
        let t = Instant::now();
        for i in 0..n {
            l.push(("Jeff".to_string(), i)).unwrap();
        }
        let wall = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let (s1, c1) = (ticks(spid), ticks(me));
        // ticks are 10 ms
        println!(
            "wall {wall:.2} us/op; client cpu {:.2} us/op; server cpu {:.2} us/op",
            (c1 - c0) as f64 * 1e4 / n as f64,
            (s1 - s0) as f64 * 1e4 / n as f64
        );
    }
}
