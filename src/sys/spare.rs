//! Warm buffers kept for reuse: a large buffer whose pages a process has already touched is
//! filled at memory speed, where a fresh one pays a page fault and a zeroing per page (about
//! 1 GB/s on a small VM). One mechanism for every such cache of the crate: the receive
//! buffer of lent message files (`memfd/lent.rs`) and the MPI message buffers of the
//! cluster pool (`pool/cluster/net.rs`).

/// At most `count` emptied buffers of `min..=max` bytes of capacity, handed out best fit.
pub(crate) struct SpareBuffers {
    bufs: Vec<Vec<u8>>,
    count: usize,
    min: usize,
    max: usize,
}

impl SpareBuffers {
    /// No buffer yet; at most `count` will be kept, each of `min..=max` bytes of capacity.
    pub(crate) const fn new(count: usize, min: usize, max: usize) -> SpareBuffers {
        SpareBuffers {
            bufs: Vec::new(),
            count,
            min,
            max,
        }
    }

    /// An empty buffer for about `size` bytes: the smallest kept one that holds them (its
    /// pages already the process's), or a new one (advised huge pages when large).
    pub(crate) fn take(&mut self, size: usize) -> Vec<u8> {
        let fit = (size >= self.min)
            .then(|| {
                self.bufs
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() >= size)
                    .min_by_key(|(_, b)| b.capacity())
                    .map(|(i, _)| i)
            })
            .flatten();
        match fit {
            Some(i) => self.bufs.swap_remove(i),
            None => {
                let mut v = super::heap::private_scope(|| Vec::with_capacity(size));
                super::memfd::prepare_fill(v.spare_capacity_mut());
                v
            }
        }
    }

    /// Keeps `b`, emptied, for a later [`take`](Self::take) (or drops it: outside
    /// `min..=max`, or smaller than every kept one when `count` are kept).
    pub(crate) fn give(&mut self, mut b: Vec<u8>) {
        if !(self.min..=self.max).contains(&b.capacity()) {
            return;
        }
        b.clear();
        if self.bufs.len() < self.count {
            self.bufs.push(b);
        } else if let Some(small) = self.bufs.iter_mut().min_by_key(|s| s.capacity()) {
            if small.capacity() < b.capacity() {
                *small = b;
            }
        }
    }

    /// The capacities of the buffers kept (test hook).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> Vec<usize> {
        self.bufs.iter().map(Vec::capacity).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNT: usize = 4;
    const MIN: usize = 64 << 10;
    const MAX: usize = 8 << 20;

    /// Large buffers given back are handed out again (the best fit), emptied; small and
    /// huge ones are not kept, nor more than a few.
    #[test]
    fn spare_buffers_are_reused_within_their_limits() {
        let mut m = SpareBuffers::new(COUNT, MIN, MAX);
        let small = m.take(100);
        assert!(small.capacity() >= 100);
        m.give(small);
        m.give(Vec::with_capacity(MAX + 1));
        assert!(m.kept().is_empty(), "small and huge buffers are not kept");
        let mut a = Vec::with_capacity(MIN);
        a.extend_from_slice(&[1, 2, 3]);
        let b: Vec<u8> = Vec::with_capacity(1 << 20);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        m.give(a);
        m.give(b);
        let got = m.take(MIN + 1);
        assert_eq!(got.as_ptr(), pb, "the one large enough");
        assert!(got.is_empty());
        let got2 = m.take(MIN);
        assert_eq!(got2.as_ptr(), pa);
        assert!(got2.is_empty(), "emptied");
        assert!(m.take(MIN).capacity() >= MIN, "a new one when none is left");
        // At most COUNT are kept: the largest.
        for i in 0..COUNT + 2 {
            m.give(Vec::with_capacity(MIN * (i + 1)));
        }
        assert_eq!(m.kept().len(), COUNT);
        assert!(m.kept().iter().all(|&c| c >= MIN * 3));
    }
}
