//! Whether a worker name can stand in run leases and in the list of workers a run
//! (or plan run) keeps — a comma-separated column the evidence report reads back.

/// The longest worker name: a host name and a process id, with room to spare.
pub(super) const MAX_LEN: usize = 64;

/// What is wrong with `name` as `[engine] worker_name`, if anything.
pub(super) fn worker_name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:@-".contains(c);
    if name.is_empty() || name.len() > MAX_LEN || !name.chars().all(allowed) {
        Some(format!(
            "engine.worker_name `{name}` must be 1 to {MAX_LEN} letters, digits and `._:@-` \
             (a host name, say `dr-site-a-1`): it is written in run leases and in each run's \
             list of workers"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_passes_and_a_comma_a_space_or_nothing_does_not() {
        for good in [
            "dr-site-a-1",
            "oma1.example.com-4242",
            "worker@site:2",
            "w_1",
        ] {
            assert_eq!(worker_name_problem(good), None, "{good}");
        }
        let long = "w".repeat(MAX_LEN + 1);
        for bad in ["", "a,b", "two words", "tab\tname", "é", long.as_str()] {
            let problem = worker_name_problem(bad).expect(bad);
            assert!(problem.contains("engine.worker_name"), "{problem}");
        }
    }
}
