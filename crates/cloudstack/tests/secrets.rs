//! No secret in any error: every way a call can fail — connection refused, reset, a
//! timeout, a TLS failure, an answer that is not JSON, a 4xx or 5xx from a proxy that
//! quotes the request line back, CloudStack's own error quoting it — for a read (a GET,
//! whose URL carries the API key and the signature) and a mutation (a POST). The
//! error's text, its `Debug` form and every error in its source chain must hold
//! neither the API key, the secret key, the signature nor the request's query.

use std::error::Error as _;
use std::time::Duration;

use cloudstack::{Client, Config, VmId};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const API_KEY: &str = "AKEY-visible-only-to-ferry-0123456789";
const SECRET: &str = "SKEY-never-printed-9876543210";

/// How a fake endpoint answers each connection.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Close the connection at once, without reading (a reset or an early close).
    Close,
    /// Hold the connection and never answer.
    Hang,
    /// An HTTP answer: status, and a body quoting the request line.
    Echo(u16),
    /// 200 with an HTML page.
    Html,
    /// A CloudStack error envelope whose errortext quotes the request line.
    CloudStackError,
}

/// A listener on port 0 answering every connection as `answer`.
async fn endpoint(answer: Answer) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            match answer {
                Answer::Close => drop(socket),
                Answer::Hang => held.push(socket),
                _ => {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let line = request.lines().next().unwrap_or_default().to_string();
                        // A POST's parameters are in its body: quote that too.
                        let quoted =
                            format!("{line} {}", request.rsplit("\r\n\r\n").next().unwrap_or(""));
                        let (status, body) = match answer {
                            Answer::Echo(status) => {
                                (status, format!("<html>cannot serve {quoted}</html>"))
                            }
                            Answer::Html => (200, format!("<html>login page for {quoted}</html>")),
                            _ => (
                                431,
                                serde_json::json!({"errorresponse": {
                                    "errorcode": 431, "cserrorcode": 9999,
                                    "errortext": format!("bad request {quoted}")
                                }})
                                .to_string(),
                            ),
                        };
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                    });
                }
            }
        }
    });
    Ok(format!("127.0.0.1:{port}"))
}

fn client(endpoint: String) -> anyhow::Result<Client> {
    let mut config = Config::new(endpoint, API_KEY, SecretString::from(SECRET.to_string()));
    config.request_timeout = Duration::from_millis(300);
    config.read_attempts = 1;
    Ok(Client::new(config)?)
}

/// Everything an error can print.
fn everything(e: &cloudstack::Error) -> String {
    let mut text = format!("{e}\n{e:?}\n{e:#}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!("\n{s}\n{s:?}"));
        source = s.source();
    }
    text
}

fn assert_clean(case: &str, e: &cloudstack::Error) {
    let text = everything(e);
    for secret in [
        API_KEY,
        SECRET,
        "signature=",
        "apiKey=",
        "apikey=",
        "command=listZones&",
        "expires=",
    ] {
        assert!(
            !text.contains(secret),
            "{case}: the error holds `{secret}`:\n{text}"
        );
    }
}

#[tokio::test]
async fn no_error_of_any_kind_holds_a_key_a_signature_or_the_query() -> anyhow::Result<()> {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut cases = vec![(
        "refused".to_string(),
        format!("http://127.0.0.1:{closed}/client/api"),
    )];
    for answer in [
        Answer::Close,
        Answer::Hang,
        Answer::Echo(404),
        Answer::Echo(502),
        Answer::Html,
        Answer::CloudStackError,
    ] {
        let at = endpoint(answer).await?;
        cases.push((format!("{answer:?}"), format!("http://{at}/client/api")));
        if matches!(answer, Answer::Echo(404)) {
            // TLS to a server that speaks plain HTTP: the handshake fails.
            cases.push(("tls".to_string(), format!("https://{at}/client/api")));
        }
    }
    let mut seen = 0;
    for (case, url) in cases {
        let c = client(url)?;
        let read = c
            .list_zones()
            .await
            .expect_err("a read cannot succeed here");
        assert_clean(&format!("{case}, read"), &read);
        let mutation = c
            .stop_virtual_machine(&VmId::from("vm-1"), false)
            .await
            .expect_err("a mutation cannot succeed here");
        assert_clean(&format!("{case}, mutation"), &mutation);
        seen += 2;
    }
    assert_eq!(seen, 16, "every case was tried");
    Ok(())
}
