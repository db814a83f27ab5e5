//! `aws_kms`: AWS Key Management Service (or any endpoint that speaks its API).
//!
//! Install: CreateKey (Origin=EXTERNAL, tagged with the managed key's id) → the label as alias
//! (before any material: a retry completes a key left empty under it) →
//! GetParametersForImport (RSA_AES_KEY_WRAP_SHA_256 under RSA-4096, falling back to
//! RSAES_OAEP_SHA_256) → ImportKeyMaterial. A rotation creates a new key with the new material,
//! tagged with the previous one, and moves the alias to it (imported keys have no versions).
//! Enable/disable map to EnableKey/DisableKey and destroy to ScheduleKeyDeletion (7 days, the
//! shortest), on the newest KMS key and every earlier one in its chain. Calls are paced under
//! AWS's published request quotas.

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeySpec, KeyState, KeyUsageType, OriginType, Tag,
    WrappingKeySpec,
};
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, RemoteFailure, RemoteKey, RemoteResult, TransferWrapping,
};
use keyplane_core::model::Algorithm;

use crate::http::rejected;
use crate::pace::Pace;

/// The tag that names the managed key a KMS key holds.
pub const MANAGED_KEY_TAG: &str = "keyplane:managed-key-id";
/// The shortest waiting period AWS allows before a scheduled deletion.
const DELETION_WINDOW_DAYS: i32 = 7;
/// Tag on a KMS key made by a rotation: the KMS key holding the version before it.
pub const PREVIOUS_KEY_TAG: &str = "keyplane:previous-kms-key-id";
/// Longest chain of earlier versions followed.
const MAX_VERSIONS: usize = 1000;

pub struct Settings {
    /// UKO's region value (`eu_central_1`) or AWS's (`eu-central-1`).
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub endpoint: Option<String>,
}

pub struct AwsKms {
    client: Client,
    region: String,
    quotas: Quotas,
}

/// AWS KMS's published request quotas per account and Region, one pace per quota. The import
/// parameters' quota is far below the others: it bounds how fast keys can be imported at all.
struct Quotas {
    create_key: Pace,
    import_parameters: Pace,
    import_material: Pace,
    alias: Pace,
    key_state: Pace,
    deletion: Pace,
    read: Pace,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            create_key: Pace::per_second(5.0),
            import_parameters: Pace::per_second(1.0),
            import_material: Pace::per_second(5.0),
            alias: Pace::per_second(5.0),
            key_state: Pace::per_second(5.0),
            deletion: Pace::per_second(5.0),
            read: Pace::per_second(100.0),
        }
    }
}

fn alias(label: &str) -> String {
    format!("alias/{label}")
}

/// The failure an SDK error stands for; `what` says what was attempted.
fn failure<E: ProvideErrorMetadata>(what: &str, e: &SdkError<E, HttpResponse>) -> RemoteFailure {
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => RemoteFailure::new(
            FailureKind::Unreachable,
            format!("{what}: AWS KMS could not be reached"),
        ),
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("unknown");
            let message = err.message().unwrap_or("");
            let status = service.raw().status().as_u16();
            let kind = match code {
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "InvalidClientTokenId"
                | "ExpiredTokenException" => FailureKind::BadCredentials,
                "AccessDeniedException" => FailureKind::MissingPermission,
                "ThrottlingException" | "LimitExceededException" => FailureKind::Throttled,
                "KMSInternalException" | "DependencyTimeoutException" => FailureKind::Transient,
                _ if status >= 500 => FailureKind::Transient,
                _ => FailureKind::Rejected,
            };
            let detail: String = message.chars().take(300).collect();
            RemoteFailure::new(kind, format!("{what}: {code}: {detail}"))
        }
        _ => RemoteFailure::new(
            FailureKind::Transient,
            format!("{what}: an unreadable answer from AWS KMS"),
        ),
    }
}

fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.err().code() == Some("NotFoundException"))
}

