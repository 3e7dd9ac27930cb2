//! The agent API over TLS: an engine that trusts the agent's certificate (the CA file
//! names it) talks to it; one that does not trust it, or trusts another, gets no
//! answer — never a request sent in clear or to an impostor.

mod common;

use std::sync::Arc;

use secrecy::SecretString;
use volumed::server::Identity;
use volumed::{Error, HttpClient, HttpClientConfig, VolumeService};

const TOKEN: &str = "tls-test-token";

/// A self-signed certificate for `localhost` and its key, as PEM files in `dir`.
fn certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("a certificate");
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).expect("written");
    std::fs::write(&key_path, key.serialize_pem()).expect("written");
    (cert_path, key_path)
}

fn client(url: &str, ca_file: Option<std::path::PathBuf>) -> HttpClient {
    let mut config = HttpClientConfig::new(url, SecretString::from(TOKEN.to_string()));
    config.ca_file = ca_file;
    config.attempts = 1;
    HttpClient::new(config).expect("a client")
}

#[tokio::test]
async fn the_engine_talks_tls_only_to_the_agent_whose_certificate_it_trusts() -> anyhow::Result<()>
{
    let (sim, _root) = common::start_sim(cloudsim::World::default(), 0.001).await?;
    let local = volumed::Local::new(
        common::cs_client(sim.endpoint(), None)?,
        Arc::new(volumed::MemoryJournal::new()),
        volumed::LocalConfig::with_appliance(common::oma().as_str(), _root.path()),
    );
    let dir = tempfile::tempdir()?;
    let (cert, key) = certificate(dir.path(), "agent");
    let (other, _) = certificate(dir.path(), "other");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://localhost:{}", listener.local_addr()?.port());
    let server = tokio::spawn(async move {
        volumed::server::serve_tls(
            listener,
            Arc::new(local),
            SecretString::from(TOKEN.to_string()),
            Identity::new(vec![common::oma()]),
            (&cert, &key),
            std::future::pending(),
        )
        .await
    });

    let status = client(&url, Some(dir.path().join("agent.pem")))
        .status()
        .await?;
    assert_eq!(status.api_revision, volumed::API_REVISION);
    assert_eq!(status.appliances[0].vm_id, common::oma());

    for untrusted in [client(&url, Some(other)), client(&url, None)] {
        let refused = untrusted
            .status()
            .await
            .expect_err("an untrusted certificate");
        assert!(
            matches!(&refused, Error::Transport { detail, .. } if detail.contains("certificate")),
            "{refused:?}"
        );
    }
    // Plain HTTP to a TLS port gets no answer either.
    let plain = client(&url.replace("https://", "http://"), None)
        .status()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    server.abort();
    Ok(())
}

#[tokio::test]
async fn a_ca_file_without_a_certificate_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("written");
    let mut config =
        HttpClientConfig::new("https://localhost:1", SecretString::from("t".to_string()));
    config.ca_file = Some(empty.clone());
    let refused = HttpClient::new(config).expect_err("refused");
    assert!(
        refused.to_string().contains(&empty.display().to_string()),
        "{refused}"
    );
}
