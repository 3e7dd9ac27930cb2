//! Ids as types.
//!
//! ferry handles two families of ids that are all strings on the wire: CloudStack's
//! (a VM, a volume, a snapshot, an async job, a network, a zone, an offering, a
//! template) and ferry's own (a protected VM in the store, a run). As plain `String`s
//! they were interchangeable, and the same name meant different things: `vm_id` was
//! ferry's protected VM in a run and CloudStack's VM in a replica's attachment. Each
//! id is its own type here, so passing a VM id where a volume id is wanted, or ferry's
//! protected VM where CloudStack's VM is wanted, does not compile.
//!
//! The ids are leaves: they carry no behaviour of CloudStack or of the store, which is
//! why they live in their own crate that both the client and the store can use
//! without depending on each other.
//!
//! Every id serializes as its bare string (`#[serde(transparent)]`) and displays as
//! it, so JSON bodies, TOML, database text and recorded runs are the strings they
//! were. There is deliberately no `Deref<Target = str>`: an id does not silently turn
//! into a `&str` that another id's parameter would accept; [`VmId::as_str`] (and the
//! like) says so where text is really wanted.

/// Defines one id newtype over `String` with its conversions.
macro_rules! id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Default,
            serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id whose text is `id`.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(id: &String) -> Self {
                $name(id.clone())
            }
        }

        impl From<&&str> for $name {
            fn from(id: &&str) -> Self {
                $name((*id).to_string())
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

id! {
    /// A CloudStack virtual machine's id (`virtualmachine.id`, `virtualmachineid`).
    VmId
}
id! {
    /// A CloudStack volume's id (`volume.id`, `volumeid`).
    VolumeId
}
id! {
    /// A CloudStack volume snapshot's id (`snapshot.id`, `snapshotid`).
    SnapshotId
}
id! {
    /// A CloudStack async job's id (`jobid`).
    JobId
}
id! {
    /// A CloudStack network's id (`network.id`, `networkid`).
    NetworkId
}
id! {
    /// A CloudStack zone's id (`zone.id`, `zoneid`).
    ZoneId
}
id! {
    /// A CloudStack service offering's id (`serviceofferingid`).
    ServiceOfferingId
}
id! {
    /// A CloudStack template's id (`templateid`).
    TemplateId
}
id! {
    /// A VM ferry protects: its id in ferry's store (`protected_vms.id`), which is
    /// not a CloudStack id; the VM that runs in CloudStack after a failover has a
    /// [`VmId`].
    ProtectedVmId
}
id! {
    /// One run of a workflow in ferry's store (`runs.id`).
    RunId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_serializes_as_its_bare_string() {
        let id = VolumeId::new("6d2f3a1c-9b7e");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"6d2f3a1c-9b7e\"");
        let back: VolumeId = serde_json::from_str("\"6d2f3a1c-9b7e\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(id.to_string(), "6d2f3a1c-9b7e");
        assert_eq!(id, "6d2f3a1c-9b7e");
    }
}
