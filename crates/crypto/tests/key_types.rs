//! Types that hold key bytes cannot be printed, copied implicitly or serialised: the compiler
//! refuses any code that tries.

use keyplane_crypto::pkcs11::Pkcs11RootKey;
use keyplane_crypto::shamir::UnsealProgress;
use keyplane_crypto::{GeneratedKey, KeyHierarchy, MasterKey, SecretBytes, SoftwareRootKey};
use static_assertions::assert_not_impl_any;

assert_not_impl_any!(MasterKey: std::fmt::Debug, Clone, serde::Serialize);
assert_not_impl_any!(SecretBytes: std::fmt::Debug, Clone, serde::Serialize);
assert_not_impl_any!(GeneratedKey: std::fmt::Debug, Clone, serde::Serialize);
assert_not_impl_any!(SoftwareRootKey: std::fmt::Debug, Clone, serde::Serialize);
assert_not_impl_any!(Pkcs11RootKey: std::fmt::Debug, Clone, serde::Serialize);
assert_not_impl_any!(UnsealProgress: std::fmt::Debug, Clone, serde::Serialize);
assert_not_impl_any!(KeyHierarchy: std::fmt::Debug, Clone, serde::Serialize);
