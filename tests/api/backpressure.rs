//! The persister's queue is bounded: when writes come faster than the store commits
//! them, new writes are refused at once with `overloaded` instead of queueing without
//! limit, and the queued ones still complete.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use shoal::actors::persister::{job, Refused, QUEUE};
use shoal::actors::Persister;
use shoal::store::{Store, StoreError, WriteTx};

#[actix_web::test]
async fn a_full_write_queue_refuses_new_writes_and_drains_the_queued_ones() {
    let dir = std::env::temp_dir().join(format!("shoal-backpressure-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::connect(None, &dir, 2, std::time::Duration::from_secs(5)).await.unwrap();
    store.migrate().await.unwrap();
    let persister = Persister::start(store.clone());

    // The first write holds its batch open until released.
    let release = Arc::new(tokio::sync::Notify::new());
    let hold = release.clone();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let first = persister
        .submit(
            None,
            job(move |_: &mut WriteTx| -> BoxFuture<'_, Result<u32, StoreError>> {
                Box::pin(async move {
                    let _ = started_tx.send(());
                    hold.notified().await;
                    Ok(0)
                })
            }),
        )
        .unwrap_or_else(|_| panic!("the first write is accepted"));
    started.await.unwrap();

    let mut queued = Vec::new();
    for i in 0..QUEUE as u32 {
        let w = job(move |_: &mut WriteTx| -> BoxFuture<'_, Result<u32, StoreError>> { Box::pin(async move { Ok(i) }) });
        queued.push(persister.submit(None, w).unwrap_or_else(|_| panic!("write {i} fits in the queue")));
    }
    assert_eq!(persister.depth(), QUEUE);
    let overflow = job(|_: &mut WriteTx| -> BoxFuture<'_, Result<u32, StoreError>> { Box::pin(async { Ok(0) }) });
    assert!(matches!(persister.submit(None, overflow), Err(Refused::Overloaded)));

    release.notify_one();
    assert_eq!(first.outcome().await.unwrap().0, 0);
    for (i, p) in queued.into_iter().enumerate() {
        assert_eq!(p.outcome().await.unwrap().0, i as u32, "queued writes complete in order");
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
    let dir = std::env::temp_dir().join(format!("shoal-panic-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::connect(None, &dir, 2, std::time::Duration::from_secs(5)).await.unwrap();
    store.migrate().await.unwrap();
    let persister = Persister::start(store.clone());
    let bad = job(|_: &mut WriteTx| -> BoxFuture<'_, Result<u32, StoreError>> {
        Box::pin(async {
            let subject = "Заказ";
            // A bug of the kind that once stopped every write: slicing inside a char.
            Ok(subject[..1].len() as u32)
        })
    });
    let failed = persister.submit(None, bad).unwrap_or_else(|_| panic!("accepted")).outcome().await;
    assert!(matches!(failed, Err(StoreError::Other(_))), "{failed:?}");
    let good = job(|_: &mut WriteTx| -> BoxFuture<'_, Result<u32, StoreError>> { Box::pin(async { Ok(7) }) });
    let ok = persister.submit(None, good).unwrap_or_else(|_| panic!("accepted")).outcome().await;
    assert_eq!(ok.unwrap().0, 7);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
