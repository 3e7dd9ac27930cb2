//! Console sessions: who signed in with the API token, kept in this process's memory.
//!
//! A session is a random 256-bit id, handed to the browser in an `HttpOnly;
//! SameSite=Strict` cookie; the token itself never leaves the sign-in form. The server
//! keeps only the SHA-256 digest of each id, so a dump of its memory names no
//! session, and looks a cookie up by comparing its digest with *every* session's in
//! constant time — neither the lookup's time nor its path depends on where two ids
//! differ. Each session has its own random CSRF token, which every form of the console
//! carries and every POST must send back (`guard`).
//!
//! Sessions end at their expiry, at sign-out, or when `ferry serve` stops: nothing is
//! written to the database, so a restart signs everyone out (docs/console.md). At
//! most [`MAX_SESSIONS`] live at once; past that, signing in drops the oldest.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "ferry_session";

/// How many sessions live at once, at most.
pub const MAX_SESSIONS: usize = 1000;

/// A signed-in browser, as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every form of this session carries (`csrf`).
    pub csrf: String,
    /// The name the operator gave when signing in, if any: whose request the runs
    /// started in this session were, as the evidence report says.
    pub who: Option<String>,
    /// When it ends, Unix milliseconds (for the page footer).
    pub expires_at_ms: i64,
}

impl Session {
    /// Who asks, as a run started in this session records it.
    pub fn requested_by(&self) -> String {
        match &self.who {
            Some(who) => format!("{who} (web console)"),
            None => "web console".to_string(),
        }
    }

    /// Whether `presented` is this session's CSRF token (in constant time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        // Digests of equal length, so the comparison's time does not depend on the
        // presented token's length either.
        let a = Sha256::digest(presented.as_bytes());
        let b = Sha256::digest(self.csrf.as_bytes());
        bool::from(a.ct_eq(&b))
    }
}

struct Entry {
    digest: [u8; 32],
    session: Session,
    created: Instant,
    expires: Instant,
}

/// The live sessions of this process.
pub struct Sessions {
    lifetime: Duration,
    entries: Mutex<Vec<Entry>>,
}

/// The operating system could not give random bytes: no session is made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct NoRandom(String);

fn random_256() -> Result<[u8; 32], NoRandom> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| NoRandom(e.to_string()))?;
    Ok(bytes)
}

/// A cookie value as this module writes them: 32 bytes, base64url without padding.
fn decode_id(value: &str) -> Option<[u8; 32]> {
    if value.len() != 43 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(value).ok()?.try_into().ok()
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions {
            lifetime,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Starts a session of `who` (if they said): its cookie value (the id) and the
    /// session.
    pub fn create(&self, who: Option<String>) -> Result<(String, Session), NoRandom> {
        let id = random_256()?;
        let session = Session {
            csrf: URL_SAFE_NO_PAD.encode(random_256()?),
            who,
            expires_at_ms: store::now_ms() + self.lifetime.as_millis() as i64,
        };
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| e.expires > now);
        if entries.len() >= MAX_SESSIONS
            && let Some(oldest) = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.created)
                .map(|(i, _)| i)
        {
            entries.swap_remove(oldest);
        }
        entries.push(Entry {
            digest: Sha256::digest(id).into(),
            session: session.clone(),
            created: now,
            expires: now + self.lifetime,
        });
        Ok((URL_SAFE_NO_PAD.encode(id), session))
    }

    /// The live session whose cookie value is `value`.
    pub fn get(&self, value: &str) -> Option<Session> {
        let digest: [u8; 32] = Sha256::digest(decode_id(value)?).into();
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        // Every entry is compared, whatever matched before.
        for e in entries.iter() {
            let same = bool::from(e.digest.ct_eq(&digest));
            if same && e.expires > now {
                found = Some(e.session.clone());
            }
        }
        found
    }

    /// Ends the session whose cookie value is `value`, if it lives.
    pub fn remove(&self, value: &str) {
        let Some(id) = decode_id(value) else {
            return;
        };
        let digest: [u8; 32] = Sha256::digest(id).into();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| !bool::from(e.digest.ct_eq(&digest)));
    }

    /// How many sessions live now.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().filter(|e| e.expires > now).count()
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The `Set-Cookie` value that hands a session to the browser: `Secure` when the
/// browser reached the console over TLS.
pub fn set_cookie(value: &str, lifetime: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        lifetime.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_by_nothing_else() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (a, session_a) = sessions.create(None).expect("random");
        let (b, _) = sessions.create(None).expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "256 bits, base64url");
        assert_eq!(sessions.get(&a).expect("found").csrf, session_a.csrf);
        // A changed character, a cut value, another length, garbage: none is a session.
        let mut changed = a.clone().into_bytes();
        changed[10] = if changed[10] == b'A' { b'B' } else { b'A' };
        assert!(sessions.get(&String::from_utf8(changed).unwrap()).is_none());
        assert!(sessions.get(&a[..42]).is_none());
        assert!(sessions.get("").is_none());
        assert!(sessions.get(&"!".repeat(43)).is_none());
        sessions.remove(&a);
        assert!(sessions.get(&a).is_none(), "signed out");
        assert!(sessions.get(&b).is_some(), "another session stays");
    }

    #[test]
    fn a_session_ends_at_its_expiry() {
        let sessions = Sessions::new(Duration::ZERO);
        let (a, _) = sessions.create(None).expect("random");
        assert!(sessions.get(&a).is_none());
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn the_oldest_session_goes_when_there_are_too_many() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (first, _) = sessions.create(None).expect("random");
        for _ in 1..MAX_SESSIONS {
            sessions.create(None).expect("random");
        }
        assert!(sessions.get(&first).is_some());
        let (last, _) = sessions.create(None).expect("random");
        assert!(sessions.get(&first).is_none());
        assert!(sessions.get(&last).is_some());
        assert_eq!(sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn the_csrf_token_must_be_sent_back_exactly() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (_, session) = sessions.create(None).expect("random");
        assert!(session.csrf_matches(Some(&session.csrf)));
        assert!(!session.csrf_matches(None));
        assert!(!session.csrf_matches(Some("")));
        assert!(!session.csrf_matches(Some(&session.csrf[1..])));
        let (_, other) = sessions.create(None).expect("random");
        assert!(!session.csrf_matches(Some(&other.csrf)));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let plain = set_cookie("abc", Duration::from_secs(3600), false);
        assert_eq!(
            plain,
            "ferry_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        assert!(set_cookie("abc", Duration::from_secs(1), true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(
            cookie_value("a=1; ferry_session=xyz; b=2", COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("ferry_sessionx=1", COOKIE), None);
    }
}
