#!/usr/bin/env python3
"""CPython's side of the side-by-side benchmark (`cargo bench --bench compare`).

Every workload here has the same name, and does the same work, as one in
benches/compare.rs, using CPython's `multiprocessing`. The Rust harness runs

    python3 benches/compare.py NAME [NAME ...]

and reads one JSON line per workload from stdout: {"name": ..., "value": ..., "unit": ...}.
`python3 benches/compare.py` alone runs every workload; `--list` prints the names.

To add a workload: write a function returning the figure, and add one entry to WORKLOADS
(same name, unit and method of measurement as the Rust entry). Works on Python 3.11+.

The rows of the Rust peers ("vs procspawn", "vs ipc-channel", from
benches/compare/peer_workloads.rs) are measured by compare.rs alone, with the parameters
below: they have no CPython side of their own.
"""

import json
import multiprocessing as mp
import statistics
import sys
import time

# --- parameters shared with benches/compare.rs (keep them equal) -------------------------
START_BUDGET_S = 2.0  # start+join: repeat for this long (after one warm-up start) ...
START_MIN_ITERS = 5  # ... and at least this many times
PIPE_ROUNDS = 5  # pipe workloads: median of this many rounds, each with a fresh child
SMALL_MSG = 8
SMALL_COUNT = 100_000
BIG_MSG = 1 << 20
BIG_COUNT = 500


# --- process start + join ---------------------------------------------------------------
def noop():
    pass


def start_join(method):
    ctx = mp.get_context(method)
    p = ctx.Process(target=noop)  # warm-up (starts the fork server, imports, ...)
    p.start()
    p.join()
    n = 0
    t0 = time.perf_counter()
    while True:
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= START_BUDGET_S and n >= START_MIN_ITERS:
            return elapsed / n * 1e3  # ms per start+join


# --- pipe, one way --------------------------------------------------------------------------
def pipe_sender(conn, size, count):
    msg = b"x" * size
    conn.send_bytes(b"r")  # ready: the clock starts when the parent receives this
    for _ in range(count):
        conn.send_bytes(msg)
    conn.close()


def pipe_round(size, count):
    ctx = mp.get_context("fork")
    rx, tx = ctx.Pipe(duplex=False)
    p = ctx.Process(target=pipe_sender, args=(tx, size, count))
    p.start()
    tx.close()
    rx.recv_bytes()
    t0 = time.perf_counter()
    for _ in range(count):
        b = rx.recv_bytes()
        if len(b) != size:
            raise RuntimeError(f"got {len(b)} bytes, expected {size}")
    elapsed = time.perf_counter() - t0
    p.join()
    rx.close()
    return elapsed


def pipe_small():
    secs = statistics.median(pipe_round(SMALL_MSG, SMALL_COUNT) for _ in range(PIPE_ROUNDS))
    return SMALL_COUNT / secs  # messages per second


def object_sender(conn, count):
    conn.send(2**64 - 1)  # ready
    for i in range(count):
        conn.send(i)
    conn.close()


def pipe_objects_round():
    ctx = mp.get_context("fork")
    rx, tx = ctx.Pipe(duplex=False)
    p = ctx.Process(target=object_sender, args=(tx, SMALL_COUNT))
    p.start()
    tx.close()
    rx.recv()
    t0 = time.perf_counter()
    for i in range(SMALL_COUNT):
        if rx.recv() != i:
            raise RuntimeError("a message was lost")
    elapsed = time.perf_counter() - t0
    p.join()
    rx.close()
    return elapsed


def pipe_objects():
    """Like pipe_small, with objects (send/recv: pickled) instead of bytes."""
    secs = statistics.median(pipe_objects_round() for _ in range(PIPE_ROUNDS))
    return SMALL_COUNT / secs


def pipe_big():
    secs = statistics.median(pipe_round(BIG_MSG, BIG_COUNT) for _ in range(PIPE_ROUNDS))
    return BIG_MSG * BIG_COUNT / secs / 1e9  # GB/s


# --- manager proxies, used from a child process ----------------------------------------------
# One op: a list append; a dict set plus a get of the same key; a lock acquire plus release.
# The child times its own loop; the figure is the median over MANAGER_ROUNDS children.
MANAGER_OPS = 20_000
MANAGER_ROUNDS = 3


def mgr_list_child(l, n, out):
    t0 = time.perf_counter()
    for i in range(n):
        l.append(("Jeff", i))
    out.put((time.perf_counter() - t0) * 1e6 / n)


