//! System operations: the seal, unseal and master key rotation.

use crate::authz::{Caller, Permission};
use crate::error::Result;
use crate::ports::{MasterKeyRotation, SealStatus, UnsealSecret};

use super::Keyplane;

impl Keyplane {
    /// Cheap enough for every request.
    pub fn is_sealed(&self) -> bool {
        self.engine.is_sealed()
    }

    /// The seal's state, for the node itself (its health answer).
    pub fn seal_status(&self) -> SealStatus {
        self.engine.seal_status()
    }

    /// Whether this node can serve: its store answers (within two seconds), the database schema
    /// is the one this build knows (its migrations are done), and it is unsealed. The reasons
    /// it cannot, in words for an operator; none when it is ready. For load balancers and
    /// orchestrators: it says nothing secret.
    pub async fn readiness(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        let store = async {
            self.store.ping().await?;
            self.store.schema_versions().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(2), store).await {
            Err(_) => reasons.push("the database did not answer within 2 s".to_owned()),
            Ok(Err(_)) => reasons.push("the database does not answer".to_owned()),
            Ok(Ok((current, known))) if current != known => reasons.push(format!(
                "the database schema is at version {current}; this keyplane needs {known}"
            )),
            Ok(Ok(_)) => {}
        }
        if self.engine.is_sealed() {
            reasons.push("sealed".to_owned());
        }
        reasons
    }

    /// The seal's state and unseal progress, for administrators.
    pub fn read_seal_status(&self, caller: &Caller) -> Result<SealStatus> {
        caller.require(Permission::Administer)?;
        Ok(self.engine.seal_status())
    }

    /// Submits one unseal secret. `secret` is what the request said, still to be read: the
    /// caller is decided on first, so one without the right learns nothing of the body's rules.
    pub async fn unseal(
        &self,
        caller: &Caller,
        secret: Result<UnsealSecret>,
    ) -> Result<SealStatus> {
        caller.require(Permission::Administer)?;
        let secret = secret?;
        let actor = &caller.actor;
        let status = self.engine.unseal(secret).await;
        match &status {
            Ok(s) if !s.sealed => tracing::warn!(actor = %actor.0, "keyplane unsealed"),
            Ok(s) => tracing::info!(actor = %actor.0, progress = ?s.progress, "unseal progress"),
            Err(e) => tracing::warn!(actor = %actor.0, error = %e, "unseal attempt refused"),
        }
        status
    }

    /// The emergency button: every key in memory is forgotten at once.
    pub fn seal(&self, caller: &Caller) -> Result<SealStatus> {
        caller.require(Permission::Administer)?;
        let actor = &caller.actor;
        self.engine.seal();
        tracing::warn!(actor = %actor.0, "keyplane sealed");
        Ok(self.engine.seal_status())
    }

    pub async fn rotate_master_key(&self, caller: &Caller) -> Result<MasterKeyRotation> {
        caller.require(Permission::Administer)?;
        let actor = &caller.actor;
        let rotation = self.engine.rotate_master_key().await?;
        tracing::warn!(
            actor = %actor.0,
            previous = %rotation.previous_master_key_id,
            current = %rotation.master_key_id,
            vault_keys = rotation.vault_keys_rewrapped,
            "master key rotated"
        );
        Ok(rotation)
    }
}
