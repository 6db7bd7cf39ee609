"""CPython's multiprocessing on the workloads of examples/bench_sync.rs (same names, same
parameters). Run: python3 benches/py/sync.py [name-filter...]"""
import sys
import time
import multiprocessing as mp

UNCONTENDED_ITERS = 2_000_000
CONTENDED_ITERS = 200_000  # per process
VALUE_ITERS = 1_000_000
PINGPONG_ROUNDS = 5_000


def lock_uncontended():
    lock = mp.Lock()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(UNCONTENDED_ITERS):
            lock.acquire()
            lock.release()
        best = min(best, (time.perf_counter() - t) * 1e9 / UNCONTENDED_ITERS)
    return best


def locked_adder(x, lock, n):
    for _ in range(n):
        lock.acquire()
        x.value = x.value + 1
        lock.release()


def lock_two_process_increment():
    x = mp.RawValue("Q", 0)
    lock = mp.Lock()
    lock.acquire()
    ps = [mp.Process(target=locked_adder, args=(x, lock, CONTENDED_ITERS)) for _ in range(2)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    t = time.perf_counter()
    lock.release()
    for p in ps:
        p.join()
    el = time.perf_counter() - t
    assert x.value == 2 * CONTENDED_ITERS
    return el * 1e9 / (2 * CONTENDED_ITERS)


def value_increment():
    v = mp.Value("q", 0)
    t = time.perf_counter()
    for _ in range(VALUE_ITERS):
        with v.get_lock():
            v.value += 1
    el = time.perf_counter() - t
    assert v.value == VALUE_ITERS
    return el * 1e9 / VALUE_ITERS


def ponger(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_wake_latency():
    ping, pong = mp.Event(), mp.Event()
    p = mp.Process(target=ponger, args=(ping, pong, PINGPONG_ROUNDS))
    p.start()
    t = time.perf_counter()
    for _ in range(PINGPONG_ROUNDS):
        ping.set()
        pong.wait()
        pong.clear()
    el = time.perf_counter() - t
    p.join()
    return el * 1e6 / (2 * PINGPONG_ROUNDS)


WORKLOADS = {
    "lock_uncontended": ("ns/pair", lock_uncontended),
    "lock_two_process_increment": ("ns/incr", lock_two_process_increment),
    "value_increment": ("ns/incr", value_increment),
    "event_wake_latency": ("us", event_wake_latency),
}


def main(argv):
    print(f"{'workload':<30} {'cpython':>12}  unit")
    for name, (unit, run) in WORKLOADS.items():
        if argv and not any(f in name for f in argv):
            continue
        print(f"{name:<30} {run():>12.2f}  {unit}")


if __name__ == "__main__":
    main(sys.argv[1:])
