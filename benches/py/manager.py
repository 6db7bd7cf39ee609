"""CPython side of examples/bench_manager.rs: the same manager workloads, in µs per op.

python3 benches/py/manager.py [ops]
"""
import multiprocessing as mp
import sys
import time


def list_append(l, n, out):
    t = time.perf_counter()
    for i in range(n):
        l.append(("Jeff", i))
    out.put((time.perf_counter() - t) * 1e6 / n)


def dict_set_get(d, n, out):
    t = time.perf_counter()
    for i in range(n):
        d[i % 1024] = i
        d.get(i % 1024)
    out.put((time.perf_counter() - t) * 1e6 / n)


def lock_cycle(lock, n, out):
    t = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    out.put((time.perf_counter() - t) * 1e6 / n)


def run(target, obj, n):
    best = float("inf")
    for _ in range(3):
        out = mp.SimpleQueue()
        p = mp.Process(target=target, args=(obj, n, out))
        p.start()
        best = min(best, out.get())
        p.join()
    return best


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with mp.Manager() as m:
        la = run(list_append, m.list(), n)
        ds = run(dict_set_get, m.dict(), n)
        lk = run(lock_cycle, m.Lock(), n)
    print(f"manager_list_append_child   {la:8.2f} us/op")
    print(f"manager_dict_set_get_child  {ds:8.2f} us/op (set + get)")
    print(f"manager_lock_cycle_child    {lk:8.2f} us/op (acquire + release)")
