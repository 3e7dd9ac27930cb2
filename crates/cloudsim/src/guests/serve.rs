//! A guest's listeners: one per address and port, each a task that accepts until its
//! guest goes down.
//!
//! A TCP port accepts each connection and closes it at once: a readiness check that
//! only connects succeeds, one that waits for a banner reads the end of the stream.
//! Nothing is held per connection, so nothing needs bounding. An HTTP port reads the
//! request head (at most [`MAX_HEAD`] bytes), answers any `HTTP/1.x` request line with
//! `200 OK` and a short body (headers only for `HEAD`), anything else with
//! `400 Bad Request`, and closes the connection (`Connection: close`). At most
//! [`MAX_CONNECTIONS`] are answered at once per listener (a further one is closed
//! unanswered), and each gets [`CONNECTION_LIMIT`] of wall-clock time in all.
//!
//! When the guest goes down its token is cancelled: the accept loop ends, the
//! connections being answered are aborted, and the listener is closed when the task
//! returns — the registry waits for that, so a port is closed before the job that
//! stopped the VM is seen to end.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Service {
    Tcp,
    Http,
}

/// The longest request head an HTTP port reads.
const MAX_HEAD: usize = 8 * 1024;

/// How many HTTP connections one listener answers at once.
const MAX_CONNECTIONS: usize = 32;

/// How long one HTTP connection may take, from accept to close.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);

/// How much of what a client sends after its request head is read (and dropped)
/// before the connection is closed.
const MAX_DRAIN: usize = 64 * 1024;

/// How long the accept loop waits after a failed accept (no file descriptors left,
/// say) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Binds `addr` at once, without awaiting: the registry binds under its lock, so that
/// a guest going down meanwhile cannot leave a port open.
pub(super) fn bind(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Serves `listener` until `stop` is cancelled, then closes it and every connection.
pub(super) async fn serve(
    listener: TcpListener,
    service: Service,
    body: Arc<str>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if service == Service::Http && connections.len() < MAX_CONNECTIONS {
                        connections.spawn(answer(stream, Arc::clone(&body)));
                    }
                    // Otherwise the stream is dropped here: accepted, then closed.
                }
                Err(e) => {
                    tracing::debug!(error = %e, "an emulated guest could not accept");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Answers one HTTP connection, within [`CONNECTION_LIMIT`].
async fn answer(mut stream: TcpStream, body: Arc<str>) {
    let answered = tokio::time::timeout(CONNECTION_LIMIT, async {
        let head = read_head(&mut stream).await?;
        if head.is_empty() {
            return Ok(());
        }
        stream.write_all(response(&head, &body).as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client still sends (a request body) until it closes: closing
        // with unread data would reset the connection, and the client might lose the
        // answer.
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAIN {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            drained += n;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if let Ok(Err(e)) = answered {
        tracing::debug!(error = %e, "an emulated guest's HTTP connection failed");
    }
}

/// The request head: bytes up to the blank line that ends it, or up to [`MAX_HEAD`],
/// or whatever came before the client stopped sending.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !ends_head(&head) && head.len() < MAX_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The answer to a request head: 200 with `body` to an `HTTP/1.x` request (without
/// the body to `HEAD`), 400 to anything else.
fn response(head: &[u8], body: &str) -> String {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let parts: Vec<&str> = line.trim_end_matches('\r').split(' ').collect();
    let (status, body) = match parts.as_slice() {
        [method, target, version]
            if ends_head(head)
                && !method.is_empty()
                && method.chars().all(|c| c.is_ascii_uppercase())
                && !target.is_empty()
                && version.starts_with("HTTP/1.") =>
        {
            let shown = if *method == "HEAD" { "" } else { body };
            ("200 OK", (body.len(), shown))
        }
        _ => {
            let text = "not an HTTP/1.x request\n";
            ("400 Bad Request", (text.len(), text))
        }
    };
    let (length, shown) = body;
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{shown}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_http_1_request_gets_200_and_anything_else_400() {
        for request in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /health?x=1 HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\n\n",
        ] {
            let answer = response(request.as_bytes(), "up\n");
            assert!(
                answer.starts_with("HTTP/1.1 200 OK\r\n"),
                "{request:?}: {answer}"
            );
            assert!(answer.ends_with("\r\n\r\nup\n"), "{answer}");
        }
        let head = response(b"HEAD / HTTP/1.1\r\n\r\n", "up\n");
        assert!(head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n"));
        for request in [
            "hello\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "GET /\r\n\r\n",
            "GET / HTTP/1.1\r\n",
        ] {
            let answer = response(request.as_bytes(), "up\n");
            assert!(answer.starts_with("HTTP/1.1 400 "), "{request:?}: {answer}");
        }
    }
}
