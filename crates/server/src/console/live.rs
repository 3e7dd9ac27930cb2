//! Live updates: a page's changing part, sent again as server-sent events whenever it
//! changes, until what it shows has settled.
//!
//! The server reads the run as `ferry run watch` does, every [`EVERY`] (the store is
//! the only place a run's progress is known — another worker may be executing it),
//! renders the same fragment the page was served with, and sends it as a `progress`
//! event when it differs from the last one sent. Once the run is settled (a final
//! state, or stuck) it sends the last fragment as an `end` event and closes the
//! stream; the page's script (assets/console.js) swaps each fragment in and stops
//! listening at `end`. A stream also ends when `ferry serve` stops, so that no open
//! page holds the shutdown up. A read that fails (the database away for a moment) is
//! tried again at the next tick; the browser's `EventSource` reconnects by itself if
//! the connection drops.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// How often the run is read while a page follows it.
pub const EVERY: Duration = Duration::from_millis(300);

/// A rendered fragment and whether what it shows has settled.
pub type Fragment = Result<(String, bool), ApiError>;

struct Follow<F> {
    render: F,
    tick: tokio::time::Interval,
    last: Option<String>,
    ended: bool,
}

/// The event stream of the fragments `render` makes, until one is settled or
/// `shutdown` is cancelled.
pub fn stream<F, Fut>(shutdown: CancellationToken, render: F) -> Response
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Fragment> + Send,
{
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follow = Follow {
        render,
        tick,
        last: None,
        ended: false,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            f.tick.tick().await;
            match (f.render)().await {
                Ok((html, true)) => {
                    f.ended = true;
                    let event = Event::default().event("end").data(html);
                    return Some((Ok::<_, Infallible>(event), f));
                }
                Ok((html, false)) if f.last.as_ref() != Some(&html) => {
                    f.last = Some(html.clone());
                    let event = Event::default().event("progress").data(html);
                    return Some((Ok(event), f));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e.message(), "console: cannot read what a live page follows; trying again");
                }
            }
        }
    })
    .take_until(shutdown.cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