impl AwsKms {
    pub fn new(settings: Settings) -> Self {
        let region = settings.region.replace('_', "-");
        let credentials = Credentials::new(
            settings.access_key_id,
            settings.secret_access_key,
            None,
            None,
            "keyplane-keystore",
        );
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(credentials);
        if let Some(endpoint) = settings.endpoint.filter(|e| !e.is_empty()) {
            config = config.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(config.build()),
            region,
            quotas: Quotas::default(),
        }
    }

    /// The key an id or alias names, unless it is gone or going.
    /// The key an id or alias names with its KMS state, unless it is gone or going.
    async fn describe_state(&self, key_id: &str) -> RemoteResult<Option<(RemoteKey, KeyState)>> {
        self.quotas.read.ready().await;
        match self.client.describe_key().key_id(key_id).send().await {
            Ok(out) => {
                let Some(meta) = out.key_metadata() else {
                    return Ok(None);
                };
                let Some(state) = meta.key_state() else {
                    return Ok(None);
                };
                if matches!(
                    state,
                    KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
                ) {
                    return Ok(None);
                }
                Ok(Some((
                    RemoteKey {
                        remote_id: meta.key_id().to_owned(),
                        enabled: *state == KeyState::Enabled,
                        version: 1,
                    },
                    state.clone(),
                )))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(failure(&format!("describing KMS key {key_id}"), &e)),
        }
    }

    /// Creates a KMS key holding `key`'s material and returns its id (the alias is the caller's).
    /// Creates an empty KMS key for imported material; `previous` is the KMS key of the version
    /// before, recorded in a tag so the whole chain can be disabled and deleted with the key.
    async fn create_external_key(
        &self,
        key: &KeyToInstall<'_>,
        previous: Option<&str>,
    ) -> RemoteResult<String> {
        if key.algorithm != Algorithm::Aes || key.size != 256 {
            return Err(rejected(format!(
                "AWS KMS imports symmetric AES-256 keys only, not {} {}",
                key.algorithm, key.size
            )));
        }
        let tag = Tag::builder()
            .tag_key(MANAGED_KEY_TAG)
            .tag_value(key.key_id.to_string())
            .build()
            .map_err(|e| rejected(e.to_string()))?;
        let mut tags = vec![tag];
        if let Some(previous) = previous {
            tags.push(
                Tag::builder()
                    .tag_key(PREVIOUS_KEY_TAG)
                    .tag_value(previous)
                    .build()
                    .map_err(|e| rejected(e.to_string()))?,
            );
        }
        self.quotas.create_key.ready().await;
        let created = self
            .client
            .create_key()
            .origin(OriginType::External)
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .description(format!("keyplane managed key {}", key.key_id))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| failure("creating a KMS key for import", &e))?;
        let key_id = created
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .ok_or_else(|| rejected("CreateKey returned no key"))?;
        Ok(key_id)
    }

    /// Whether a KMS key carries the tag of managed key `key_id`.
    async fn tagged_for(&self, kms_key: &str, key_id: uuid::Uuid) -> RemoteResult<bool> {
        Ok(self.managed_key_tag(kms_key).await? == Some(key_id.to_string()))
    }

    /// The managed key a KMS key's tag names, if it carries one.
    async fn managed_key_tag(&self, kms_key: &str) -> RemoteResult<Option<String>> {
        self.quotas.read.ready().await;
        let tags = match self
            .client
            .list_resource_tags()
            .key_id(kms_key)
            .send()
            .await
        {
            Ok(t) => t,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(failure("reading the KMS key's tags", &e)),
        };
        Ok(tags
            .tags()
            .iter()
            .find(|t| t.tag_key() == MANAGED_KEY_TAG)
            .map(|t| t.tag_value().to_owned()))
    }

    /// The KMS keys of the versions before `current`, newest first.
    async fn earlier_keys(&self, current: &str) -> RemoteResult<Vec<String>> {
        let mut chain = Vec::new();
        let mut at = current.to_owned();
        while chain.len() < MAX_VERSIONS {
            self.quotas.read.ready().await;
            let tags = match self.client.list_resource_tags().key_id(&at).send().await {
                Ok(t) => t,
                Err(e) if is_not_found(&e) => break,
                Err(e) => return Err(failure("reading the KMS key's tags", &e)),
            };
            let Some(previous) = tags
                .tags()
                .iter()
                .find(|t| t.tag_key() == PREVIOUS_KEY_TAG)
                .map(|t| t.tag_value().to_owned())
            else {
                break;
            };
            if previous == current || chain.contains(&previous) {
                break;
            }
            chain.push(previous.clone());
            at = previous;
        }
        Ok(chain)
    }

