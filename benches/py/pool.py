#!/usr/bin/env python3
"""CPython's side of the pool workloads in examples/bench_pool.rs (same names, same work).

    python3 benches/py/pool.py            # every workload
    python3 benches/py/pool.py apply      # those whose name contains "apply"

Prints one JSON line per workload: {"name": ..., "value": ..., "unit": ...}.
"""

import json
import multiprocessing as mp
import sys
import time

MAP_TASKS = 200_000
MAP_ROUNDS = 5
APPLY_BUDGET_S = 1.0
ASYNC_TASKS = 20_000
ASYNC_ROUNDS = 5
PRIME_TASKS = 48
PRIME_SPAN = 40_000


def square(x):
    return x * x


def map_tiny():
    with mp.Pool(mp.cpu_count()) as pool:
        pool.map(square, range(1000))
        best = float("inf")
        for _ in range(MAP_ROUNDS):
            t = time.perf_counter()
            v = pool.map(square, range(MAP_TASKS))
            best = min(best, time.perf_counter() - t)
            assert len(v) == MAP_TASKS
    return best / MAP_TASKS * 1e6


def apply_roundtrip():
    with mp.Pool(1) as pool:
        pool.apply(square, (1,))
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < APPLY_BUDGET_S:
            assert pool.apply(square, (n,)) == n * n
            n += 1
        return (time.perf_counter() - t) / n * 1e6


def apply_async_20k():
    with mp.Pool(mp.cpu_count()) as pool:
        pool.apply(square, (1,))
        best = float("inf")
        for _ in range(ASYNC_ROUNDS):
            t = time.perf_counter()
            rs = [pool.apply_async(square, (i,)) for i in range(ASYNC_TASKS)]
            s = sum(r.get() for r in rs)
            best = min(best, time.perf_counter() - t)
            assert s > 0
    return best / ASYNC_TASKS * 1e6


def count_primes(args):
    start, length = args
    count = 0
    for n in range(start, start + length):
        if n < 2:
            continue
        d = 2
        prime = True
        while d * d <= n:
            if n % d == 0:
                prime = False
                break
            d += 1
        if prime:
            count += 1
    return count


def prime_tasks():
    return [(1_000_000 + i * PRIME_SPAN, PRIME_SPAN) for i in range(PRIME_TASKS)]


def timed_pool(workers):
    with mp.Pool(workers) as pool:
        pool.map(square, range(10))
        t = time.perf_counter()
        total = sum(pool.map(count_primes, prime_tasks(), chunksize=1))
        assert total > 0
        return time.perf_counter() - t


def speedup():
    return timed_pool(1) / timed_pool(mp.cpu_count())


WORKLOADS = {
    "pool_map_tiny": ("us/task", map_tiny),
    "pool_apply_roundtrip": ("us", apply_roundtrip),
    "pool_apply_async_20k": ("us/task", apply_async_20k),
    "pool_speedup": ("x", speedup),
}


def main():
    filters = sys.argv[1:]
    for name, (unit, fn) in WORKLOADS.items():
        if filters and not any(f in name for f in filters):
            continue
        print(json.dumps({"name": name, "value": fn(), "unit": unit}), flush=True)


if __name__ == "__main__":
    main()
