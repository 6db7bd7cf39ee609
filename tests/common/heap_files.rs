//! Where the `ShmAllocator`'s memory files show in this process (for the tests that install it).

/// Whether `p` lies in a mapping of one of the allocator's memory files (/proc/self/maps).
pub fn in_heap_file(p: *const u8) -> bool {
    let a = p as usize;
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| {
            let (range, rest) = l.split_once(' ').unwrap();
            let (lo, hi) = range.split_once('-').unwrap();
            let lo = usize::from_str_radix(lo, 16).unwrap();
            let hi = usize::from_str_radix(hi, 16).unwrap();
            lo <= a && a < hi && rest.contains("memfd:multiproc-heap")
        })
}

/// How many descriptors of this process name one of the allocator's memory files.
pub fn heap_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().contains("memfd:multiproc-heap"))
        })
        .count()
}
