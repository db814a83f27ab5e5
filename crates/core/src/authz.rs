//! Roles and what they allow, after UKO's permission matrix (spec §8.1), with policies that
//! grant a role on every vault or on one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Actor, KeyState};

/// The service roles of UKO, and `administrator` (everything, including access management).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reader,
    KeyCustodianCreator,
    KeyCustodianDeployer,
    VaultAdministrator,
    Manager,
    Administrator,
}

impl Role {
    pub const ALL: [Self; 6] = [
        Self::Reader,
        Self::KeyCustodianCreator,
        Self::KeyCustodianDeployer,
        Self::VaultAdministrator,
        Self::Manager,
        Self::Administrator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::KeyCustodianCreator => "key_custodian_creator",
            Self::KeyCustodianDeployer => "key_custodian_deployer",
            Self::VaultAdministrator => "vault_administrator",
            Self::Manager => "manager",
            Self::Administrator => "administrator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One thing a call does, as the matrix names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read one key, keystore, template or vault.
    Read,
    /// List keys, keystores, templates or vaults.
    List,
    /// Create a key (write + generate material).
    KeyCreate,
    /// Edit a key's details, dates or tags.
    KeyEdit,
    KeyActivate,
    KeyDeactivate,
    KeyDestroyPreActive,
    KeyDestroyDeactivated,
    /// Remove a destroyed key from its vault (DELETE).
    KeyRemove,
    KeyRotate,
    /// Install into / unlink from keystores (sync, update from template).
    KeyDistribute,
    KeystoreWrite,
    KeystoreDelete,
    TemplateWrite,
    TemplateDelete,
    VaultWrite,
    VaultDelete,
    /// Wrap and unwrap with a key installed in an internal keystore (the data plane).
    KeyUse,
    /// Access management, the seal and the audit trail.
    Administer,
}

impl Permission {
    /// The permission a key lifecycle action needs, given the key's state.
    pub fn for_key_action(action: &str, state: KeyState) -> Option<Self> {
        Some(match (action, state) {
            ("activate", _) => Self::KeyActivate,
            ("deactivate" | "compromise", _) => Self::KeyDeactivate,
            ("destroy", KeyState::PreActivation) => Self::KeyDestroyPreActive,
            ("destroy", _) => Self::KeyDestroyDeactivated,
            ("rotate", _) => Self::KeyRotate,
            ("sync_status_in_keystores" | "update_from_template", _) => Self::KeyDistribute,
            _ => return None,
        })
    }
}

impl Permission {
    /// The permission a lifecycle action needs on a key in `state`.
    pub fn for_lifecycle(action: crate::lifecycle::KeyAction, state: KeyState) -> Self {
        use crate::lifecycle::KeyAction as A;
        match action {
            A::Remove => Self::KeyRemove,
            A::Edit => Self::KeyEdit,
            other => Self::for_key_action(other.name(), state).unwrap_or(Self::Administer),
        }
    }
}

/// Whether `role` allows `permission` (spec §8.1; `KeyUse` for every role that can read).
pub fn allows(role: Role, permission: Permission) -> bool {
    use Permission as P;
    use Role as R;
    match role {
        R::Administrator => true,
        R::Reader => matches!(permission, P::Read | P::KeyUse),
        R::Manager => matches!(permission, P::Read | P::List | P::KeyUse),
        R::KeyCustodianDeployer => matches!(
            permission,
            P::Read
                | P::List
                | P::KeyUse
                | P::KeyEdit
                | P::KeyActivate
                | P::KeyDeactivate
                | P::KeyDestroyPreActive
                | P::KeyDistribute
        ),
        R::KeyCustodianCreator => matches!(
            permission,
            P::Read
                | P::List
                | P::KeyUse
                | P::KeyCreate
                | P::KeyEdit
                | P::KeyDestroyPreActive
                | P::KeyRotate
                | P::KeyDistribute
                | P::TemplateWrite
        ),
        R::VaultAdministrator => matches!(
            permission,
            P::Read
                | P::List
                | P::KeyUse
                | P::KeyDestroyDeactivated
                | P::KeyRemove
                | P::KeystoreWrite
                | P::KeystoreDelete
                | P::TemplateWrite
                | P::TemplateDelete
                | P::VaultWrite
                | P::VaultDelete
        ),
    }
}

/// A role granted on every vault (`vault_id` none) or on one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub id: Uuid,
    pub principal_id: Uuid,
    pub role: Role,
    pub vault_id: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
}

