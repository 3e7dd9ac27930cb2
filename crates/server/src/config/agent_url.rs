//! Whether a volume agent's URL is one the engine may send its token and commands to.

/// Whether `url` is an http(s) URL, and plain http only to a loopback host.
pub(super) fn agent_url_problem(url: &str) -> Option<String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split('/').next().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.split(']').next())
            .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Some(format!(
                "`{url}` is plain http to a host that is not loopback: the agent's token and \
                 commands would cross the network in clear; use https:// (ferry volumed --tls-cert)"
            ));
        }
        rest
    } else {
        return Some(format!(
            "`{url}` is not an http(s) URL: use e.g. https://oma1.example.com:8091"
        ));
    };
    rest.split('/')
        .next()
        .filter(|h| !h.is_empty())
        .is_none()
        .then(|| format!("`{url}` names no host"))
}
