//! Plans checked and kept: the example file parses, every problem of a bad plan is
//! reported at once and nothing is written, VMs must be registered, an update says
//! what it changes (and a dry run writes nothing), removal frees the name — on SQLite
//! and PostgreSQL.

use inventory::Format;
use plans::{PlanDefinition, PlanError, Policy, catalog, check_plan};
use store::testing::TestStore;
use store::{Appliance, Controller, Disk, Firmware, GuestOs, GuestPrep, NewVm, Nic, Store, VmSpec};

type Result<T = ()> = anyhow::Result<T>;

const EXAMPLE: &str = include_str!("../../../docs/examples/shop.toml");

async fn with_vms(fx: TestStore, names: &[&str]) -> Result<TestStore> {
    let store = &fx.store;
    store
        .upsert_appliance(&Appliance {
            name: "oma".into(),
            vm_id: "vm-oma".into(),
            zone_id: "zone-1".into(),
            volumed_url: None,
            sysfs_root: Some("/".into()),
        })
        .await?;
    for (i, name) in names.iter().enumerate() {
        store.register_vm(&vm(name, i), &[]).await?;
    }
    Ok(fx)
}

fn vm(name: &str, i: usize) -> NewVm {
    NewVm {
        name: name.into(),
        source_id: format!("vm-{name}"),
        appliance: "oma".into(),
        spec: VmSpec {
            vcpu: 2,
            memory_mb: 2048,
            cpu_speed_mhz: 2000,
            firmware: Firmware::Bios,
            secure_boot: false,
            guest_os: GuestOs::Linux,
            guest_prep: GuestPrep::Skip,
        },
        nics: vec![Nic {
            position: 0,
            mac: format!("00:50:56:00:01:{i:02x}"),
            source_network: "VM Network".into(),
            test_network_id: "net-test".into(),
            test_ip: None,
            production_network_id: "net-prod".into(),
            production_ip: None,
        }],
        disks: vec![Disk {
            device_key: 2000,
            controller: Controller::Scsi,
            bus: 0,
            unit: 0,
            capacity_bytes: 1 << 30,
            label: "Hard disk 1".into(),
            is_boot: true,
            boot_order: None,
            replica_volume_id: format!("replica-{name}").as_str().into(),
        }],
    }
}

fn example() -> PlanDefinition {
    PlanDefinition::parse(EXAMPLE, Format::Toml).expect("the example parses")
}

fn fields(e: PlanError) -> Vec<String> {
    match e {
        PlanError::Invalid(problems) => problems.into_iter().map(|p| p.field).collect(),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn the_example_parses_and_is_valid_by_itself() {
    let plan = example();
    assert_eq!(plan.name, "shop");
    assert_eq!(plan.tiers.len(), 3);
    assert_eq!(plan.tiers[1].vms, ["orders1", "orders2"]);
    assert_eq!(plan.tiers[0].delay_after_secs, 60);
    assert_eq!(plan.on_failure.test, Policy::Stop);
    assert_eq!(plan.tiers[1].hooks.len(), 1);
    assert_eq!(check_plan(&plan), []);
    // Gates: the tier's, a VM's own, and `running` where the file gives none.
    let kinds = |vm: &str| -> Vec<String> {
        plan.gates_of(vm)
            .unwrap()
            .into_iter()
            .map(|g| g.kind.unwrap())
            .collect()
    };
    assert_eq!(kinds("pgtest1"), ["running", "tcp"]);
    assert_eq!(kinds("orders1"), ["running"]);
    assert_eq!(kinds("web1"), ["http"]);
    assert_eq!(plan.gates_of("web2").unwrap()[0].port, Some(8443));
    assert!(plan.gates_of("nobody").is_none());
    // The same plan as JSON reads the same, and the stored form reads back.
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(PlanDefinition::parse(&json, Format::Json).unwrap(), plan);
    assert_eq!(
        PlanDefinition::from_stored(&plan.to_stored()).unwrap(),
        plan
    );
    assert_eq!(plan.digest().len(), 64);
}

#[test]
fn every_problem_of_a_plan_is_reported_at_once() {
    let text = r#"
        name = "9 bad name"
        drill_interval_days = 0
        [[tiers]]
        name = "db"
        vms = ["pgtest1", "pgtest1"]
        delay_after_secs = 999999
        [[tiers]]
        name = "db"
        vms = []
        [[tiers.hooks]]
        when = "after"
        run = { kind = "command", program = " ", timeout_secs = 0 }
        [[tiers.gates]]
        kind = "tcp"
        port = 70000
        [[tiers.vm_gates.pgtest1]]
        kind = "http"
    "#;
    let plan = PlanDefinition::parse(text, Format::Toml).unwrap();
    let fields: Vec<String> = check_plan(&plan).into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "name",
            "drill_interval_days",
            "tiers[0].vms[1]",
            "tiers[0].delay_after_secs",
            "tiers[1].name",
            "tiers[1].vms",
            "tiers[1].hooks[0].run.program",
            "tiers[1].hooks[0].run.timeout_secs",
            "tiers[1].gates[0].port",
            "tiers[1].vm_gates.pgtest1",
            "tiers[1].vm_gates.pgtest1[0].port",
        ]
    );
    // An unknown field is refused, naming it.
    let typo = "name = \"x\"\n[[tiers]]\nname = \"a\"\nvms = [\"v\"]\ndelay_after = 5\n";
    let e = PlanDefinition::parse(typo, Format::Toml).unwrap_err();
    assert!(e.to_string().contains("delay_after"), "{e}");
}