    async fn set_key_enabled(&self, key_id: &str, enabled: bool) -> RemoteResult<()> {
        self.quotas.key_state.ready().await;
        if enabled {
            self.client
                .enable_key()
                .key_id(key_id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failure("enabling the KMS key", &e))
        } else {
            self.client
                .disable_key()
                .key_id(key_id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failure("disabling the KMS key", &e))
        }
    }

    /// Schedules a KMS key's deletion; one already gone or going counts as done.
    async fn schedule_deletion(&self, key_id: &str) -> RemoteResult<()> {
        self.quotas.deletion.ready().await;
        match self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(DELETION_WINDOW_DAYS)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                let f = failure("scheduling the KMS key's deletion", &e);
                if f.message.contains("KMSInvalidStateException") && f.message.contains("pending") {
                    Ok(())
                } else {
                    Err(f)
                }
            }
        }
    }

    async fn import_into(&self, key_id: &str, key: &KeyToInstall<'_>) -> RemoteResult<()> {
        let mut last = None;
        for (algorithm, wrapping) in [
            (
                AlgorithmSpec::RsaAesKeyWrapSha256,
                (|der| TransferWrapping::RsaAesKeyWrapSha256 {
                    public_key_der: der,
                }) as fn(Vec<u8>) -> TransferWrapping,
            ),
            (AlgorithmSpec::RsaesOaepSha256, |der| {
                TransferWrapping::RsaOaepSha256 {
                    public_key_der: der,
                }
            }),
        ] {
            self.quotas.import_parameters.ready().await;
            let params = match self
                .client
                .get_parameters_for_import()
                .key_id(key_id)
                .wrapping_algorithm(algorithm.clone())
                .wrapping_key_spec(WrappingKeySpec::Rsa4096)
                .send()
                .await
            {
                Ok(p) => p,
                // The older scheme is tried when the target does not offer this one.
                Err(e) => {
                    let f = failure("getting import parameters", &e);
                    if f.kind != FailureKind::Rejected {
                        return Err(f);
                    }
                    last = Some(f);
                    continue;
                }
            };
            let (Some(public_key), Some(token)) = (params.public_key(), params.import_token())
            else {
                return Err(rejected("GetParametersForImport returned no wrapping key"));
            };
            let wrapped = key
                .material
                .wrapped_for(&wrapping(public_key.as_ref().to_vec()))
                .await
                .map_err(|e| rejected(e.to_string()))?;
            self.quotas.import_material.ready().await;
            self.client
                .import_key_material()
                .key_id(key_id)
                .import_token(token.clone())
                .encrypted_key_material(Blob::new(wrapped))
                .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
                .send()
                .await
                .map_err(|e| failure("importing key material", &e))?;
            return Ok(());
        }
        Err(last.unwrap_or_else(|| rejected("no import scheme was offered")))
    }
}

