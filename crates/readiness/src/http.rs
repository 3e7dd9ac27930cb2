//! The `http` gate: a GET answers an expected status on one of the VM's addresses.
//!
//! All addresses are asked at once and the first expected answer passes the
//! attempt. The request goes straight to the address: no proxy of ferry's host
//! (`HTTPS_PROXY` is for reaching the internet, not a guest), no redirect followed (a
//! redirect to a name or another host would check something else; expect the 3xx if
//! that is the healthy answer). What did not pass is said with its status and the
//! start of its body (`HTTP 503 from http://10.0.0.5:8080/health: db starting`), or
//! with why there was no answer.
//!
//! Over HTTPS the certificate is checked against the address asked (ferry knows the
//! VM by its addresses, not by a name), with the web's root certificates: a guest's
//! certificate rarely passes that, which is what `tls_skip_verify` is for. The gate
//! then only checks that the service answers; it sends nothing secret.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::gate::HttpCheck;
use crate::seen::{self, Answer, Seen};

/// At most this much of a body that did not pass is read, and its start shown.
const BODY_BYTES: usize = 512;
const BODY_SHOWN: usize = 160;

/// An HTTP gate ready to be tried: its client and the URL at each address.
pub(crate) struct HttpProbe {
    client: reqwest::Client,
    urls: Vec<String>,
    expect: Vec<u16>,
    tls_skip_verify: bool,
    timeout: Duration,
}

impl HttpProbe {
    pub fn new(check: &HttpCheck, targets: &[SocketAddr]) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(check.timeout)
            .timeout(check.timeout)
            .danger_accept_invalid_certs(check.tls_skip_verify)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let scheme = if check.https { "https" } else { "http" };
        Ok(HttpProbe {
            client,
            urls: targets
                .iter()
                .map(|target| format!("{scheme}://{target}{}", check.path))
                .collect(),
            expect: check.expect.clone(),
            tls_skip_verify: check.tls_skip_verify,
            timeout: check.timeout,
        })
    }

    /// One attempt: a GET of each URL.
    pub async fn attempt(&self) -> Seen {
        let mut pending: FuturesUnordered<_> = self
            .urls
            .iter()
            .enumerate()
            .map(|(i, url)| async move { (i, self.get(url).await) })
            .collect();
        let mut failed: Vec<(usize, Answer)> = Vec::new();
        while let Some((i, result)) = pending.next().await {
            match result {
                Ok(status) => return Seen::pass(format!("HTTP {status} from {}", self.urls[i])),
                Err(answer) => failed.push((i, answer)),
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        let answers: Vec<Answer> = failed.into_iter().map(|(_, answer)| answer).collect();
        Seen::fail(seen::answers(&answers))
    }

    /// The status of a GET of `url` when it is expected; what it was otherwise.
    async fn get(&self, url: &str) -> Result<u16, Answer> {
        let mut response = match self.client.get(url).send().await {
            Ok(response) => response,
            Err(e) => {
                return Err(Answer {
                    head: format!("{} on", self.error(&e)),
                    target: url.to_string(),
                    tail: String::new(),
                });
            }
        };
        let status = response.status().as_u16();
        if self.expect.contains(&status) {
            return Ok(status);
        }
        // The start of the body says why, often; an unreadable one says nothing more.
        let mut body = Vec::new();
        while body.len() < BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(BODY_BYTES);
        let body = seen::one_line(&String::from_utf8_lossy(&body), BODY_SHOWN);
        Err(Answer {
            head: format!("HTTP {status} from"),
            target: url.to_string(),
            tail: if body.is_empty() {
                String::new()
            } else {
                format!(": {body}")
            },
        })
    }

    /// Why a request got no answer, in the report's words: the innermost cause
    /// (`connection refused`, the certificate's fault), with what to do about a
    /// certificate.
    fn error(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no answer within {}", seen::duration(self.timeout));
        }
        let mut innermost: &dyn std::error::Error = e;
        let mut io = None;
        while let Some(source) = innermost.source() {
            if let Some(found) = source.downcast_ref::<std::io::Error>() {
                io = Some(found);
            }
            innermost = source;
        }
        let said = match io {
            // An I/O error wrapping another (TLS's) says the other.
            Some(io) if io.get_ref().is_none() => seen::io_error(io),
            _ => innermost.to_string(),
        };
        if !self.tls_skip_verify && said.contains("certificate") {
            format!(
                "{said} (set tls_skip_verify = true to accept a certificate the guest made itself)"
            )
        } else {
            said
        }
    }
}
