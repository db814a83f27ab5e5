//! Bearer tokens: stored admin tokens (checked against their digests) and access tokens that the
//! IAM-compatible endpoint issues for API keys — EdDSA-signed JWTs, valid for an hour, and only
//! while their API key is not revoked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keyplane_api::{AccessToken, Authenticator, Identity};
use keyplane_core::Error;
use keyplane_core::model::Actor;
use keyplane_core::service::Keyplane;
use keyplane_crypto::{TokenFingerprints, new_token, token_digest};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

/// How long a verified admin token is trusted without asking the store again.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Lifetime of an access token, as IAM's.
const ACCESS_TOKEN_TTL: u64 = 3600;
const ISSUER: &str = "keyplane";
/// The signing key is sealed under the key of this reserved (system) vault id.
const SYSTEM_VAULT: Uuid = Uuid::max();
/// Binding of the sealed signing key.
const SIGNING_KEY_ID: Uuid = Uuid::from_u128(0x6b65_7970_6c61_6e65_2d6a_7774_2d76_3031);
const SIGNING_KEY_SETTING: &str = "token_signing_key_sealed";
const VERIFYING_KEY_SETTING: &str = "token_signing_public_key";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    /// The principal's id.
    sub: String,
    /// The principal's name.
    name: String,
    /// The API key the token was issued for.
    akid: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// An access token whose signature checked out, and the identity last read for it.
struct VerifiedAccess {
    akid: Uuid,
    sub: String,
    exp: i64,
    /// The identity, and the store's commit generation it was read under: it is used again only
    /// while nothing was committed since, so a revoked key or a changed policy applies at once.
    identity: Option<(Identity, u64)>,
}

/// Access tokens kept verified at most; past that the cache starts over.
const ACCESS_CACHE_ENTRIES: usize = 10_000;

pub struct Tokens {
    keyplane: Keyplane,
    /// Admin tokens verified recently, by keyed fingerprint.
    admin_cache: Mutex<HashMap<u128, (Actor, Instant)>>,
    /// Access tokens whose signature was verified, by keyed fingerprint.
    access_cache: Mutex<HashMap<u128, VerifiedAccess>>,
    fingerprints: TokenFingerprints,
    signing: tokio::sync::Mutex<Option<Arc<EncodingKey>>>,
    verifying: RwLock<Option<Arc<DecodingKey>>>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("access tokens: {e}"))
}

impl Tokens {
    pub fn new(keyplane: Keyplane) -> keyplane_core::Result<Self> {
        Ok(Self {
            keyplane,
            admin_cache: Mutex::new(HashMap::new()),
            access_cache: Mutex::new(HashMap::new()),
            fingerprints: TokenFingerprints::new().map_err(internal)?,
            signing: tokio::sync::Mutex::new(None),
            verifying: RwLock::new(None),
        })
    }

    /// The signing key: opened from the store (sealed under the system vault's key), or made and
    /// stored on first use. Needs the server unsealed.
    async fn signing_key(&self) -> keyplane_core::Result<Arc<EncodingKey>> {
        let mut slot = self.signing.lock().await;
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        let store = self.keyplane.store();
        let engine = self.keyplane.engine();
        engine.open_vault(SYSTEM_VAULT).await?;
        let pkcs8 = match store.get_setting(SIGNING_KEY_SETTING).await? {
            Some(sealed) => {
                let sealed = hex::decode(sealed).map_err(internal)?;
                engine.open_secrets(SYSTEM_VAULT, SIGNING_KEY_ID, &sealed)?
            }
            None => {
                let document =
                    Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                        .map_err(internal)?;
                let pkcs8 = Zeroizing::new(document.as_ref().to_vec());
                let public = Ed25519KeyPair::from_pkcs8(&pkcs8)
                    .map_err(internal)?
                    .public_key()
                    .as_ref()
                    .to_vec();
                let sealed = engine.seal_secrets(SYSTEM_VAULT, SIGNING_KEY_ID, &pkcs8)?;
                store
                    .put_setting(VERIFYING_KEY_SETTING, &hex::encode(public))
                    .await?;
                store
                    .put_setting(SIGNING_KEY_SETTING, &hex::encode(sealed))
                    .await?;
                pkcs8
            }
        };
        let key = Arc::new(EncodingKey::from_ed_der(&pkcs8));
        *slot = Some(key.clone());
        Ok(key)
    }

