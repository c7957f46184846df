//! Running one task per candidate file, several at once, for every change operation.
//!
//! Deletes, updates and merges read their candidate files through a bounded store
//! ([`crate::BoundedStore`]): each file is a tokio task of its own, so while one file
//! is decoded the next ones' bytes are already on their way, and the decoding of
//! several files runs on several cores. The store's limiter bounds the requests and
//! bytes in flight; `in_flight` bounds the files open at once (and so the memory of
//! their sinks).

use std::future::Future;

use deltalake::kernel::Add;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};

/// Run `task` on every file, at most `in_flight` at once, each in a tokio task of its
/// own (a task that panics gives an internal error naming the file); results come in
/// the order they finish, each with its file's `label`.
pub(crate) fn file_tasks<L, T, F, Fut>(
    files: Vec<(L, Add)>,
    in_flight: usize,
    task: F,
) -> impl Stream<Item = (L, Result<T>)>
where
    F: Fn(Add) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    futures::stream::iter(files)
        .map(move |(label, add)| {
            let path = add.path.clone();
            let handle = tokio::spawn(task(add));
            async move {
                let result = handle
                    .await
                    .unwrap_or_else(|e| Err(Error::internal(format!("the task changing {path} failed: {e}"))));
                (label, result)
            }
        })
        .buffer_unordered(in_flight.max(1))
}

/// Files read at once by a change when the caller does not say: one more than the
/// cores, so a core always has a file to decode while the others' bytes arrive.
pub(crate) fn default_files_in_flight() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() + 1)
}
