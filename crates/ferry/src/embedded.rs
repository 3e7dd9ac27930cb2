//! What `ferry demo` and `ferry bench` share: ferry's server run inside this process,
//! on a config each builds for its simulated cloud, and reached through the same API
//! client the operator's commands use — so what they show and measure is what an
//! operator would see, HTTP included.

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::client::api::Api;

/// `server::start` in this process, with an API token made for it alone.
pub struct Embedded {
    /// The client of its REST API, holding the token.
    pub api: Api,
    /// Its REST API's URL, `http://ADDR`.
    pub url: String,
    /// The API's bearer token, for whoever else is to use this server.
    pub token: String,
    /// The running server: its state (the CloudStack client among it) and task.
    pub running: server::Running,
    shutdown: CancellationToken,
}

impl Embedded {
    /// Starts the server on `config`, with CloudStack's secret key, serving on
    /// `listener`.
    pub async fn start(
        config: server::Config,
        cloudstack_secret: &str,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Embedded> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        // The appliances' agents, if any, are reached with the tokens their entries
        // name (`ferry bench --agents`).
        let agent_tokens = config.agent_tokens(|name| std::env::var(name).ok())?;
        let settings = server::Settings {
            config,
            cloudstack_secret: SecretString::from(cloudstack_secret.to_string()),
            api_token: SecretString::from(token.clone()),
            agent_tokens,
        };
        let shutdown = CancellationToken::new();
        let running = server::start(settings, listener, shutdown.clone()).await?;
        let url = format!("http://{}", running.addr);
        let api = Api::new(&url, SecretString::from(token.clone()));
        Ok(Embedded {
            api,
            url,
            token,
            running,
            shutdown,
        })
    }

    /// Stops the server and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.running.task.await;
    }
}

/// cloudsim's time scale as a speed, for "N× real time": `0.05` is `20`.
pub fn format_speed(time_scale: f64) -> String {
    let speed = 1.0 / time_scale;
    if (speed - speed.round()).abs() < 1e-9 {
        format!("{}", speed.round())
    } else {
        format!("{speed:.2}")
    }
}
