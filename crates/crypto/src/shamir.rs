//! The `shamir` seal: the seal key is split into shares held by custodians (Shamir's secret
//! sharing over GF(256)); any `threshold` of them rebuild it.
//!
//! The recorded configuration holds a digest per share so that a wrong or altered share is
//! refused the moment it is submitted, before it can spoil a combination. A digest of a 32-byte
//! uniformly random share reveals nothing about it.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use blahaj::{Share, Sharks};
use zeroize::Zeroizing;

use crate::{CryptoError, MasterKey};

const FORMAT: &str = "keyplane-shamir-v1";
const SHARE_PREFIX: &str = "kpshare1-";
const DIGEST_LABEL: &[u8] = b"keyplane shamir share v1";
pub const MAX_SHARES: u8 = 32;

/// What is recorded about a split: never the shares themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShamirConfig {
    pub threshold: u8,
    pub shares: u8,
    /// Digest of share `x` at index `x - 1`.
    share_digests: Vec<String>,
    /// Check value of the seal key the shares rebuild.
    seal_key_check: String,
}

/// Why a submitted share was refused. None of them says anything about the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error(
        "the share is malformed: it is the text printed at initialisation, starting with {SHARE_PREFIX}"
    )]
    Malformed,
    #[error("the share is not one of this server's shares")]
    Unknown,
    #[error("this share was already submitted; another custodian's share is needed")]
    Duplicate,
}

fn digest_of(x: u8, y: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DIGEST_LABEL);
    ctx.update(&[x]);
    ctx.update(y);
    hex::encode(ctx.finish().as_ref())
}

fn encode(share: &Share) -> Zeroizing<String> {
    let bytes = Zeroizing::new(Vec::<u8>::from(share));
    Zeroizing::new(format!("{SHARE_PREFIX}{}", hex::encode(&bytes[..])))
}

fn decode(text: &str) -> Result<Share, ShareError> {
    let hex_part = text
        .trim()
        .strip_prefix(SHARE_PREFIX)
        .ok_or(ShareError::Malformed)?;
    let bytes = Zeroizing::new(hex::decode(hex_part).map_err(|_| ShareError::Malformed)?);
    if bytes.len() != 1 + crate::master::MASTER_KEY_LEN || bytes[0] == 0 {
        return Err(ShareError::Malformed);
    }
    Share::try_from(&bytes[..]).map_err(|_| ShareError::Malformed)
}

/// Makes a new seal key and splits it into `shares` shares of which `threshold` rebuild it.
/// Returns the key, the printable shares (one per custodian) and what to record.
pub fn split(
    threshold: u8,
    shares: u8,
) -> Result<(MasterKey, Vec<Zeroizing<String>>, ShamirConfig), CryptoError> {
    if threshold < 2 || shares < threshold || shares > MAX_SHARES {
        return Err(CryptoError::InvalidKeyMaterial(format!(
            "need 2 <= threshold <= shares <= {MAX_SHARES} (got threshold {threshold}, shares {shares})"
        )));
    }
    let seal_key = MasterKey::generate()?;
    let dealt: Vec<Share> = Sharks(threshold)
        .dealer(seal_key.expose_bytes())
        .take(usize::from(shares))
        .collect();
    let mut share_digests = vec![String::new(); usize::from(shares)];
    let mut printed = Vec::with_capacity(dealt.len());
    for share in &dealt {
        let bytes = Zeroizing::new(Vec::<u8>::from(share));
        let x = bytes[0];
        let slot = share_digests
            .get_mut(usize::from(x).wrapping_sub(1))
            .ok_or_else(|| CryptoError::Generate("unexpected share index".into()))?;
        *slot = digest_of(x, &bytes[1..]);
        printed.push(encode(share));
    }
    let config = ShamirConfig {
        threshold,
        shares,
        share_digests,
        seal_key_check: seal_key.key_check_value(),
    };
    Ok((seal_key, printed, config))
}

