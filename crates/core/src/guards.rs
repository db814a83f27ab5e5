//! Delete guards (spec §7.4, §7.5). Stores call them inside the deleting transaction so that a
//! concurrent insert cannot slip past.

use crate::error::{Error, ErrorCode, Result};

/// What a vault still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaultContents {
    pub keys: i64,
    pub keystores: i64,
    pub unarchived_templates: i64,
}

/// A vault is deleted only when empty; archived templates go with it.
pub fn vault_delete(name: &str, c: VaultContents) -> Result<()> {
    if c.keys == 0 && c.keystores == 0 && c.unarchived_templates == 0 {
        return Ok(());
    }
    Err(Error::Conflict {
        code: ErrorCode::VaultNotEmpty,
        message: format!(
            "vault '{name}' cannot be deleted: it still contains {} managed key(s) (in any state), {} keystore(s) \
             and {} unarchived template(s); remove them (or archive the templates) first",
            c.keys, c.keystores, c.unarchived_templates
        ),
        params: vec![
            c.keys.to_string(),
            c.keystores.to_string(),
            c.unarchived_templates.to_string(),
        ],
    })
}

/// A template is deleted only when no managed key references it.
pub fn template_delete(name: &str, keys: i64) -> Result<()> {
    if keys == 0 {
        return Ok(());
    }
    Err(Error::Conflict {
        code: ErrorCode::TemplateInUse,
        message: format!(
            "template '{name}' cannot be deleted: {keys} managed key(s) were created from it; destroy and delete them first"
        ),
        params: vec![keys.to_string()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_guard_counts_everything_but_archived_templates() {
        assert!(vault_delete("v", VaultContents::default()).is_ok());
        for c in [
            VaultContents {
                keys: 1,
                ..Default::default()
            },
            VaultContents {
                keystores: 1,
                ..Default::default()
            },
            VaultContents {
                unarchived_templates: 1,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                vault_delete("v", c),
                Err(Error::Conflict {
                    code: ErrorCode::VaultNotEmpty,
                    ..
                })
            ));
        }
    }

    #[test]
    fn template_guard() {
        assert!(template_delete("t", 0).is_ok());
        assert!(matches!(
            template_delete("t", 2),
            Err(Error::Conflict {
                code: ErrorCode::TemplateInUse,
                ..
            })
        ));
    }
}
