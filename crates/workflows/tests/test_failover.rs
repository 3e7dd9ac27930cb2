//! Test failover (replica mode) and cleanup of the job sheet's pgtest1, end to end
//! against cloudsim (port 0, hot-plug into a temp sysfs tree), with the in-process
//! volume daemon journaling into a SQLite store — and the invariants of DESIGN §5
//! checked against cloudsim's state after each run: every replica attached to exactly
//! one of {appliance, target VM}, nothing ferry created left behind, the store agreeing
//! with CloudStack, the replicas' content back to what it was.

use ::ids::ProtectedVmId;
mod common;

use common::flows::Flow;

use cloudsim::world::ids;
use common::{REPLICAS, TestResult, rig};
use engine::Outcome;
use store::{RunState, VmState};
use workflows::{cleanup, test_failover};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgtest1_goes_through_test_failover_and_cleanup_with_both_disks() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;

    let run = test_failover::start(&rig.env, "pgtest1").await?;
    rig.done(&run, test_failover::saga()).await?;

    let vms = rig.test_vms().await?;
    assert_eq!(vms.len(), 1);
    let target = &vms[0];
    assert_eq!(target.state, "Running");
    assert_eq!((target.cpunumber, target.memory), (Some(4), Some(8192)));
    assert_eq!(
        target.nic[0].macaddress.as_deref(),
        Some("00:50:56:8a:11:01")
    );
    assert_eq!(target.nic[0].networkid, ids::NETWORK_TEST);
    let mut on_target: Vec<(i64, String, String, i64)> = rig
        .volumes_on(&target.id)
        .await?
        .into_iter()
        .map(|v| {
            (
                v.deviceid.unwrap(),
                v.id.into_string(),
                v.volume_type,
                v.size >> 30,
            )
        })
        .collect();
    on_target.sort();
    assert_eq!(
        on_target,
        vec![
            (
                0,
                ids::PGTEST1_DISK_2000.to_string(),
                "ROOT".to_string(),
                107
            ),
            (
                1,
                ids::PGTEST1_DISK_2001.to_string(),
                "DATADISK".to_string(),
                10
            ),
        ],
        "boot disk at 0, data disk at 1, and nothing else (the placeholder ROOT is gone)"
    );
    for id in REPLICAS {
        assert!(!rig.guest_sees(id), "the appliance no longer sees {id}");
    }
    let vm = rig
        .assert_recorded(VmState::TestFailedOver, &target.id)
        .await?;
    assert_eq!(
        vm.disks[0].attachment.vm_id.as_ref().map(|id| id.as_str()),
        Some(target.id.as_str())
    );
    let map = rig.step_output(&run, "verify").await?;
    assert_eq!(map["device_map"][0]["device_id"], 0);
    assert_eq!(map["device_map"][1]["volume_id"], ids::PGTEST1_DISK_2001);
    let during = rig.generations().await?;
    assert!(
        REPLICAS.iter().all(|id| during[*id] > before[*id]),
        "the test VM wrote to its disks"
    );
    assert!(
        test_failover::start(&rig.env, "pgtest1").await.is_err(),
        "not ready for another drill"
    );

    let run = cleanup::start(&rig.env, "pgtest1").await?;
    rig.done(&run, cleanup::saga()).await?;
    rig.assert_at_rest_as(&before).await?;

    // And another drill can start.
    let again = test_failover::start(&rig.env, "pgtest1").await?;
    assert_eq!(
        rig.engine
            .execute(&again.id, &test_failover::saga(), &rig.env)
            .await?,
        Outcome::Done
    );
    Ok(())
}

/// The data disk's attach fails inside CloudStack's job: the run unwinds — boot disk
/// off the test VM, both replicas back on the appliance, test VM destroyed, snapshots
/// deleted — and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_data_disk_attach_unwinds_to_where_it_started() -> TestResult {
    let rig = rig().await?;
    let before = rig.generations().await?;
    let (run, error) = rig
        .unwound_by_a_failed_data_attach(Flow::TestReplica)
        .await?;
    assert!(error.contains("attach-replicas"), "{error}");
    assert!(error.contains("agent error"), "{error}");
    let record = rig.env.store.run(&run.id).await?.unwrap();
    assert_eq!(record.state, RunState::Unwound);
    rig.assert_at_rest_as(&before).await?;
    Ok(())
}

/// Twenty requests to fail over one VM at the same moment: exactly one run is
/// created; every other request is refused, naming the run that holds the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_for_one_vm_create_exactly_one_run() -> TestResult {
    let rig = rig().await?;
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let env = rig.env.clone();
            tokio::spawn(async move { test_failover::start(&env, "pgtest1").await })
        })
        .collect();
    let mut created = Vec::new();
    let mut refusals = Vec::new();
    for attempt in attempts {
        match attempt.await? {
            Ok(run) => created.push(run.id),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    assert_eq!(created.len(), 1, "runs created: {created:?}");
    assert_eq!(refusals.len(), 19);
    for refusal in &refusals {
        assert!(
            refusal.contains("already has an active run") && refusal.contains(created[0].as_str()),
            "a clear refusal naming the run: {refusal}"
        );
    }
    let vm = rig.env.store.vm("pgtest1").await?.unwrap();
    assert_eq!(
        rig.env
            .store
            .active_run(&ProtectedVmId::from(&vm.id))
            .await?
            .map(|r| r.id),
        Some(created[0].clone())
    );
    Ok(())
}