def mgr_dict_child(d, n, out):
    t0 = time.perf_counter()
    for i in range(n):
        d[i % 1024] = i
        d.get(i % 1024)
    out.put((time.perf_counter() - t0) * 1e6 / n)


def mgr_lock_child(lock, n, out):
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    out.put((time.perf_counter() - t0) * 1e6 / n)


def median_of_children(target, obj):
    figures = []
    for _ in range(MANAGER_ROUNDS):
        out = mp.SimpleQueue()
        p = mp.Process(target=target, args=(obj, MANAGER_OPS, out))
        p.start()
        figures.append(out.get())
        p.join()
    return statistics.median(figures)


def manager_workload(make, target):
    with mp.Manager() as m:
        return median_of_children(target, make(m))


def manager_list_append_tcp():
    from multiprocessing.managers import SyncManager

    m = SyncManager(address=("127.0.0.1", 0), authkey=b"bench")
    m.start()
    try:
        return median_of_children(mgr_list_child, m.list())
    finally:
        m.shutdown()


# --- the table: name -> (unit, function) ----------------------------------------------------
# --- synchronization (issue 3): Lock, Value, Event -------------------------------------
# Parameters shared with benches/compare/sync_workloads.rs (keep them equal).
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


# --- pools (issue 5): map of tiny tasks, apply, apply_async, CPU-bound speed-up ------------
# Parameters shared with benches/compare/pool_workloads.rs (keep them equal).
MAP_TASKS = 200_000
MAP_ROUNDS = 5
APPLY_BUDGET_S = 1.0
ASYNC_TASKS = 20_000
ASYNC_ROUNDS = 5
PRIME_TASKS = 48
PRIME_SPAN = 40_000


def square(x):
    return x * x


def pool_map_tiny():
    with mp.Pool(mp.cpu_count()) as pool:
        pool.map(square, range(1000))
        best = float("inf")
        for _ in range(MAP_ROUNDS):
            t = time.perf_counter()
            v = pool.map(square, range(MAP_TASKS))
            best = min(best, time.perf_counter() - t)
            assert len(v) == MAP_TASKS
    return best / MAP_TASKS * 1e6


def pool_apply_roundtrip(workers=1):
    with mp.Pool(workers) as pool:
        pool.apply(square, (1,))
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < APPLY_BUDGET_S:
            assert pool.apply(square, (n,)) == n * n
            n += 1
        return (time.perf_counter() - t) / n * 1e6


def pool_apply_async_20k():
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


def pool_speedup():
    return timed_pool(1) / timed_pool(mp.cpu_count())


# Workloads of compare.rs with no CPython counterpart, and why.
RUST_ONLY = {
    "pool_speedup_rayon": "rayon is a Rust library: no CPython counterpart",
}

# --- queues (benches/compare/queue_workloads.rs) ---------------------------------------------
# Parameters shared with benches/compare/queue_workloads.rs (keep them equal).
QUEUE_ROUNDS = 3
QUEUE_SMALL_COUNT = 200_000
QUEUE_BIG_MSG = 1 << 20
QUEUE_BIG_COUNT = 500
QUEUE_MPMC_SIDES = 4
QUEUE_MPMC_PER_PRODUCER = 100_000


def queue_producer(q, item, count):
    q.put(b"r")  # ready: the clock starts when the parent takes this
    for _ in range(count):
        q.put(item)


def queue_round(item, count):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=queue_producer, args=(q, item, count))
    p.start()
    q.get()
    t0 = time.perf_counter()
    for _ in range(count):
        b = q.get()
        if len(b) != len(item):
            raise RuntimeError("an item changed size")
    elapsed = time.perf_counter() - t0
    p.join()
    return elapsed


def queue_8b_1p1c():
    secs = statistics.median(
        queue_round(b"x" * 8, QUEUE_SMALL_COUNT) for _ in range(QUEUE_ROUNDS)
    )
    return QUEUE_SMALL_COUNT / secs


def queue_1mib_1p1c():
    secs = statistics.median(
        queue_round(b"x" * QUEUE_BIG_MSG, QUEUE_BIG_COUNT) for _ in range(QUEUE_ROUNDS)
    )
    return QUEUE_BIG_MSG * QUEUE_BIG_COUNT / secs / 1e9