/// What a caller may do: its roles on every vault and per vault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    everywhere: HashSet<Role>,
    per_vault: HashMap<Uuid, HashSet<Role>>,
}

/// The vaults a caller may list in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    All,
    Only(Vec<Uuid>),
}

impl Grants {
    /// Everything, as the admin tokens have.
    pub fn administrator() -> Self {
        Self::from_policies(&[(Role::Administrator, None)])
    }

    pub fn from_policies(policies: &[(Role, Option<Uuid>)]) -> Self {
        let mut grants = Self::default();
        for (role, vault) in policies {
            match vault {
                None => {
                    grants.everywhere.insert(*role);
                }
                Some(v) => {
                    grants.per_vault.entry(*v).or_default().insert(*role);
                }
            }
        }
        grants
    }

    fn roles_in(&self, vault: Option<Uuid>) -> impl Iterator<Item = &Role> {
        self.everywhere.iter().chain(
            vault
                .and_then(|v| self.per_vault.get(&v))
                .into_iter()
                .flatten(),
        )
    }

    /// Whether `permission` is granted in `vault` (`None`: a call outside any vault, which only
    /// roles held on every vault cover).
    pub fn allows(&self, permission: Permission, vault: Option<Uuid>) -> bool {
        self.roles_in(vault).any(|r| allows(*r, permission))
    }

    /// Whether the caller holds any role in `vault` (otherwise the vault's resources do not
    /// exist for it: 404, not 403).
    pub fn sees(&self, vault: Uuid) -> bool {
        !self.everywhere.is_empty() || self.per_vault.contains_key(&vault)
    }

    /// The vaults in which `permission` (a list) is granted.
    pub fn visible(&self, permission: Permission) -> Visible {
        if self.everywhere.iter().any(|r| allows(*r, permission)) {
            return Visible::All;
        }
        let mut vaults: Vec<Uuid> = self
            .per_vault
            .iter()
            .filter(|(_, roles)| roles.iter().any(|r| allows(*r, permission)))
            .map(|(v, _)| *v)
            .collect();
        vaults.sort_unstable();
        Visible::Only(vaults)
    }

    pub fn is_administrator(&self) -> bool {
        self.everywhere.contains(&Role::Administrator)
    }
}

/// Who calls an operation: the identity it acts as, and what its roles allow. Every operation
/// of a service takes one and decides on it, on the resource it loaded or the request it parsed.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub grants: Arc<Grants>,
}

impl Caller {
    pub fn new(actor: Actor, grants: Arc<Grants>) -> Self {
        Self { actor, grants }
    }

    /// A caller with every permission (an admin token, or keyplane itself).
    pub fn administrator(actor: Actor) -> Self {
        static EVERYTHING: std::sync::LazyLock<Arc<Grants>> =
            std::sync::LazyLock::new(|| Arc::new(Grants::administrator()));
        Self {
            actor,
            grants: EVERYTHING.clone(),
        }
    }

