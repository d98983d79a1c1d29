//! Helpers shared by the end-to-end tests.

use std::time::{Duration, Instant};

/// Waits until `check` holds, polling every 100 ms; fails the test with `what` once
/// `within` has passed.
pub(crate) async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "not applied within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
