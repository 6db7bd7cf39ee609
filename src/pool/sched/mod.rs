//! The parent's side of the pool: the job queue and one handler thread per worker.
//!
//! Callers encode their tasks into [`Job`]s (a chunk of tasks for one function) and push
//! them on a shared queue. Each worker process has a handler thread that takes jobs from
//! the queue (several small ones at once when many are waiting), sends them to its worker
//! in one frame, and hands the replies to each job's [`Sink`]. The handler also watches its
//! worker's pidfd: a worker that dies fails exactly the tasks it held, unstarted jobs go
//! back on the queue, and a new worker takes its place. The number of threads and
//! descriptors depends on the number of workers only, never on the number of tasks.

mod handler;
mod job;
mod shared;

pub(crate) use handler::handler;
pub(crate) use job::*;
pub(crate) use shared::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_keep_a_stride_until_a_task_differs() {
        let mut e = Ends::new();
        for end in [8, 16, 24] {
            e.push(end);
        }
        assert_eq!(e, Ends::Stride { size: 8, count: 3 });
        assert_eq!((e.start(2), e.end(2)), (16, 24));
        e.push(30);
        assert_eq!(e, Ends::List(vec![8, 16, 24, 30]));
        assert_eq!((e.start(3), e.end(3)), (24, 30));
        let tail = e.split_off(2, 16);
        assert_eq!(e, Ends::List(vec![8, 16]));
        assert_eq!(tail, Ends::List(vec![8, 14]));
    }

    #[test]
    fn stride_ends_split_and_empty_arguments() {
        let mut e = Ends::new();
        for end in [4, 8, 12, 16] {
            e.push(end);
        }
        let tail = e.split_off(1, 4);
        assert_eq!(e, Ends::Stride { size: 4, count: 1 });
        assert_eq!(tail, Ends::Stride { size: 4, count: 3 });
        assert_eq!(tail.end(2), 12);
        // `()` arguments take no bytes at all.
        let mut z = Ends::new();
        z.push(0);
        z.push(0);
        assert_eq!(z, Ends::Stride { size: 0, count: 2 });
        z.push(3);
        assert_eq!(z, Ends::List(vec![0, 0, 3]));
    }

    struct NoSink;
    impl Sink for NoSink {
        fn deliver(&self, _: usize, _: usize, _: &[u8], _: Vec<std::os::fd::OwnedFd>) {}
        fn fail(&self, _: usize, _: usize, _: &crate::pool::fail::TaskFail) {}
    }

    fn ident<T>(v: T) -> T {
        v
    }

    /// The pieces a lazy job of `items` is cut into, and the same tasks moved one by one
    /// into pieces at the same limit (the cut that a job with a failed task takes).
    fn cut_both_ways<A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
        items: Vec<A>,
    ) -> (Vec<Job>, Vec<Job>) {
        let sink: std::sync::Arc<dyn Sink> = std::sync::Arc::new(NoSink);
        let code = crate::pool::worker::TaskCode::of(ident::<A>);
        let n = items.len();
        let fast = Job::lazy(code, 10, items, sink.clone());
        let fast = fast.materialize();
        // Task by task, from one job holding all the encoded tasks.
        let mut whole = Job::new(code, 10, sink.clone());
        for p in &fast {
            for t in 0..p.len() {
                whole
                    .args
                    .extend_from_slice(&p.args[p.ends.start(t)..p.ends.end(t)]);
                whole.ends.push(whole.args.len() as u32);
            }
        }
        assert_eq!(whole.len(), n);
        let mut slow = Vec::new();
        let mut cur = Job::new(code, 10, sink.clone());
        for t in 0..n {
            if cur.is_full() {
                let next = Job::new(code, 10 + t, sink.clone());
                slow.push(std::mem::replace(&mut cur, next));
            }
            whole.move_task(t, &mut cur);
        }
        slow.push(cur);
        (fast, slow)
    }

    fn same_pieces(fast: &[Job], slow: &[Job]) {
        assert_eq!(fast.len(), slow.len(), "as many pieces");
        for (f, s) in fast.iter().zip(slow) {
            assert_eq!((f.first, f.len()), (s.first, s.len()));
            assert_eq!(f.args, s.args);
            for t in 0..f.len() {
                assert_eq!(f.ends.end(t), s.ends.end(t));
            }
        }
    }

    /// A chunk of plain numbers is copied as one block: the bytes must be the codec's
    /// encoding of each value, end to end, with stride ends, cut where the task-by-task
    /// cut would cut it.
    fn plain_chunk_as_the_codec_encodes_it<A>(items: Vec<A>)
    where
        A: serde::Serialize + serde::de::DeserializeOwned + Send + Clone + 'static,
    {
        let mut want = Vec::new();
        for a in &items {
            crate::codec::encode_into(a, &mut want).unwrap();
        }
        let size = want.len() / items.len();
        let (fast, slow) = cut_both_ways(items);
        same_pieces(&fast, &slow);
        let got: Vec<u8> = fast.iter().flat_map(|p| p.args.iter().copied()).collect();
        assert_eq!(got, want);
        for p in &fast {
            assert_eq!(
                p.ends,
                Ends::Stride {
                    size: size as u32,
                    count: p.len()
                }
            );
        }
    }

    #[test]
    fn a_chunk_of_plain_numbers_is_the_codecs_encoding_of_each() {
        plain_chunk_as_the_codec_encodes_it((0..300_000u64).map(|x| x * 0x0101_0101).collect());
        plain_chunk_as_the_codec_encodes_it((0..1000i32).map(|x| -x).collect());
        plain_chunk_as_the_codec_encodes_it(vec![1.5f64, -0.0, f64::MAX, f64::NAN]);
        plain_chunk_as_the_codec_encodes_it(vec![2.5f32, -1.0]);
        plain_chunk_as_the_codec_encodes_it(vec![1u8, 2, 255]);
        plain_chunk_as_the_codec_encodes_it(vec![-1i8, 7]);
        plain_chunk_as_the_codec_encodes_it(vec![1u16, 65535]);
        plain_chunk_as_the_codec_encodes_it(vec![-1i16, 300]);
        plain_chunk_as_the_codec_encodes_it(vec![1u32, u32::MAX]);
        plain_chunk_as_the_codec_encodes_it(vec![i64::MIN, 3]);
    }

    /// A chunk kept whole for another rank (`materialize_cut(false)`), encoded into a
    /// buffer it is given, is cut there (`cut_large`) into the very pieces the local pool
    /// cuts; `wire_len` is what `encode_into` writes, for stride ends and a list.
    #[test]
    fn a_chunk_sent_whole_is_cut_by_its_receiver_as_the_local_pool_cuts_it() {
        let sink: std::sync::Arc<dyn Sink> = std::sync::Arc::new(NoSink);
        let code = crate::pool::worker::TaskCode::of(ident::<u64>);
        let items: Vec<u64> = (0..300_000).collect();
        let local = Job::lazy(code, 10, items.clone(), sink.clone()).materialize();
        let mut whole = Job::lazy(code, 10, items, sink.clone());
        let buf = Vec::with_capacity(4 << 20);
        let at = buf.as_ptr();
        whole.encode_into_buffer(|| buf);
        let mut whole = whole.materialize_cut(false);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].args.as_ptr(), at, "encoded into the buffer given");
        assert_eq!(whole[0].len(), 300_000);
        let mut wire = Vec::new();
        whole[0].encode_into(1, 0, &mut wire);
        assert_eq!(wire.len(), whole[0].wire_len());
        let cut = whole.pop().unwrap().cut_large();
        assert_eq!(cut.len(), 3);
        same_pieces(&cut, &local);
        // A job within the limit stays as it is; a job already encoded takes no buffer.
        let mut small = Job::lazy(code, 0, vec![1u64, 2], sink.clone()).materialize();
        assert_eq!(small.len(), 1);
        small[0].encode_into_buffer(|| panic!("an encoded job takes no buffer"));
        let small = small.pop().unwrap().cut_large();
        assert_eq!(small.len(), 1);
        // A list of ends.
        let strings: Vec<String> = (0..50).map(|i| "s".repeat(i)).collect();
        let job = Job::lazy(
            crate::pool::worker::TaskCode::of(ident::<String>),
            0,
            strings,
            sink,
        )
        .materialize();
        assert!(matches!(job[0].ends, Ends::List(_)));
        let mut wire = Vec::new();
        job[0].encode_into(2, 0, &mut wire);
        assert_eq!(wire.len(), job[0].wire_len());
        // After it is sent, its bytes can go; its tasks stay counted.
        let mut job = job.into_iter().next().unwrap();
        assert!(!job.take_args().is_empty());
        assert_eq!(job.len(), 50);
    }

    #[test]
    fn a_large_chunk_is_cut_by_runs_exactly_where_task_by_task_would_cut_it() {
        // Plain values (stride ends): 300,000 u64 are 2.3 MiB, three pieces.
        let (fast, slow) = cut_both_ways((0..300_000u64).collect());
        assert_eq!(fast.len(), 3);
        same_pieces(&fast, &slow);
        for p in &fast[..fast.len() - 1] {
            assert!(p.args.len() >= MAX_JOB_BYTES && p.args.len() < MAX_JOB_BYTES + 8);
        }
        // Values of different sizes (a list of ends), one larger than the limit by itself.
        let mut items: Vec<String> = (0..40_000).map(|i| "x".repeat(i % 97)).collect();
        items[5] = "y".repeat(MAX_JOB_BYTES + 3);
        let (fast, slow) = cut_both_ways(items);
        assert!(fast.len() >= 3);
        same_pieces(&fast, &slow);
        assert_eq!(fast[0].len(), 6, "the large value ends the first piece");
    }
}
