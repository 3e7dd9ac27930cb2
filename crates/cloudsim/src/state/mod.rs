//! The simulated cloud: VMs, volumes, snapshots, offerings and jobs, and CloudStack's
//! rules for changing them.
//!
//! Each async command is split into the parts CloudStack runs at different times:
//! `*_create` (async-create commands only) runs synchronously inside the API call, as
//! CloudStack's `create()` does, and allocates the entity; `begin_*` runs when the
//! job reaches the head of its VM's queue and performs CloudStack's business
//! validation — so business errors arrive through `queryAsyncJobResult`, as in
//! CloudStack — and moves entities to their transitional state (`Attaching`,
//! `Starting`, …); `finish_*` runs after the job's latency and applies the result.
//! A job that is failed by an injected fault calls `abort_*` instead of `finish_*`.
//!
//! Error texts and codes are CloudStack's (see `shared/reference/cloudstack.md`).
//!
//! The rules are methods of one [`entities::State`], because a command on one resource
//! reads and changes the others (an attach checks the VM, a start readies its volumes),
//! but each file holds one resource's commands, so that a rule is found by what it
//! changes:
//!
//! - [`entities`]: the records (zones, offerings, networks, VMs, volumes, snapshots,
//!   jobs) and the lookups every rule shares;
//! - `seed`: the cloud a world file describes, as it is when cloudsim starts;
//! - `vms`: `deployVirtualMachine` (with its validation), start, stop and destroy;
//! - `addresses`: a network's CIDR, the NIC addresses allocated from it, and which of a
//!   VM's addresses its emulated guest may listen on;
//! - `volumes`: attach, detach, `createVolume` and `deleteVolume`;
//! - `snapshots`: create, revert and delete;
//! - `render`: the JSON objects CloudStack returns for each entity;
//! - [`fixed`]: the host, storage pool, physical network, network offerings and
//!   guest OS types those objects name, which no world file describes.
//!
//! This module holds no items of its own: its files use [`entities`] and each other,
//! never their parent.

mod addresses;
pub mod entities;
pub mod fixed;
mod render;
mod seed;
mod snapshots;
mod vms;
mod volumes;
