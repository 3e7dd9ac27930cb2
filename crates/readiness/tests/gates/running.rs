//! The `running` gate with a fake CloudStack, and how a VM's gates run together:
//! in order, the first that does not pass ending the wait, cancellable.

use std::sync::atomic::Ordering;

use readiness::{Check, Verdict};
use tokio_util::sync::CancellationToken;

use crate::{FakeVm, gate, last_seen, ms, only, subject};

#[tokio::test]
async fn the_vm_passes_once_cloudstack_shows_it_running() {
    let vm = FakeVm {
        starting: 3,
        ..FakeVm::default()
    };
    let readiness = readiness::wait_ready(
        &[gate(Check::Running, ms(20_000), ms(20))],
        &subject(&[]),
        &vm,
        &CancellationToken::new(),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert_eq!(
        outcome.attempts, 4,
        "three looks saw Starting, the fourth Running"
    );
    assert_eq!(
        vm.looks.load(Ordering::SeqCst),
        4,
        "no look after it passed"
    );
    assert_eq!(last_seen(outcome), "state Running");
}

#[tokio::test]
async fn a_vm_that_never_runs_fails_with_the_state_it_showed() {
    let vm = FakeVm {
        starting: u32::MAX,
        ..FakeVm::default()
    };
    let readiness = readiness::wait_ready(
        &[gate(Check::Running, ms(200), ms(50))],
        &subject(&[]),
        &vm,
        &CancellationToken::new(),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert_eq!(last_seen(outcome), "state Starting");
    assert_eq!(vm.looks.load(Ordering::SeqCst), outcome.attempts);

    let unreadable = FakeVm {
        unreadable: true,
        ..FakeVm::default()
    };
    let readiness = readiness::wait_ready(
        &[gate(Check::Running, ms(200), ms(50))],
        &subject(&[]),
        &unreadable,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(
        last_seen(only(&readiness)),
        "cannot read the VM's state: listVirtualMachines: HTTP 530"
    );
}

#[tokio::test]
async fn gates_run_in_order_and_the_first_failure_ends_the_wait() {
    let vm = FakeVm {
        starting: u32::MAX,
        ..FakeVm::default()
    };
    let never_run = Check::Tcp {
        port: 1,
        connect_timeout: ms(100),
    };
    let readiness = readiness::wait_ready(
        &[
            gate(Check::Running, ms(150), ms(50)),
            gate(never_run, ms(60_000), ms(50)),
        ],
        &subject(&["127.0.0.1"]),
        &vm,
        &CancellationToken::new(),
    )
    .await;
    assert!(!readiness.ready);
    let verdicts: Vec<Verdict> = readiness.gates.iter().map(|g| g.verdict).collect();
    assert_eq!(verdicts, [Verdict::Failed, Verdict::NotRun]);
    let not_run = &readiness.gates[1];
    assert_eq!((not_run.attempts, &not_run.last_seen), (0, &None));
    assert_eq!(
        readiness.first_unready().map(|g| g.kind.as_str()),
        Some("running")
    );

    let all_pass = readiness::wait_ready(
        &[
            gate(Check::Running, ms(20_000), ms(50)),
            gate(Check::Running, ms(20_000), ms(50)),
        ],
        &subject(&[]),
        &FakeVm::default(),
        &CancellationToken::new(),
    )
    .await;
    assert!(all_pass.ready, "{all_pass:#?}");
    assert!(all_pass.gates.iter().all(|g| g.passed()));
    let none = crate::wait(&[], &subject(&[])).await;
    assert!(none.ready && none.gates.is_empty());
}

#[tokio::test]
async fn a_cancelled_wait_ends_the_gate_in_flight_at_once() {
    let vm = FakeVm {
        starting: u32::MAX,
        ..FakeVm::default()
    };
    let cancel = CancellationToken::new();
    let cancelling = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(ms(200)).await;
        cancelling.cancel();
    });
    let gates = [
        gate(Check::Running, ms(600_000), ms(20)),
        gate(Check::Running, ms(600_000), ms(20)),
    ];
    // Bounded so that a wait that ignores the token fails here rather than hanging.
    let readiness = tokio::time::timeout(
        ms(60_000),
        readiness::wait_ready(&gates, &subject(&[]), &vm, &cancel),
    )
    .await
    .expect("the wait ended when cancelled");
    let verdicts: Vec<Verdict> = readiness.gates.iter().map(|g| g.verdict).collect();
    assert_eq!(verdicts, [Verdict::Cancelled, Verdict::NotRun]);
    assert_eq!(last_seen(&readiness.gates[0]), "state Starting");
    assert!(!readiness.ready);
}

#[tokio::test]
async fn the_outcome_serializes_for_the_run_record() {
    let readiness = readiness::wait_ready(
        &[
            gate(Check::Running, ms(20_000), ms(50)),
            gate(
                Check::Tcp {
                    port: 5432,
                    connect_timeout: ms(100),
                },
                ms(1000),
                ms(50),
            ),
        ],
        &subject(&[]),
        &FakeVm::default(),
        &CancellationToken::new(),
    )
    .await;
    let json = serde_json::to_value(&readiness).expect("JSON");
    assert_eq!(json["ready"], false);
    assert_eq!(json["gates"][0]["kind"], "running");
    assert_eq!(json["gates"][0]["check"], "running");
    assert_eq!(json["gates"][0]["verdict"], "passed");
    assert!(json["gates"][0]["passed_at"].is_string());
    assert_eq!(json["gates"][1]["check"], "tcp port 5432");
    assert_eq!(json["gates"][1]["verdict"], "failed");
    assert!(json["gates"][1]["passed_at"].is_null());
    let back: readiness::Readiness = serde_json::from_value(json).expect("read back");
    assert_eq!(back, readiness);
}
