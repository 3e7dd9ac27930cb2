//! The one rule of deleting a volume, wherever the request is checked (in the daemon
//! before it submits, in the engine's [`crate::Agent`] before it asks an agent): a
//! replica volume never, and otherwise only a volume ferry created.

use ids::VolumeId;

use crate::error::{Error, Result};
use crate::journal::Journal;

/// Refuses a replica volume ([`Error::ReplicaVolume`]).
pub(crate) async fn refuse_replica(journal: &dyn Journal, volume_id: &VolumeId) -> Result<()> {
    if journal
        .is_replica(volume_id)
        .await
        .map_err(Error::journal)?
    {
        return Err(Error::ReplicaVolume {
            volume_id: volume_id.to_string(),
        });
    }
    Ok(())
}

/// Refuses a replica volume, and a volume ferry did not create
/// ([`Error::NotCreatedByFerry`]).
pub(crate) async fn may_delete(journal: &dyn Journal, volume_id: &VolumeId) -> Result<()> {
    refuse_replica(journal, volume_id).await?;
    if !journal
        .is_created_volume(volume_id)
        .await
        .map_err(Error::journal)?
    {
        return Err(Error::NotCreatedByFerry {
            volume_id: volume_id.to_string(),
        });
    }
    Ok(())
}
