//! Which database a store is on, told from the URL an operator gives, and that URL
//! made fit for messages. A leaf of the crate (it uses nothing else in it), so that
//! both the errors, which name a backend, and the pool, which opens one, can use it.

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Accepts `sqlite://…`, `sqlite::memory:`, `postgres://…`/`postgresql://…`, or a
/// plain file path (SQLite). SQLite files are created on first start. A URL it does
/// not accept comes back as the error, without its password.
pub(crate) fn normalize_url(url: &str) -> Result<(String, Backend), String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Backend::Postgres));
    }
    let sqlite = if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest == ":memory:" {
            return Ok((url.to_string(), Backend::Sqlite));
        }
        url.to_string()
    } else if url.contains("://") || url.is_empty() {
        return Err(redact_url(url));
    } else {
        format!("sqlite://{url}")
    };
    let with_mode = if sqlite.contains("mode=") {
        sqlite
    } else if sqlite.contains('?') {
        format!("{sqlite}&mode=rwc")
    } else {
        format!("{sqlite}?mode=rwc")
    };
    Ok((with_mode, Backend::Sqlite))
}

/// A database URL without its password, for messages and logs. The userinfo ends at
/// the *last* `@`: a password with a raw `@` in it is hidden whole, never in part.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_is_not_printed() {
        assert_eq!(
            redact_url("postgres://ferry:s3cret@db/ferry"),
            "postgres://ferry:***@db/ferry"
        );
        assert_eq!(
            redact_url("postgres://ferry@db/ferry"),
            "postgres://ferry@db/ferry"
        );
        // A raw `@` in the password: none of it is printed.
        assert_eq!(
            redact_url("postgres://ferry:p@ss@db/ferry"),
            "postgres://ferry:***@db/ferry"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("/var/lib/ferry/ferry.db").unwrap(),
            (
                "sqlite:///var/lib/ferry/ferry.db?mode=rwc".to_string(),
                Backend::Sqlite
            )
        );
        assert_eq!(
            normalize_url("postgres://u@h/db").unwrap().1,
            Backend::Postgres
        );
        assert!(normalize_url("mysql://x").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