impl ShamirConfig {
    /// The text form recorded in the store.
    pub fn render(&self) -> String {
        let mut out = format!(
            "format={FORMAT}\nthreshold={}\nshares={}\ncheck={}\n",
            self.threshold, self.shares, self.seal_key_check
        );
        for (i, d) in self.share_digests.iter().enumerate() {
            out.push_str(&format!("share.{}={d}\n", i + 1));
        }
        out
    }

    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let bad =
            |what: &str| CryptoError::InvalidKeyMaterial(format!("shamir seal record: {what}"));
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .ok_or_else(|| bad(&format!("no {name}")))
        };
        if field("format")? != FORMAT {
            return Err(bad("unknown format"));
        }
        let threshold: u8 = field("threshold")?.parse().map_err(|_| bad("threshold"))?;
        let shares: u8 = field("shares")?.parse().map_err(|_| bad("shares"))?;
        let share_digests = (1..=shares)
            .map(|x| field(&format!("share.{x}")).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            threshold,
            shares,
            share_digests,
            seal_key_check: field("check")?.to_owned(),
        })
    }
}

/// Shares submitted so far towards one unseal.
#[derive(Default)]
pub struct UnsealProgress {
    collected: BTreeMap<u8, Share>,
}

impl UnsealProgress {
    pub fn count(&self) -> u8 {
        u8::try_from(self.collected.len()).unwrap_or(u8::MAX)
    }

    /// Forgets every submitted share.
    pub fn reset(&mut self) {
        self.collected.clear();
    }

    /// Takes one share. Returns the seal key once `threshold` valid shares are in; the shares
    /// are then forgotten.
    pub fn submit(
        &mut self,
        config: &ShamirConfig,
        text: &str,
    ) -> Result<Option<MasterKey>, ShareError> {
        let share = decode(text)?;
        let bytes = Zeroizing::new(Vec::<u8>::from(&share));
        let x = bytes[0];
        let expected = config
            .share_digests
            .get(usize::from(x) - 1)
            .ok_or(ShareError::Unknown)?;
        // Compared in constant time: the digest is not secret, but there is no reason to leak timing.
        if !constant_time_eq(expected.as_bytes(), digest_of(x, &bytes[1..]).as_bytes()) {
            return Err(ShareError::Unknown);
        }
        if self.collected.contains_key(&x) {
            return Err(ShareError::Duplicate);
        }
        self.collected.insert(x, share);
        if self.collected.len() < usize::from(config.threshold) {
            return Ok(None);
        }
        let recovered = Zeroizing::new(
            Sharks(config.threshold)
                .recover(self.collected.values())
                .map_err(|_| ShareError::Unknown)?,
        );
        self.collected.clear();
        let key = MasterKey::from_bytes(&recovered).map_err(|_| ShareError::Unknown)?;
        if key.key_check_value() != config.seal_key_check {
            return Err(ShareError::Unknown);
        }
        Ok(Some(key))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_of_shares_rebuilds_the_key_and_bad_shares_are_refused() {
        let (key, shares, config) = split(3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        let config = ShamirConfig::parse(&config.render()).unwrap();
        for picks in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let mut progress = UnsealProgress::default();
            assert!(
                progress
                    .submit(&config, &shares[picks[0]])
                    .unwrap()
                    .is_none()
            );
            assert_eq!(
                progress.submit(&config, &shares[picks[0]]).err(),
                Some(ShareError::Duplicate)
            );
            assert!(
                progress
                    .submit(&config, &shares[picks[1]])
                    .unwrap()
                    .is_none()
            );
            assert_eq!(progress.count(), 2);
            let rebuilt = progress
                .submit(&config, &shares[picks[2]])
                .unwrap()
                .unwrap();
            assert_eq!(rebuilt.key_check_value(), key.key_check_value());
            assert_eq!(progress.count(), 0, "shares are forgotten after use");
        }
        let mut progress = UnsealProgress::default();
        // One flipped nibble: a wrong share, refused on sight.
        let mut wrong = shares[0].to_string();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            progress.submit(&config, &wrong).err(),
            Some(ShareError::Unknown)
        );
        assert_eq!(
            progress.submit(&config, "garbage").err(),
            Some(ShareError::Malformed)
        );
        assert_eq!(progress.count(), 0);
        // A share of another split is unknown here.
        let (_, other, _) = split(3, 5).unwrap();
        assert_eq!(
            progress.submit(&config, &other[0]).err(),
            Some(ShareError::Unknown)
        );
        assert!(split(1, 3).is_err() && split(4, 3).is_err());
    }
}