    /// Refuses (403) what the caller's roles held on every vault do not allow.
    pub fn require(&self, permission: Permission) -> Result<()> {
        if self.grants.allows(permission, None) {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    /// Refuses what the caller may not do in `vault`: as `hidden` says when it holds no role
    /// there (the resource does not exist for it, and the answer names nothing of it), 403
    /// when it sees the vault but its roles do not allow `permission`.
    pub fn require_in(
        &self,
        permission: Permission,
        vault: Uuid,
        hidden: impl FnOnce() -> Error,
    ) -> Result<()> {
        if self.grants.allows(permission, Some(vault)) {
            Ok(())
        } else if self.grants.sees(vault) {
            Err(Error::Forbidden)
        } else {
            Err(hidden())
        }
    }

    /// The vaults whose resources the caller may list; 403 when there are none.
    pub fn listing(&self) -> Result<Visible> {
        match self.grants.visible(Permission::List) {
            Visible::Only(v) if v.is_empty() => Err(Error::Forbidden),
            visible => Ok(visible),
        }
    }

    /// Narrows a list's vault filter to what the caller may list; a filter naming only hidden
    /// vaults names the nil id, which no vault has, so the list comes back empty.
    pub fn narrow_listing(&self, vault_ids: &mut Vec<Uuid>) -> Result<()> {
        let visible = self.listing()?;
        *vault_ids = visible
            .narrow(vault_ids)
            .unwrap_or_else(|| vec![Uuid::nil()]);
        Ok(())
    }
}

impl Visible {
    /// Narrows a list filter on vault ids (empty: any) to what is visible; `None` when nothing
    /// can match.
    pub fn narrow(&self, requested: &[Uuid]) -> Option<Vec<Uuid>> {
        match self {
            Self::All => Some(requested.to_vec()),
            Self::Only(visible) if requested.is_empty() => {
                (!visible.is_empty()).then(|| visible.clone())
            }
            Self::Only(visible) => {
                let kept: Vec<Uuid> = requested
                    .iter()
                    .filter(|v| visible.contains(v))
                    .copied()
                    .collect();
                (!kept.is_empty()).then_some(kept)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission as P;
    use Role as R;

    #[test]
    fn the_matrix_of_spec_8_1() {
        // (permission, roles allowed among R, D, C, V, M)
        let rows: &[(P, &[R])] = &[
            (P::KeyActivate, &[R::KeyCustodianDeployer]),
            (
                P::KeyDestroyPreActive,
                &[R::KeyCustodianDeployer, R::KeyCustodianCreator],
            ),
            (P::KeyDeactivate, &[R::KeyCustodianDeployer]),
            (P::KeyDestroyDeactivated, &[R::VaultAdministrator]),
            (P::KeyRemove, &[R::VaultAdministrator]),
            (
                P::Read,
                &[
                    R::Reader,
                    R::KeyCustodianDeployer,
                    R::KeyCustodianCreator,
                    R::VaultAdministrator,
                    R::Manager,
                ],
            ),
            (
                P::List,
                &[
                    R::KeyCustodianDeployer,
                    R::KeyCustodianCreator,
                    R::VaultAdministrator,
                    R::Manager,
                ],
            ),
            (
                P::KeyEdit,
                &[R::KeyCustodianDeployer, R::KeyCustodianCreator],
            ),
            (P::KeyRotate, &[R::KeyCustodianCreator]),
            (P::KeyCreate, &[R::KeyCustodianCreator]),
            (
                P::KeyDistribute,
                &[R::KeyCustodianDeployer, R::KeyCustodianCreator],
            ),
            (P::KeystoreWrite, &[R::VaultAdministrator]),
            (P::KeystoreDelete, &[R::VaultAdministrator]),
            (
                P::TemplateWrite,
                &[R::KeyCustodianCreator, R::VaultAdministrator],
            ),
            (P::TemplateDelete, &[R::VaultAdministrator]),
            (P::VaultWrite, &[R::VaultAdministrator]),
            (P::VaultDelete, &[R::VaultAdministrator]),
            (P::Administer, &[]),
        ];
        for (permission, allowed) in rows {
            for role in [
                R::Reader,
                R::KeyCustodianDeployer,
                R::KeyCustodianCreator,
                R::VaultAdministrator,
                R::Manager,
            ] {
                assert_eq!(
                    allows(role, *permission),
                    allowed.contains(&role),
                    "{role:?} {permission:?}"
                );
            }
            assert!(allows(R::Administrator, *permission));
        }
    }

    #[test]
    fn grants_are_scoped_to_their_vault() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let g = Grants::from_policies(&[(R::KeyCustodianDeployer, Some(a)), (R::Reader, Some(b))]);
        assert!(g.allows(P::KeyActivate, Some(a)));
        assert!(!g.allows(P::KeyActivate, Some(b)));
        assert!(g.allows(P::Read, Some(b)) && !g.allows(P::List, Some(b)));
        assert!(
            !g.allows(P::VaultWrite, None),
            "creating a vault needs a role on every vault"
        );
        assert!(g.sees(a) && g.sees(b) && !g.sees(Uuid::new_v4()));
        assert_eq!(g.visible(P::List), Visible::Only(vec![a]));
        assert_eq!(Visible::Only(vec![a]).narrow(&[]), Some(vec![a]));
        assert_eq!(Visible::Only(vec![a]).narrow(&[b]), None);
        assert_eq!(Visible::Only(vec![]).narrow(&[]), None);
        assert_eq!(Visible::All.narrow(&[b]), Some(vec![b]));
        let admin = Grants::administrator();
        assert!(admin.allows(P::Administer, None) && admin.sees(a));
    }
}