async fn plans_are_checked_against_the_store_and_kept(fx: TestStore) -> Result {
    let fx = with_vms(fx, &["pgtest1", "orders1", "orders2", "web1"]).await?;
    let store: &Store = &fx.store;
    // web2 is not registered: refused, nothing written.
    let e = catalog::add(store, &example()).await.unwrap_err();
    assert_eq!(fields(e), ["tiers[2].vms[1]"]);
    assert!(catalog::get(store, "shop").await?.is_none());

    store.register_vm(&vm("web2", 9), &[]).await?;
    let added = catalog::add(store, &example()).await?;
    assert_eq!(added.definition, example());
    assert_eq!(added.plan.digest, example().digest());
    let tiers: Vec<(String, i64)> = added
        .plan
        .members
        .iter()
        .map(|m| (m.vm_name.clone(), m.tier))
        .collect();
    assert_eq!(tiers[0], ("pgtest1".to_string(), 0));
    assert_eq!(tiers.len(), 5);
    // A second plan of that name is refused.
    assert_eq!(
        fields(catalog::add(store, &example()).await.unwrap_err()),
        ["name"]
    );

    // An update says what it changes; a dry run writes nothing.
    let mut next = example();
    next.tiers[2].vms.retain(|v| v != "web2");
    next.tiers[1].vms.push("web2".into());
    next.tiers[0].delay_after_secs = 30;
    next.tiers[0].gates.pop();
    let own = next.tiers[2].vm_gates.remove("web2").unwrap();
    next.tiers[1].vm_gates.insert("web2".into(), own);
    let dry = catalog::update(store, &next, true).await?;
    assert!(!dry.written);
    assert_eq!(
        dry.changes,
        [
            "tier database: delay after 60 s → 30 s",
            "tier database: gates changed",
            "web2: tier web → services",
        ]
    );
    assert_eq!(
        catalog::get(store, "shop").await?.unwrap().definition,
        example()
    );
    let done = catalog::update(store, &next, false).await?;
    assert!(done.written);
    assert_eq!(done.stored.definition, next);
    assert_ne!(done.stored.plan.digest, added.plan.digest);
    // The same file again changes nothing.
    let again = catalog::update(store, &next, false).await?;
    assert!(!again.written && again.changes.is_empty());

    // A VM a plan names cannot be removed; removing the plan frees it and the name.
    assert!(store.remove_vm("web1").await.is_err());
    store.remove_plan("shop").await?;
    store.remove_vm("web1").await?;
    assert!(catalog::list(store).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn on_sqlite_plans_are_checked_against_the_store_and_kept() -> Result {
    plans_are_checked_against_the_store_and_kept(store::testing::sqlite().await?).await
}

#[tokio::test]
async fn on_postgres_plans_are_checked_against_the_store_and_kept() -> Result {
    plans_are_checked_against_the_store_and_kept(store::testing::postgres().await?).await
}

#[tokio::test]
async fn a_plan_needs_a_drill_until_one_is_done_and_again_when_something_changes() -> Result {
    const DAY: i64 = 86_400_000;
    let fx = with_vms(store::testing::sqlite().await?, &["pgtest1", "orders1"]).await?;
    let store: &Store = &fx.store;
    let text = "name = \"pg\"\ndrill_interval_days = 30\n[[tiers]]\nname = \"db\"\nvms = [\"pgtest1\"]\n[[tiers]]\nname = \"app\"\nvms = [\"orders1\"]\n";
    let plan = PlanDefinition::parse(text, Format::Toml)?;
    let stored = catalog::add(store, &plan).await?;
    let now = store::now_ms();
    let status = catalog::drill_status(store, &stored, now).await?;
    assert_eq!(status.reasons, ["it was never drilled"]);
    assert_eq!(status.last_drill_at, None);

    // A drill that ended done.
    let run = store
        .create_plan_run(&store::NewPlanRun {
            plan_id: stored.plan.id.clone(),
            workflow: store::Workflow::TestFailover,
            definition: stored.plan.definition.clone(),
            digest: stored.plan.digest.clone(),
            vms: stored
                .plan
                .members
                .iter()
                .map(|m| (m.vm_id.clone(), m.tier))
                .collect(),
            skipped: Vec::new(),
        })
        .await?;
    use store::PlanRunState::{Done, Pending, Running};
    assert!(
        store
            .move_plan_run(&run.id, 0, (Pending, 0), (Running, 0), None)
            .await?
    );
    assert!(
        store
            .move_plan_run(&run.id, 0, (Running, 0), (Done, 1), None)
            .await?
    );
    let status = catalog::drill_status(store, &stored, store::now_ms()).await?;
    assert!(!status.needs_drill(), "{status:?}");
    assert!(status.last_drill_at.is_some());
    // Older than the interval.
    let later = catalog::drill_status(store, &stored, store::now_ms() + 31 * DAY).await?;
    assert_eq!(later.reasons.len(), 1, "{later:?}");
    assert!(later.reasons[0].contains("31 days old"), "{later:?}");
    // A VM's definition changed since.
    let orders = store.vm("orders1").await?.expect("registered");
    let mut changed = vm("orders1", 1);
    changed.spec.memory_mb = 4096;
    store
        .update_vm(
            &orders.id,
            orders.version,
            &changed,
            &[],
            "[{\"field\":\"spec.memory_mb\"}]",
        )
        .await?;
    let status = catalog::drill_status(store, &stored, store::now_ms()).await?;
    assert_eq!(
        status.reasons,
        ["orders1's definition changed since the last drill"]
    );
    Ok(())
}
