"""mpi4py.futures' MPIPoolExecutor on the workloads of benches/cluster/main.rs.

Run under mpirun with `python -m mpi4py.futures` (see benches/cluster/run.sh): rank 0 is
the master, every other rank a worker, as in the Rust run with root_processes(0).
"""
import os
import time

from mpi4py.futures import MPIPoolExecutor


def square(x):
    return x * x


def main():
    with MPIPoolExecutor() as ex:
        workers = ex.num_workers
        print(f"workers {workers}")
        # 1. Tiny tasks. The default chunksize (1) is too slow for 1,000,000 tasks: measured
        #    on 10,000; then 1,000,000 with the chunk size multiproc uses (n / (4 workers)).
        n1 = int(os.environ.get("TINY_N1", "10000"))
        for _ in range(2):
            t = time.perf_counter()
            v = list(ex.map(square, range(n1)))
            s = time.perf_counter() - t
            assert v[-1] == (n1 - 1) ** 2
            print(f"tiny_map_chunksize1_tasks_per_s {n1 / s:.0f} tasks/s")
        n = int(os.environ.get("TINY_N", "1000000"))
        cs = -(-n // (4 * workers))
        for _ in range(3):
            t = time.perf_counter()
            v = list(ex.map(square, range(n), chunksize=cs))
            s = time.perf_counter() - t
            assert v[-1] == (n - 1) ** 2
            print(f"tiny_map_tasks_per_s {n / s:.0f} tasks/s (chunksize {cs})")
        # 2. Round trip of one task.
        for i in range(500):
            ex.submit(square, i).result()
        reps = int(os.environ.get("APPLY_N", "5000"))
        for _ in range(3):
            each = []
            t = time.perf_counter()
            for i in range(reps):
                t1 = time.perf_counter()
                ex.submit(square, i).result()
                each.append((time.perf_counter() - t1) * 1e6)
            print(f"apply_round_trip_us {(time.perf_counter() - t) * 1e6 / reps:.1f} us")
            each.sort()
            print(f"apply_round_trip_p50_us {each[(len(each) - 1) // 2]:.1f} us")
            print(f"apply_round_trip_p99_us {each[int((len(each) - 1) * 0.99)]:.1f} us")


if __name__ == "__main__":
    main()