    /// The verifying (public) key, readable while sealed; `None` before any token was issued.
    async fn verifying_key(&self) -> keyplane_core::Result<Option<Arc<DecodingKey>>> {
        if let Some(key) = self
            .verifying
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(Some(key.clone()));
        }
        let Some(public) = self
            .keyplane
            .store()
            .get_setting(VERIFYING_KEY_SETTING)
            .await?
        else {
            return Ok(None);
        };
        let key = Arc::new(DecodingKey::from_ed_der(
            &hex::decode(public).map_err(internal)?,
        ));
        *self.verifying.write().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        Ok(Some(key))
    }

    async fn access_token_identity(&self, token: &str) -> keyplane_core::Result<Option<Identity>> {
        let fingerprint = self.fingerprints.of(token);
        let now = chrono::Utc::now().timestamp();
        let generation = self.keyplane.store().commit_generation();
        let known = {
            let mut cache = self.access_cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&fingerprint) {
                // Expired: as the signature check would say (no leeway).
                Some(v) if v.exp < now => {
                    cache.remove(&fingerprint);
                    return Ok(None);
                }
                Some(v) => {
                    if let Some((identity, seen)) = &v.identity
                        && *seen == generation
                    {
                        return Ok(Some(identity.clone()));
                    }
                    Some((v.akid, v.sub.clone(), v.exp))
                }
                None => None,
            }
        };
        let (akid, sub, exp) = match known {
            Some(claims) => claims,
            None => {
                let Some(key) = self.verifying_key().await? else {
                    return Ok(None);
                };
                let mut validation = Validation::new(Algorithm::EdDSA);
                validation.set_issuer(&[ISSUER]);
                validation.set_required_spec_claims(&["exp", "iss", "sub"]);
                validation.leeway = 0;
                let Ok(data) = jsonwebtoken::decode::<Claims>(token, &key, &validation) else {
                    return Ok(None);
                };
                let Ok(akid) = Uuid::parse_str(&data.claims.akid) else {
                    return Ok(None);
                };
                (akid, data.claims.sub, data.claims.exp)
            }
        };
        // Revoking the API key ends its tokens at once, and policy changes apply at once: both
        // are read again after any commit.
        let identity = match self
            .keyplane
            .active_api_key_principal(akid)
            .await?
            .filter(|p| p.id.to_string() == sub)
        {
            Some(principal) => Some(Identity {
                grants: Arc::new(self.keyplane.grants_of(principal.id).await?),
                actor: Actor(principal.name),
            }),
            None => None,
        };
        let mut cache = self.access_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= ACCESS_CACHE_ENTRIES {
            cache.retain(|_, v| v.exp >= now);
            if cache.len() >= ACCESS_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            fingerprint,
            VerifiedAccess {
                akid,
                sub,
                exp,
                identity: identity.clone().map(|i| (i, generation)),
            },
        );
        Ok(identity)
    }

    async fn admin_token_actor(&self, bearer: &str) -> keyplane_core::Result<Option<Actor>> {
        let fingerprint = self.fingerprints.of(bearer);
        if let Some((actor, at)) = self
            .admin_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fingerprint)
            && at.elapsed() < TOKEN_CACHE_TTL
        {
            return Ok(Some(actor.clone()));
        }
        let Some(token) = self
            .keyplane
            .store()
            .find_api_token(&token_digest(bearer))
            .await?
        else {
            return Ok(None);
        };
        let actor = Actor(token.name);
        let mut cache = self.admin_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(fingerprint, (actor.clone(), Instant::now()));
        Ok(Some(actor))
    }
}

#[async_trait]
impl Authenticator for Tokens {
    async fn authenticate(&self, bearer: &str) -> keyplane_core::Result<Option<Identity>> {
        if bearer.matches('.').count() == 2 {
            self.access_token_identity(bearer).await
        } else {
            Ok(self
                .admin_token_actor(bearer)
                .await?
                .map(Identity::administrator))
        }
    }

    fn mint_api_key(&self) -> keyplane_core::Result<(Zeroizing<String>, String)> {
        let key = Zeroizing::new(new_token().map_err(internal)?);
        let digest = token_digest(&key);
        Ok((key, digest))
    }

    async fn exchange_api_key(&self, apikey: &str) -> keyplane_core::Result<Option<AccessToken>> {
        let Some((key, principal)) = self.keyplane.api_key_holder(&token_digest(apikey)).await?
        else {
            return Ok(None);
        };
        if self.keyplane.is_sealed() {
            // The emergency seal ends issuance too, and the signing key leaves memory.
            *self.signing.lock().await = None;
            return Err(keyplane_core::Error::Sealed);
        }
        let signing = self.signing_key().await?;
        let now = chrono::Utc::now().timestamp();
        let expiration = now + i64::try_from(ACCESS_TOKEN_TTL).unwrap_or(3600);
        let claims = Claims {
            iss: ISSUER.into(),
            sub: principal.id.to_string(),
            name: principal.name,
            akid: key.id.to_string(),
            iat: now,
            exp: expiration,
            jti: Uuid::new_v4().to_string(),
        };
        let access_token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signing)
            .map_err(internal)?;
        Ok(Some(AccessToken {
            access_token,
            expires_in: ACCESS_TOKEN_TTL,
            expiration,
        }))
    }
}
