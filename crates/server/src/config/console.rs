//! The `[console]` section: whether `ferry serve` serves the web console, and how long
//! a console session lasts.

use serde::{Deserialize, Serialize};

/// The web console (docs/console.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Serve the console at `/` (`ferry serve --no-console` turns it off too).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// A session ends this many hours after its sign-in (or at sign-out, or when
    /// `ferry serve` stops).
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            enabled: default_enabled(),
            session_hours: default_session_hours(),
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_session_hours() -> u64 {
    12
}

/// The longest session: a week.
const MAX_SESSION_HOURS: u64 = 24 * 7;

impl ConsoleSection {
    /// What is wrong with the section, one sentence each.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_SESSION_HOURS).contains(&self.session_hours) {
            problems.push(format!(
                "console.session_hours must be between 1 and {MAX_SESSION_HOURS} (a week; got {})",
                self.session_hours
            ));
        }
        problems
    }

    /// How long a session lasts.
    pub fn session_lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.session_hours * 3600)
    }
}
