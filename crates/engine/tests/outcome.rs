//! How an execution's outcome reads in a log line.

use engine::Outcome;
use store::RunState;

#[test]
fn an_outcome_is_logged_in_words() {
    assert_eq!(Outcome::Done.to_string(), "done");
    assert_eq!(
        Outcome::Unwound {
            error: "host is in maintenance".into()
        }
        .to_string(),
        "unwound: host is in maintenance"
    );
    assert_eq!(Outcome::Stuck { error: "x".into() }.to_string(), "stuck: x");
    assert_eq!(
        Outcome::Ended(RunState::Abandoned).to_string(),
        "ended: already abandoned"
    );
}
