"""The side-by-side table of benches/cluster/run.sh: reads the raw lines of each program
(`name value unit ...`) from the folder given, for each rank count, and prints ranges."""
import sys


def read(path):
    vals = {}
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) >= 2:
                    try:
                        vals.setdefault(p[0], []).append(float(p[1]))
                    except ValueError:
                        pass
    except OSError:
        pass
    return vals


def rng(v, fmt):
    if not v:
        return "-"
    lo, hi = min(v), max(v)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)} – {fmt.format(hi)}"


def ratio(mp, py, higher_better):
    if not mp or not py:
        return "-"
    if higher_better:
        lo, hi = min(mp) / max(py), max(mp) / min(py)
    else:
        lo, hi = min(py) / max(mp), max(py) / min(mp)
    def f(x):
        return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
    return f"{f(lo)}×" if f(lo) == f(hi) else f"{f(lo)} – {f(hi)}×"


def main():
    folder, ranks = sys.argv[1], sys.argv[2:]
    with open(f"{folder}/head") as f:
        head = f.read().strip().splitlines()
    print()
    print("## " + " · ".join(head))
    print()
    print("| workload | ranks | multiproc | mpi4py.futures | ratio | load (mp / py) |")
    print("|---|---|---|---|---|---|")
    rows = [
        ("tiny map, tasks/s (same chunks)", "tiny_map_tasks_per_s", "tiny_map_tasks_per_s", "{:,.0f}", True),
        ("tiny map, tasks/s, vs mpi4py's default chunksize=1", "tiny_map_tasks_per_s",
         "tiny_map_chunksize1_tasks_per_s", "{:,.0f}", True),
        ("apply round trip to a worker rank, µs", "apply_round_trip_us", "apply_round_trip_us", "{:,.1f}", False),
        ("apply round trip, median of the calls, µs", "apply_round_trip_p50_us", "apply_round_trip_p50_us",
         "{:,.1f}", False),
        ("apply round trip, 99th percentile, µs", "apply_round_trip_p99_us", "apply_round_trip_p99_us",
         "{:,.1f}", False),
    ]
    cpu = []
    for n in ranks:
        mp, py = read(f"{folder}/mp.{n}"), read(f"{folder}/py.{n}")
        loads = "{} – {} / {} – {}".format(
            *(d.get(k, ["?"])[0] for d in (mp, py) for k in ("load_before", "load_after")))
        for name, mk, pk, fmt, up in rows:
            a, b = mp.get(mk, []), py.get(pk, [])
            print(f"| {name} | {n} | {rng(a, fmt)} | {rng(b, fmt)} | {ratio(a, b, up)} | {loads} |")
        cpu.append((n, mp))
    print()
    print("CPU-bound, 64 × burn (seconds; speed-up against the serial estimate):")
    print()
    print("| ranks (worker ranks) | serial | cluster pool | local `Pool` | rayon |")
    print("|---|---|---|---|---|")
    for n, mp in cpu:
        s = mp.get("cpu_serial_s", [0])[0]

        def cell(k):
            v = mp.get(k)
            return f"{v[0]:.3f} ({s / v[0]:.2f}×)" if v and v[0] > 0 else "-"
        print(f"| {n} ({int(n) - 1}) | {s:.3f} | {cell('cpu_cluster_s')} | "
              f"{cell('cpu_local_pool_s')} | {cell('cpu_rayon_s')} |")


main()
