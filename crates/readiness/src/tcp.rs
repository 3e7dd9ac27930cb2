//! The `tcp` gate: a connection to the port is accepted on one of the VM's
//! addresses. All addresses are tried at once, each with its connect timeout; the
//! first accepted connection passes the attempt without waiting for the others (a
//! VM whose test network is unreachable from ferry must not slow down its other
//! address).

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::seen::{self, Answer, Seen};

/// One attempt: connect to each of `targets`, closing the first connection made.
pub(crate) async fn attempt(targets: &[SocketAddr], connect_timeout: Duration) -> Seen {
    let mut pending: FuturesUnordered<_> = targets
        .iter()
        .enumerate()
        .map(|(i, target)| async move {
            let tried =
                tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target));
            let result = match tried.await {
                Ok(Ok(_connection)) => Ok(()),
                Ok(Err(e)) => Err(seen::io_error(&e)),
                Err(_) => Err(format!(
                    "no answer within {}",
                    seen::duration(connect_timeout)
                )),
            };
            (i, result)
        })
        .collect();
    let mut failed: Vec<(usize, String)> = Vec::new();
    while let Some((i, result)) = pending.next().await {
        match result {
            Ok(()) => return Seen::pass(format!("connected to {}", targets[i])),
            Err(why) => failed.push((i, why)),
        }
    }
    failed.sort_by_key(|(i, _)| *i);
    let answers: Vec<Answer> = failed
        .into_iter()
        .map(|(i, why)| Answer {
            head: format!("{why} on"),
            target: targets[i].to_string(),
            tail: String::new(),
        })
        .collect();
    Seen::fail(seen::answers(&answers))
}
