//! The managed-key state machine of spec §7.3 with the rulings of decisions.md §2.

use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, Result};
use crate::model::KeyState;

/// Time rules that operators configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// How long a deactivated key must wait before it may be destroyed.
    pub destroy_grace_period: Duration,
    /// Minimum time between two rotations of one key.
    pub rotation_min_interval: Duration,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        Self {
            destroy_grace_period: Duration::hours(4),
            rotation_min_interval: Duration::hours(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Activate,
    Deactivate,
    Destroy,
    Rotate,
    Compromise,
    /// DELETE: remove the key's metadata from its vault.
    Remove,
    /// PATCH of label, description or dates.
    Edit,
}

impl KeyAction {
    fn verb(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Deactivate => "deactivate",
            Self::Destroy => "destroy",
            Self::Rotate => "rotate",
            Self::Compromise => "mark as compromised",
            Self::Remove => "delete",
            Self::Edit => "update",
        }
    }
}

impl KeyAction {
    pub const ALL: [KeyAction; 7] = [
        Self::Activate,
        Self::Deactivate,
        Self::Destroy,
        Self::Rotate,
        Self::Compromise,
        Self::Remove,
        Self::Edit,
    ];

    /// The action's name, as the API's paths and the console's forms spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Deactivate => "deactivate",
            Self::Destroy => "destroy",
            Self::Rotate => "rotate",
            Self::Compromise => "compromise",
            Self::Remove => "remove",
            Self::Edit => "edit",
        }
    }
}

/// The actions the state machine allows a key in `state`, leaving aside the waits that depend on
/// time (the destroy grace period, the rotation interval): what a user may be offered.
pub fn actions_for(state: KeyState) -> Vec<KeyAction> {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let facts = KeyFacts {
        state,
        deactivated_at: Some(epoch),
        rotated_at: None,
        created_at: epoch,
        label_uses_system_placeholders: false,
    };
    let no_waits = LifecyclePolicy {
        destroy_grace_period: Duration::zero(),
        rotation_min_interval: Duration::zero(),
    };
    KeyAction::ALL
        .into_iter()
        .filter(|a| transition(&facts, *a, &no_waits, epoch).is_ok())
        .collect()
}

/// What the state machine needs to know about a key.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts {
    pub state: KeyState,
    pub deactivated_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub label_uses_system_placeholders: bool,
}

pub(crate) fn human(d: Duration) -> String {
    let mins = d.num_minutes().max(0);
    let secs = d.num_seconds().max(0);
    if mins >= 60 {
        format!("{}h {:02}m", mins / 60, mins % 60)
    } else if mins > 0 {
        format!("{mins}m")
    } else {
        format!("{secs}s")
    }
}

