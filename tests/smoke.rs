use multiproc::{Builder, Process, StartMethod};

fn cube(n: i64) -> i64 {
    println!("cube {}", n * n * n);
    n * n * n
}

#[test]
fn smoke_all_methods() {
    multiproc::init();
    unsafe { multiproc::allow_fork_with_threads(true) };
    for m in [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let t = std::time::Instant::now();
        let mut p = Process::new(cube, 3).with_start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        let h = Builder::new().start_method(m).spawn(cube, 4).unwrap();
        assert_eq!(h.join().unwrap(), 64);
        eprintln!("{m:?} {:?}", t.elapsed());
    }
}