#[async_trait]
impl Connector for AwsKms {
    async fn test(&self) -> RemoteResult<()> {
        self.quotas.read.ready().await;
        self.client
            .list_keys()
            .limit(1)
            .send()
            .await
            .map_err(|e| failure(&format!("listing KMS keys in {}", self.region), &e))?;
        // Creating keys is what distribution needs; a role that may not is refused here
        // rather than at the first key.
        self.quotas.read.ready().await;
        self.client
            .list_aliases()
            .limit(1)
            .send()
            .await
            .map_err(|e| failure("listing KMS aliases", &e))?;
        Ok(())
    }

    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        let found = match remote_id {
            Some(id) => self.describe_state(id).await?,
            None => self.describe_state(&alias(label)).await?,
        };
        // A key still waiting for its material holds no copy yet (install completes it).
        Ok(found
            .filter(|(_, state)| *state != KeyState::PendingImport)
            .map(|(key, _)| key))
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        // Named before it holds material: an interrupted install leaves either an empty key
        // under the alias, which the retry completes, or at worst an empty key nobody can use.
        let key_id = match self.describe_state(&alias(key.label)).await? {
            Some((found, state)) if state != KeyState::PendingImport => return Ok(found),
            // Material goes only into an empty key this key's interrupted install made.
            Some((found, _)) if self.tagged_for(&found.remote_id, key.key_id).await? => {
                found.remote_id
            }
            Some(_) => {
                return Err(rejected(format!(
                    "alias/{} names an empty KMS key that keyplane did not make for this key; \
                     not this key: remove the alias or rename the key",
                    key.label
                )));
            }
            None => {
                let created = self.create_external_key(key, None).await?;
                self.quotas.alias.ready().await;
                self.client
                    .create_alias()
                    .alias_name(alias(key.label))
                    .target_key_id(&created)
                    .send()
                    .await
                    .map_err(|e| failure("naming the KMS key", &e))?;
                created
            }
        };
        self.import_into(&key_id, key).await?;
        Ok(RemoteKey {
            remote_id: key_id,
            enabled: true,
            version: 1,
        })
    }

    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey> {
        self.set_key_enabled(&remote.remote_id, enabled).await?;
        // Earlier versions live in their own KMS keys and follow the key's state.
        for earlier in self.earlier_keys(&remote.remote_id).await? {
            match self.set_key_enabled(&earlier, enabled).await {
                Ok(()) => {}
                // Gone or scheduled for deletion: nothing to change there.
                Err(f)
                    if f.message.contains("NotFoundException")
                        || f.message.contains("KMSInvalidStateException") => {}
                Err(f) => return Err(f),
            }
        }
        Ok(RemoteKey {
            enabled,
            ..remote.clone()
        })
    }

    async fn rotate(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        let key_id = self
            .create_external_key(key, Some(&remote.remote_id))
            .await?;
        self.import_into(&key_id, key).await?;
        // Imported material leaves the new KMS key enabled: a copy that is not usable gets a
        // new key that is not either, before the alias points at it.
        if !remote.enabled {
            self.set_key_enabled(&key_id, false).await?;
        }
        self.quotas.alias.ready().await;
        self.client
            .update_alias()
            .alias_name(alias(key.label))
            .target_key_id(&key_id)
            .send()
            .await
            .map_err(|e| failure("moving the alias to the new KMS key", &e))?;
        Ok(RemoteKey {
            remote_id: key_id,
            enabled: remote.enabled,
            version: remote.version + 1,
        })
    }

    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()> {
        // The chain is read before the newest key goes: its tags lead to the earlier ones.
        let earlier = self.earlier_keys(&remote.remote_id).await?;
        self.schedule_deletion(&remote.remote_id).await?;
        for key_id in earlier {
            self.schedule_deletion(&key_id).await?;
        }
        Ok(())
    }

    /// A KMS key is this key when it carries this key's tag and takes this key's material again:
    /// AWS KMS accepts a re-import into an imported key only of the very material it holds.
    async fn is_labelled_for(
        &self,
        remote: &RemoteKey,
        key_id: uuid::Uuid,
    ) -> RemoteResult<Option<bool>> {
        Ok(Some(self.tagged_for(&remote.remote_id, key_id).await?))
    }

    async fn mark(&self, remote: &RemoteKey) -> RemoteResult<Option<String>> {
        self.managed_key_tag(&remote.remote_id).await
    }

    async fn prove_copy(
        &self,
        remote: &RemoteKey,
        key: &KeyToInstall<'_>,
    ) -> RemoteResult<Option<bool>> {
        if !self.tagged_for(&remote.remote_id, key.key_id).await? {
            return Ok(Some(false));
        }
        match self.import_into(&remote.remote_id, key).await {
            Ok(()) => Ok(Some(true)),
            Err(f) if f.kind == FailureKind::Rejected => Ok(Some(false)),
            Err(f) => Err(f),
        }
    }
}