# --- 1 MiB items of several types, a 1 GiB item (issue 12) ----------------------------------
# The nearest CPython has to each Rust type: bytes for Vec<u8>, array('I') for Vec<u32>,
# list[float] for Vec<f64>, a tuple (id, list[float]) for a struct, str for String; and a
# numpy array for an ndarray matrix ("numpy" kinds: the shape is part of the kind).
def make_item(kind):
    n = QUEUE_BIG_MSG
    if kind == "vec_u8":
        return b"x" * n
    if kind == "vec_u32":
        import array

        return array.array("I", [7]) * (n // 4)
    if kind == "vec_f64":
        return [1.5] * (n // 8)
    if kind == "struct":
        return (1, [1.5] * (n // 8))
    if kind == "string":
        return "x" * n
    if isinstance(kind, tuple) and kind[0] == "numpy":
        import numpy

        return numpy.full(kind[1], 1.5)
    raise ValueError(kind)


def data_len(kind, item):
    if kind == "struct":
        return len(item[1]) * 8
    if kind in ("vec_u8", "string"):
        return len(item)
    if hasattr(item, "nbytes"):
        return item.nbytes
    return len(item) * item.itemsize if hasattr(item, "itemsize") else len(item) * 8


def typed_producer(q, kind, count):
    item = make_item(kind)
    q.put(item)  # ready: the clock starts when the parent takes this
    for _ in range(count):
        q.put(item)


def typed_round(kind, count, size):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=typed_producer, args=(q, kind, count))
    p.start()
    q.get()
    t0 = time.perf_counter()
    for _ in range(count):
        if data_len(kind, q.get()) != size:
            raise RuntimeError("an item changed size")
    elapsed = time.perf_counter() - t0
    p.join()
    return elapsed


def queue_typed(kind, count=QUEUE_BIG_COUNT, size=QUEUE_BIG_MSG):
    secs = statistics.median(typed_round(kind, count, size) for _ in range(QUEUE_ROUNDS))
    return size * count / secs / 1e9


def queue_1mib_typed(kind):
    return queue_typed(kind)


# --- a numpy array against an ndarray matrix (issue 12) ---------------------------------------
# Parameters shared with benches/compare/queue_workloads.rs (mod nd; keep them equal).
ND_SMALL = (128, 1024)  # 1 MiB of float64
ND_SMALL_COUNT = 500
ND_BIG = (1024, 8192)  # 64 MiB of float64
ND_BIG_COUNT = 16


def queue_numpy(shape, count):
    return queue_typed(("numpy", shape), count, shape[0] * shape[1] * 8)


HUGE_ITEM = 1 << 30


def huge_producer(q, ready):
    item = b"x" * HUGE_ITEM
    ready.set()  # the clock starts here: the item exists, put has not begun
    q.put(item)


def huge_round():
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ready = ctx.Event()
    p = ctx.Process(target=huge_producer, args=(q, ready))
    p.start()
    ready.wait()
    t0 = time.perf_counter()
    v = q.get()
    elapsed = time.perf_counter() - t0
    if len(v) != HUGE_ITEM:
        raise RuntimeError("the item changed size")
    del v
    p.join()
    return elapsed


def queue_1gib_item():
    secs = statistics.median(huge_round() for _ in range(QUEUE_ROUNDS))
    return HUGE_ITEM / secs / 1e9


def shared_producer(q, ready, done):
    from multiprocessing import shared_memory
    import ctypes

    shm = shared_memory.SharedMemory(create=True, size=HUGE_ITEM)
    ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(shm.buf)), ord("x"), HUGE_ITEM)
    ready.set()  # the clock starts here: the bytes exist, put has not begun
    q.put(shm.name)
    done.wait()  # the consumer has attached
    shm.close()
    shm.unlink()


def shared_round():
    from multiprocessing import resource_tracker, shared_memory

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ready = ctx.Event()
    done = ctx.Event()
    p = ctx.Process(target=shared_producer, args=(q, ready, done))
    p.start()
    ready.wait()
    t0 = time.perf_counter()
    shm = shared_memory.SharedMemory(name=q.get())
    buf = shm.buf
    elapsed = time.perf_counter() - t0
    # Attaching registers the block with this process's tracker too (Python < 3.13).
    resource_tracker.unregister(shm._name, "shared_memory")
    if len(buf) < HUGE_ITEM or buf[0] != ord("x") or buf[HUGE_ITEM - 1] != ord("x"):
        raise RuntimeError("the item changed")
    del buf
    shm.close()
    done.set()
    p.join()
    return elapsed


def queue_1gib_shared_bytes():
    """A 1 GiB shared_memory block handed over by name (Python's zero-copy way)."""
    secs = statistics.median(shared_round() for _ in range(QUEUE_ROUNDS))
    return HUGE_ITEM / secs / 1e9


def mpmc_producer(q, go, n):
    go.wait()
    for i in range(n):
        q.put(i.to_bytes(8, "little"))


def mpmc_consumer(q, go, n):
    go.wait()
    for _ in range(n):
        q.get()


def queue_mpmc_round():
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    go = ctx.Event()
    n = QUEUE_MPMC_PER_PRODUCER
    ps = []
    for _ in range(QUEUE_MPMC_SIDES):
        ps.append(ctx.Process(target=mpmc_producer, args=(q, go, n)))
        ps.append(ctx.Process(target=mpmc_consumer, args=(q, go, n)))
    for p in ps:
        p.start()
    time.sleep(0.2)  # all started and waiting
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("a queue worker failed")
    return time.perf_counter() - t0


def queue_8b_4p4c():
    secs = statistics.median(queue_mpmc_round() for _ in range(QUEUE_ROUNDS))
    return QUEUE_MPMC_SIDES * QUEUE_MPMC_PER_PRODUCER / secs


WORKLOADS = {
    "start_join_forkserver": ("ms", lambda: start_join("forkserver")),
    "start_join_spawn": ("ms", lambda: start_join("spawn")),
    "start_join_fork": ("ms", lambda: start_join("fork")),
    "pipe_8b_one_way": ("msg/s", pipe_small),
    "pipe_u64_send_recv": ("msg/s", pipe_objects),
    "pipe_1mib_one_way": ("GB/s", pipe_big),
    "queue_8b_1p1c": ("msg/s", queue_8b_1p1c),
    "queue_1mib_1p1c": ("GB/s", queue_1mib_1p1c),
    "queue_1mib_vec_u8": ("GB/s", lambda: queue_1mib_typed("vec_u8")),
    "queue_1mib_vec_u32": ("GB/s", lambda: queue_1mib_typed("vec_u32")),
    "queue_1mib_vec_f64": ("GB/s", lambda: queue_1mib_typed("vec_f64")),
    "queue_1mib_struct": ("GB/s", lambda: queue_1mib_typed("struct")),
    "queue_1mib_string": ("GB/s", lambda: queue_1mib_typed("string")),
    "queue_1gib_item": ("GB/s", queue_1gib_item),
    # Python has no allocator that hands a `bytes` over: the same workload as above.
    "queue_1gib_item_handed_over": ("GB/s", queue_1gib_item),
    "queue_1gib_shared_bytes": ("GB/s", queue_1gib_shared_bytes),
    "queue_ndarray_1mib": ("GB/s", lambda: queue_numpy(ND_SMALL, ND_SMALL_COUNT)),
    "queue_ndarray_64mib": ("GB/s", lambda: queue_numpy(ND_BIG, ND_BIG_COUNT)),
    "queue_8b_4p4c": ("msg/s", queue_8b_4p4c),
    "lock_uncontended": ("ns/pair", lock_uncontended),
    "lock_two_process_increment": ("ns/incr", lock_two_process_increment),
    "value_increment": ("ns/incr", value_increment),
    "event_wake_latency": ("us", event_wake_latency),
    "manager_list_append_child": ("us/op", lambda: manager_workload(lambda m: m.list(), mgr_list_child)),
    "manager_dict_set_get_child": ("us/op", lambda: manager_workload(lambda m: m.dict(), mgr_dict_child)),
    "manager_lock_cycle_child": ("us/op", lambda: manager_workload(lambda m: m.Lock(), mgr_lock_child)),
    "manager_list_append_tcp": ("us/op", manager_list_append_tcp),
    "pool_map_tiny": ("us/task", pool_map_tiny),
    "pool_apply_roundtrip": ("us", pool_apply_roundtrip),
    "pool_apply_roundtrip_8w": ("us", lambda: pool_apply_roundtrip(8)),
    "pool_apply_async_20k": ("us/task", pool_apply_async_20k),
    "pool_speedup": ("x", pool_speedup),
}


def main(argv):
    if "--list" in argv:
        for name in WORKLOADS:
            print(name)
        return 0
    names = [a for a in argv if not a.startswith("-")] or list(WORKLOADS)
    status = 0
    for name in names:
        if name in RUST_ONLY:
            print(json.dumps({"name": name, "error": RUST_ONLY[name]}), flush=True)
            continue
        if name not in WORKLOADS:
            print(json.dumps({"name": name, "error": "no such workload"}), flush=True)
            status = 1
            continue
        unit, run = WORKLOADS[name]
        value = run()
        print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