/// Checks `action` on a key and returns the state it leads to.
pub fn transition(
    facts: &KeyFacts,
    action: KeyAction,
    policy: &LifecyclePolicy,
    now: DateTime<Utc>,
) -> Result<KeyState> {
    use KeyState::*;
    let refuse = |why: &str| {
        Err(Error::invalid_transition(format!(
            "cannot {} a key in state {}: {why}",
            action.verb(),
            facts.state
        )))
    };
    match (action, facts.state) {
        (KeyAction::Activate, PreActivation | Deactivated) => Ok(Active),
        (KeyAction::Activate, _) => refuse("only pre-active or deactivated keys can be activated"),
        (KeyAction::Deactivate, Active) => Ok(Deactivated),
        (KeyAction::Deactivate, _) => refuse("only active keys can be deactivated"),
        (KeyAction::Destroy, PreActivation) => Ok(Destroyed),
        (KeyAction::Destroy, Compromised) => Ok(DestroyedCompromised),
        (KeyAction::Destroy, Deactivated) => {
            let since = facts.deactivated_at.unwrap_or(facts.created_at);
            let ready_at = since + policy.destroy_grace_period;
            if now < ready_at {
                return Err(Error::invalid_transition(format!(
                    "cannot destroy the key yet: it was deactivated less than {} ago; try again in {}",
                    human(policy.destroy_grace_period),
                    human(ready_at - now)
                )));
            }
            Ok(Destroyed)
        }
        (KeyAction::Destroy, _) => {
            refuse("deactivate the key first; only pre-active or deactivated keys can be destroyed")
        }
        (KeyAction::Rotate, Active) => {
            if facts.label_uses_system_placeholders {
                return refuse(
                    "its label uses date placeholders of the naming scheme, so it cannot be rotated",
                );
            }
            let last = facts.rotated_at.unwrap_or(facts.created_at);
            let ready_at = last + policy.rotation_min_interval;
            if facts.rotated_at.is_some() && now < ready_at {
                return Err(Error::invalid_transition(format!(
                    "cannot rotate the key again yet: keys rotate at most once every {}; try again in {}",
                    human(policy.rotation_min_interval),
                    human(ready_at - now)
                )));
            }
            Ok(Active)
        }
        (KeyAction::Rotate, _) => refuse("only active keys can be rotated"),
        (KeyAction::Compromise, Destroyed | DestroyedCompromised) => {
            refuse("destroyed keys cannot be marked compromised")
        }
        (KeyAction::Compromise, _) => Ok(Compromised),
        (KeyAction::Remove, Destroyed | DestroyedCompromised) => Ok(facts.state),
        (KeyAction::Remove, _) => refuse("only destroyed keys can be deleted; destroy it first"),
        (KeyAction::Edit, Destroyed | DestroyedCompromised) => {
            refuse("destroyed keys cannot be changed")
        }
        (KeyAction::Edit, state) => Ok(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn facts(state: KeyState) -> KeyFacts {
        KeyFacts {
            state,
            deactivated_at: None,
            rotated_at: None,
            created_at: Utc::now() - Duration::days(10),
            label_uses_system_placeholders: false,
        }
    }

    fn is_transition_error(r: Result<KeyState>) -> bool {
        matches!(
            r,
            Err(Error::Conflict {
                code: ErrorCode::InvalidStateTransition,
                ..
            })
        )
    }

    #[test]
    fn allowed_transitions_follow_the_state_machine() {
        let p = LifecyclePolicy::default();
        let now = Utc::now();
        use KeyAction::*;
        use KeyState::*;
        let table = [
            (PreActivation, Activate, Some(Active)),
            (PreActivation, Destroy, Some(Destroyed)),
            (PreActivation, Deactivate, None),
            (PreActivation, Rotate, None),
            (Active, Deactivate, Some(Deactivated)),
            (Active, Rotate, Some(Active)),
            (Active, Activate, None),
            (Active, Destroy, None),
            (Active, Remove, None),
            (Deactivated, Activate, Some(Active)),
            (Deactivated, Rotate, None),
            (Destroyed, Activate, None),
            (Destroyed, Remove, Some(Destroyed)),
            (Destroyed, Edit, None),
            (Compromised, Destroy, Some(DestroyedCompromised)),
            (Active, Compromise, Some(Compromised)),
            (Destroyed, Compromise, None),
        ];
        for (from, action, to) in table {
            let r = transition(&facts(from), action, &p, now);
            match to {
                Some(s) => assert_eq!(r.unwrap(), s, "{from:?} {action:?}"),
                None => assert!(
                    is_transition_error(r),
                    "{from:?} {action:?} should be refused"
                ),
            }
        }
    }

    #[test]
    fn destroy_waits_for_the_grace_period() {
        let p = LifecyclePolicy::default();
        let now = Utc::now();
        let mut f = facts(KeyState::Deactivated);
        f.deactivated_at = Some(now - Duration::hours(3));
        let Err(e) = transition(&f, KeyAction::Destroy, &p, now) else {
            panic!("must wait")
        };
        assert!(
            e.to_string().contains("try again in 1h 00m")
                || e.to_string().contains("try again in 59m"),
            "{e}"
        );
        f.deactivated_at = Some(now - Duration::hours(4));
        assert_eq!(
            transition(&f, KeyAction::Destroy, &p, now).unwrap(),
            KeyState::Destroyed
        );
        let zero = LifecyclePolicy {
            destroy_grace_period: Duration::zero(),
            ..p
        };
        f.deactivated_at = Some(now);
        assert_eq!(
            transition(&f, KeyAction::Destroy, &zero, now).unwrap(),
            KeyState::Destroyed
        );
    }

    #[test]
    fn rotation_respects_interval_and_naming() {
        let p = LifecyclePolicy::default();
        let now = Utc::now();
        let mut f = facts(KeyState::Active);
        assert!(transition(&f, KeyAction::Rotate, &p, now).is_ok());
        f.rotated_at = Some(now - Duration::minutes(10));
        assert!(is_transition_error(transition(
            &f,
            KeyAction::Rotate,
            &p,
            now
        )));
        f.rotated_at = Some(now - Duration::minutes(61));
        assert!(transition(&f, KeyAction::Rotate, &p, now).is_ok());
        f.label_uses_system_placeholders = true;
        assert!(is_transition_error(transition(
            &f,
            KeyAction::Rotate,
            &p,
            now
        )));
    }
}
