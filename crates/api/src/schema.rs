//! Schemas, for the OpenAPI document, of values the wire reads as text: each closed set of
//! spellings comes from core's enumeration, so the document cannot drift from what is parsed.

use std::borrow::Cow;

use keyplane_core::model::{
    Algorithm, IbmVariant, InitialKeyState, KeyState, KeystoreType, ManagingSystem, TemplateState,
    TemplateType,
};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A string schema whose values are `spellings`.
pub(crate) fn one_of(spellings: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(spellings))
        .into()
}

macro_rules! spellings {
    ($($(#[$meta:meta])* $name:ident => $values:expr),* $(,)?) => {$(
        $(#[$meta])*
        pub(crate) struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                one_of($values)
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    )*};
}

spellings! {
    /// A keystore type.
    KeystoreTypeName => KeystoreType::WIRE.iter().copied(),
    /// The variant of an `ibm_cloud_kms` keystore.
    IbmVariantName => IbmVariant::WIRE.iter().copied(),
    /// A key algorithm.
    AlgorithmName => Algorithm::WIRE.iter().copied(),
    /// A managed key's state.
    KeyStateName => KeyState::WIRE.iter().copied(),
    /// The state a template's keys start in.
    InitialKeyStateName => InitialKeyState::WIRE.iter().copied(),
    /// A template type.
    TemplateTypeName => TemplateType::WIRE.iter().copied(),
    /// A template state.
    TemplateStateName => TemplateState::WIRE.iter().copied(),
    /// A managing system.
    ManagingSystemName => ManagingSystem::WIRE.iter().copied(),
    /// A principal kind.
    PrincipalKindName => ["user", "service"],
    /// A role.
    RoleName => keyplane_core::authz::Role::ALL.iter().map(|r| r.as_str()),
}
