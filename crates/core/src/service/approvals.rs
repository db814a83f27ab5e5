//! Dual control: in a vault that asks for it, destroying or removing a key is a request that a
//! second, different principal approves (or anyone permitted rejects) within a day.

use uuid::Uuid;

use super::{Keyplane, now};
use crate::error::{Error, ErrorCode, Result};
use crate::etag::{self, IfMatch};
use crate::lifecycle::{self, KeyAction};
use crate::model::{Actor, Approval, ApprovalAction, ApprovalState, ManagedKey, VaultView, new_id};

/// How long a request waits for its approval.
pub const APPROVAL_TTL: chrono::Duration = chrono::Duration::hours(24);

/// Whether an action goes ahead now or waits for approval.
pub enum Gate {
    Proceed,
    Pending(Approval),
}

fn key_action(action: ApprovalAction) -> KeyAction {
    match action {
        ApprovalAction::DestroyKey => KeyAction::Destroy,
        ApprovalAction::RemoveKey => KeyAction::Remove,
    }
}

impl Keyplane {
    pub async fn dual_control(&self, vault_id: Uuid) -> Result<bool> {
        self.get_vault(vault_id).await?;
        self.store.dual_control(vault_id).await
    }

    pub async fn set_dual_control(&self, vault_id: Uuid, enabled: bool) -> Result<VaultView> {
        let vault = self.get_vault(vault_id).await?;
        self.store.set_dual_control(vault_id, enabled).await?;
        Ok(vault)
    }

    /// In a vault under dual control, records a request for `action` on the key instead of
    /// acting. The request must be possible now and carry the key's current ETag.
    pub async fn gate(
        &self,
        actor: &Actor,
        key_id: Uuid,
        if_match: Option<&IfMatch>,
        action: ApprovalAction,
    ) -> Result<Gate> {
        let key = self.get_key(key_id).await?;
        if !self.store.dual_control(key.vault.id).await? {
            return Ok(Gate::Proceed);
        }
        etag::check(if_match, key.revision, key_id)?;
        lifecycle::transition(
            &super::keys::facts(&key, None),
            key_action(action),
            &self.policy,
            now(),
        )?;
        let requested_at = now();
        let approval = Approval {
            id: new_id(),
            vault_id: key.vault.id,
            action,
            key_id,
            requested_by: actor.0.clone(),
            requested_at,
            expires_at: requested_at + APPROVAL_TTL,
            state: ApprovalState::Pending,
            decided_by: None,
            decided_at: None,
        };
        self.store.insert_approval(&approval).await?;
        Ok(Gate::Pending(approval))
    }

    pub async fn get_approval(&self, id: Uuid) -> Result<Approval> {
        self.store
            .get_approval(id)
            .await?
            .ok_or_else(|| Error::not_found("approval", id))
    }

    pub async fn list_approvals(&self, vault_ids: &[Uuid]) -> Result<Vec<Approval>> {
        self.store.list_approvals(vault_ids).await
    }

    fn check_pending(approval: &Approval) -> Result<()> {
        if approval.state != ApprovalState::Pending {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                format!("the approval is already {}", approval.state.as_str()),
            ));
        }
        if approval.expired(now()) {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                "the approval expired; request the action again",
            ));
        }
        Ok(())
    }

    /// Approves a request and carries out its action; the approver must not be the requester.
    /// Returns the key as the action left it (`None` once removed).
    pub async fn approve(&self, actor: &Actor, id: Uuid) -> Result<(Approval, Option<ManagedKey>)> {
        let mut approval = self.get_approval(id).await?;
        Self::check_pending(&approval)?;
        // A principal calling with its client certificate is `cert:<name>`: still the same one.
        let same =
            |a: &str, b: &str| a.trim_start_matches("cert:") == b.trim_start_matches("cert:");
        if same(&approval.requested_by, &actor.0) {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                "dual control: a second, different principal must approve",
            ));
        }
        // The request is claimed before its action runs: a concurrent approval or rejection
        // then finds it decided, and an action is never carried out for a rejected request.
        approval.state = ApprovalState::Approved;
        approval.decided_by = Some(actor.0.clone());
        approval.decided_at = Some(now());
        self.store.decide_approval(&approval).await?;
        match self.approved_action(actor, &approval).await {
            Ok(key) => Ok((approval, key)),
            Err(e) => {
                // Not carried out: the request waits again for a decision.
                if let Err(reopen) = self.store.reopen_approval(approval.id).await {
                    tracing::error!(error = %reopen, approval = %approval.id, "an approval whose action failed could not be reopened");
                }
                Err(e)
            }
        }
    }

    async fn approved_action(
        &self,
        actor: &Actor,
        approval: &Approval,
    ) -> Result<Option<ManagedKey>> {
        let key = self.get_key(approval.key_id).await?;
        let current = IfMatch::parse(&etag::etag(key.revision, key.id));
        Ok(match approval.action {
            ApprovalAction::DestroyKey => Some(
                self.destroy_key(actor, approval.key_id, Some(&current))
                    .await?,
            ),
            ApprovalAction::RemoveKey => {
                self.delete_key(approval.key_id, Some(&current)).await?;
                None
            }
        })
    }

    pub async fn reject(&self, actor: &Actor, id: Uuid) -> Result<Approval> {
        let mut approval = self.get_approval(id).await?;
        Self::check_pending(&approval)?;
        approval.state = ApprovalState::Rejected;
        approval.decided_by = Some(actor.0.clone());
        approval.decided_at = Some(now());
        crate::audit::note_target("approvals", id, Some(approval.vault_id));
        self.store.decide_approval(&approval).await?;
        Ok(approval)
    }
}
