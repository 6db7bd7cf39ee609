//! The seeds' question "will we always get faster results with more processes in the
//! pool?" (class slides) and "why do the gains from adding more processes taper off?"
//! (worksheet): one CPU-bound job run with pools of 1, 2, 4, … processes up to twice
//! [`cpu_count()`](multiproc::cpu_count), printing the time and the speed-up for each, and
//! drawing the curve (with the ideal one) to an SVG file.
//!
//! The speed-up grows until the pool has as many processes as the machine has CPUs, then
//! stops: more processes only take turns on the same CPUs, and starting and coordinating
//! them costs time.
//!
//! Run with `cargo run --release --example pool_speedup [tasks] [out.svg]`
//! (defaults: 48 tasks, `target/pool_speedup.svg`).

use std::time::{Duration, Instant};

use multiproc::Pool;
use plotters::prelude::*;

/// A CPU-bound task: counts the primes in `[start, start + len)` by trial division.
fn count_primes((start, len): (u64, u64)) -> u64 {
    (start..start + len)
        .filter(|&n| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

/// Runs the whole job with a pool of `processes`; the time includes starting the pool.
fn run(processes: usize, tasks: &[(u64, u64)]) -> multiproc::Result<(Duration, u64)> {
    let t = Instant::now();
    let pool = Pool::new(processes)?;
    let total: u64 = pool
        .map_chunked(count_primes, tasks.to_vec(), 1)?
        .iter()
        .sum();
    pool.close();
    pool.join()?;
    Ok((t.elapsed(), total))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    let mut args = std::env::args().skip(1);
    let ntasks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(48);
    let out = args
        .next()
        .unwrap_or_else(|| "target/pool_speedup.svg".to_string());
    let cpus = multiproc::cpu_count();
    let len = 40_000;
    let tasks: Vec<(u64, u64)> = (0..ntasks).map(|i| (1_000_000 + i * len, len)).collect();

    let mut sizes = vec![];
    let mut p = 1;
    while p <= 2 * cpus {
        sizes.push(p);
        p *= 2;
    }
    if !sizes.contains(&cpus) {
        sizes.push(cpus);
    }
    if !sizes.contains(&(2 * cpus)) {
        sizes.push(2 * cpus);
    }
    sizes.sort_unstable();

    println!("{cpus} CPUs, {ntasks} tasks");
    println!("{:>10} {:>10} {:>9}", "processes", "time (s)", "speed-up");
    let mut base = None;
    let mut points = Vec::new();
    let mut check = None;
    for &p in &sizes {
        let (t, total) = run(p, &tasks)?;
        if *check.get_or_insert(total) != total {
            return Err("different answers with different pool sizes".into());
        }
        let base = *base.get_or_insert(t.as_secs_f64());
        let speedup = base / t.as_secs_f64();
        println!("{p:>10} {:>10.3} {speedup:>8.2}x", t.as_secs_f64());
        points.push((p as f64, speedup));
    }
    println!("(primes found: {})", check.unwrap_or(0));

    draw(&out, &points, cpus)?;
    println!("speed-up curve written to {out}");
    Ok(())
}

fn draw(path: &str, points: &[(f64, f64)], cpus: usize) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let max_p = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_s = points.iter().map(|p| p.1).fold(cpus as f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Pool speed-up on {cpus} CPUs"), ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_p + 0.5, 0.0..max_s)?;
    chart
        .configure_mesh()
        .x_desc("processes in the pool")
        .y_desc("speed-up over 1 process")
        .draw()?;
    let ideal: Vec<(f64, f64)> = (1..=max_p as usize)
        .map(|p| (p as f64, p.min(cpus) as f64))
        .collect();
    chart
        .draw_series(LineSeries::new(ideal, &BLUE))?
        .label("ideal: min(processes, CPUs)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(points.iter().copied(), &RED))?
        .label("measured")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, RED.filled())))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
