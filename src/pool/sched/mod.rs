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
}
