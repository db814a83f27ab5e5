//! Dual control: in a vault that asks for it, destroying or removing a key is a request that a
//! second, different principal approves (or anyone permitted rejects) within a day.

use uuid::Uuid;

use super::{Keyplane, now};
use crate::authz::{Caller, Permission};
use crate::error::{Error, ErrorCode, Result};
use crate::etag::{self, IfMatch};
use crate::lifecycle::{self, KeyAction};
use crate::model::{Approval, ApprovalAction, ApprovalState, ManagedKey, VaultView, new_id};

/// How long a request waits for its approval.
pub const APPROVAL_TTL: chrono::Duration = chrono::Duration::hours(24);

/// What an action guarded by dual control came to: done, or a request awaiting approval.
#[derive(Debug)]
pub enum Decided<T> {
    Done(T),
    Requested(Approval),
}

fn key_action(action: ApprovalAction) -> KeyAction {
    match action {
        ApprovalAction::DestroyKey => KeyAction::Destroy,
        ApprovalAction::RemoveKey => KeyAction::Remove,
    }
}

impl Keyplane {
    pub async fn dual_control(&self, caller: &Caller, vault_id: Uuid) -> Result<bool> {
        self.get_vault(caller, vault_id).await?;
        self.store.dual_control(vault_id).await
    }

    /// Dual control guards destroys against a single vault administrator: only an
    /// administrator switches it.
    pub async fn set_dual_control(
        &self,
        caller: &Caller,
        vault_id: Uuid,
        enabled: bool,
    ) -> Result<VaultView> {
        let vault = self.load_vault(vault_id).await?;
        caller.require_in(Permission::Administer, vault_id, || {
            Error::not_found("vault", vault_id)
        })?;
        self.store.set_dual_control(vault_id, enabled).await?;
        Ok(vault)
    }

    /// In a vault under dual control, records a request for `action` on the key instead of
    /// acting, and returns it; `None` where the action goes ahead now. The request must be
    /// possible now and carry the key's current ETag; `answer` is the status the call gives.
    pub(super) async fn request_approval(
        &self,
        caller: &Caller,
        key: &ManagedKey,
        if_match: Option<&IfMatch>,
        action: ApprovalAction,
        answer: u16,
    ) -> Result<Option<Approval>> {
        if !self.store.dual_control(key.vault.id).await? {
            return Ok(None);
        }
        etag::check(if_match, key.revision, key.id)?;
        lifecycle::transition(
            &super::keys::facts(key, None),
            key_action(action),
            &self.policy,
            now(),
        )?;
        let requested_at = now();
        let approval = Approval {
            id: new_id(),
            vault_id: key.vault.id,
            action,
            key_id: key.id,
            requested_by: caller.actor.0.clone(),
            requested_at,
            expires_at: requested_at + APPROVAL_TTL,
            state: ApprovalState::Pending,
            decided_by: None,
            decided_at: None,
        };
        crate::audit::answers_with(answer);
        self.store.insert_approval(&approval).await?;
        Ok(Some(approval))
    }

    async fn load_approval(&self, id: Uuid) -> Result<Approval> {
        self.store
            .get_approval(id)
            .await?
            .ok_or_else(|| Error::not_found("approval", id))
    }

    /// A request is read by whoever can read its vault.
    pub async fn get_approval(&self, caller: &Caller, id: Uuid) -> Result<Approval> {
        let approval = self.load_approval(id).await?;
        caller.require_in(Permission::Read, approval.vault_id, || {
            Error::not_found("approval", id)
        })?;
        Ok(approval)
    }

    /// Requests in the vaults the caller may list (`vault_ids` narrows them; empty: all).
    pub async fn list_approvals(
        &self,
        caller: &Caller,
        mut vault_ids: Vec<Uuid>,
    ) -> Result<Vec<Approval>> {
        caller.narrow_listing(&mut vault_ids)?;
        self.store.list_approvals(&vault_ids).await
    }

    /// A request is decided by whoever may do what it asks.
    async fn approval_to_decide(&self, caller: &Caller, id: Uuid) -> Result<Approval> {
        let approval = self.load_approval(id).await?;
        let hidden = || Error::not_found("approval", id);
        if !caller.grants.sees(approval.vault_id) {
            return Err(hidden());
        }
        let key = self.load_key(approval.key_id).await?;
        let permission = Permission::for_lifecycle(key_action(approval.action), key.state);
        caller.require_in(permission, approval.vault_id, hidden)?;
        Ok(approval)
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
    pub async fn approve(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<(Approval, Option<ManagedKey>)> {
        let mut approval = self.approval_to_decide(caller, id).await?;
        Self::check_pending(&approval)?;
        // Identities, not how each signed in: a principal's certificate is still the principal.
        if crate::model::identity_of(&approval.requested_by) == caller.actor.identity() {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                "dual control: a second, different principal must approve",
            ));
        }
        // The request is claimed before its action runs: a concurrent approval or rejection
        // then finds it decided, and an action is never carried out for a rejected request.
        approval.state = ApprovalState::Approved;
        approval.decided_by = Some(caller.actor.0.clone());
        approval.decided_at = Some(now());
        self.store.decide_approval(&approval).await?;
        match self.approved_action(caller, &approval).await {
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

    /// The approved action, carried out as the approver (dual control aside: this is it).
    async fn approved_action(
        &self,
        caller: &Caller,
        approval: &Approval,
    ) -> Result<Option<ManagedKey>> {
        let key = self.load_key(approval.key_id).await?;
        let current = IfMatch::parse(&etag::etag(key.revision, key.id));
        Ok(match approval.action {
            ApprovalAction::DestroyKey => Some(
                self.apply_with(
                    caller,
                    approval.key_id,
                    Some(&current),
                    KeyAction::Destroy,
                    None,
                )
                .await?,
            ),
            ApprovalAction::RemoveKey => {
                self.remove_key(caller, approval.key_id, Some(&current))
                    .await?;
                None
            }
        })
    }

    /// The request awaiting a decision on `action` for the key, if there is one.
    pub(super) async fn pending_request(
        &self,
        key: &ManagedKey,
        action: ApprovalAction,
    ) -> Result<Option<Approval>> {
        let at = now();
        Ok(self
            .store
            .list_approvals(&[key.vault.id])
            .await?
            .into_iter()
            .find(|a| {
                a.key_id == key.id
                    && a.action == action
                    && a.state == ApprovalState::Pending
                    && !a.expired(at)
            }))
    }

    pub async fn reject(&self, caller: &Caller, id: Uuid) -> Result<Approval> {
        let mut approval = self.approval_to_decide(caller, id).await?;
        Self::check_pending(&approval)?;
        approval.state = ApprovalState::Rejected;
        approval.decided_by = Some(caller.actor.0.clone());
        approval.decided_at = Some(now());
        crate::audit::note_target("approvals", id, Some(approval.vault_id));
        self.store.decide_approval(&approval).await?;
        Ok(approval)
    }
}
