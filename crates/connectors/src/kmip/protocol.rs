//! KMIP messages (1.2 – 2.1) over the TTLV codec: the request keyplane sends for each
//! operation it uses, and what it reads of the answers. Attributes are written as 1.x
//! `Attribute` structures (name and value) or as 2.x tagged items, by the negotiated version.

use super::ttlv::{Ttlv, Value};

/// The tags keyplane writes or reads.
pub mod tag {
    pub const APPLICATION_DATA: u32 = 0x420002;
    pub const APPLICATION_NAMESPACE: u32 = 0x420003;
    pub const APPLICATION_SPECIFIC_INFORMATION: u32 = 0x420004;
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const AUTHENTICATION: u32 = 0x42000C;
    pub const BATCH_COUNT: u32 = 0x42000D;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const CREDENTIAL: u32 = 0x420023;
    pub const CREDENTIAL_TYPE: u32 = 0x420024;
    pub const CREDENTIAL_VALUE: u32 = 0x420025;
    pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
    pub const CRYPTOGRAPHIC_LENGTH: u32 = 0x42002A;
    pub const CRYPTOGRAPHIC_USAGE_MASK: u32 = 0x42002C;
    pub const KEY_BLOCK: u32 = 0x420040;
    pub const KEY_FORMAT_TYPE: u32 = 0x420042;
    pub const KEY_MATERIAL: u32 = 0x420043;
    pub const KEY_VALUE: u32 = 0x420045;
    pub const MAXIMUM_ITEMS: u32 = 0x42004F;
    pub const NAME: u32 = 0x420053;
    pub const NAME_TYPE: u32 = 0x420054;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OBJECT_TYPE: u32 = 0x420057;
    pub const OPERATION: u32 = 0x42005C;
    pub const PRIVATE_KEY: u32 = 0x420064;
    pub const PUBLIC_KEY: u32 = 0x42006D;
    pub const PASSWORD: u32 = 0x4200A1;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const REQUEST_HEADER: u32 = 0x420077;
    pub const REQUEST_MESSAGE: u32 = 0x420078;
    pub const REQUEST_PAYLOAD: u32 = 0x420079;
    pub const RESPONSE_HEADER: u32 = 0x42007A;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const REVOCATION_MESSAGE: u32 = 0x420080;
    pub const REVOCATION_REASON: u32 = 0x420081;
    pub const REVOCATION_REASON_CODE: u32 = 0x420082;
    pub const STATE: u32 = 0x42008D;
    pub const SYMMETRIC_KEY: u32 = 0x42008F;
    pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
    pub const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
    pub const USERNAME: u32 = 0x420099;
    pub const ATTRIBUTES: u32 = 0x420125;
}

/// The operations keyplane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Register,
    Locate,
    Get,
    GetAttributes,
    Activate,
    Revoke,
    Destroy,
    DiscoverVersions,
}

impl Operation {
    fn code(self) -> u32 {
        match self {
            Self::Register => 0x03,
            Self::Locate => 0x08,
            Self::Get => 0x0A,
            Self::GetAttributes => 0x0B,
            Self::Activate => 0x12,
            Self::Revoke => 0x13,
            Self::Destroy => 0x14,
            Self::DiscoverVersions => 0x1E,
        }
    }

    /// Whether sending it twice does no more than sending it once.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Self::Locate | Self::Get | Self::GetAttributes | Self::DiscoverVersions
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Register => "Register",
            Self::Locate => "Locate",
            Self::Get => "Get",
            Self::GetAttributes => "Get Attributes",
            Self::Activate => "Activate",
            Self::Revoke => "Revoke",
            Self::Destroy => "Destroy",
            Self::DiscoverVersions => "Discover Versions",
        }
    }
}

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: i32,
    pub minor: i32,
}

impl Version {
    pub const V1_2: Self = Self { major: 1, minor: 2 };
    /// What keyplane speaks, newest first (the order Discover Versions offers them in).
    pub const SUPPORTED: [Self; 5] = [
        Self { major: 2, minor: 1 },
        Self { major: 2, minor: 0 },
        Self { major: 1, minor: 4 },
        Self { major: 1, minor: 3 },
        Self::V1_2,
    ];

    /// `"1.2"` … `"2.1"`; `None` for anything keyplane does not speak.
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.split_once('.')?;
        let version = Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        };
        Self::SUPPORTED.contains(&version).then_some(version)
    }

    /// Attributes as tagged items (2.x) rather than name/value structures (1.x).
    fn tagged_attributes(self) -> bool {
        self.major >= 2
    }

    fn to_ttlv(self) -> Ttlv {
        Ttlv::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Ttlv::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(self.major)),
                Ttlv::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(self.minor)),
            ],
        )
    }

    fn from_ttlv(item: &Ttlv) -> Option<Self> {
        Some(Self {
            major: item.child(tag::PROTOCOL_VERSION_MAJOR)?.as_integer()?,
            minor: item.child(tag::PROTOCOL_VERSION_MINOR)?.as_integer()?,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// KMIP object states.
pub mod state {
    pub const PRE_ACTIVE: u32 = 1;
    pub const ACTIVE: u32 = 2;
    pub const DEACTIVATED: u32 = 3;
    pub const COMPROMISED: u32 = 4;
    pub const DESTROYED: u32 = 5;
    pub const DESTROYED_COMPROMISED: u32 = 6;
}

/// Revocation reason codes keyplane sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    KeyCompromise,
    Superseded,
    CessationOfOperation,
}

impl RevocationReason {
    fn code(self) -> u32 {
        match self {
            Self::KeyCompromise => 2,
            Self::Superseded => 5,
            Self::CessationOfOperation => 6,
        }
    }
}

/// The kinds of object keyplane registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Raw key bytes.
    SymmetricKey,
    /// PKCS#8 DER.
    PrivateKey,
    /// X.509 SubjectPublicKeyInfo DER.
    PublicKey,
}

impl ObjectKind {
    pub fn code(self) -> u32 {
        match self {
            Self::SymmetricKey => 2,
            Self::PublicKey => 3,
            Self::PrivateKey => 4,
        }
    }

    fn tag(self) -> u32 {
        match self {
            Self::SymmetricKey => tag::SYMMETRIC_KEY,
            Self::PrivateKey => tag::PRIVATE_KEY,
            Self::PublicKey => tag::PUBLIC_KEY,
        }
    }

    fn key_format(self) -> u32 {
        match self {
            Self::SymmetricKey => 1,
            Self::PrivateKey => 4,
            Self::PublicKey => 5,
        }
    }
}

const NAME_TYPE_TEXT: u32 = 1;
const CREDENTIAL_USERNAME_PASSWORD: u32 = 1;

/// One attribute keyplane sets or reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Name(String),
    ApplicationSpecificInformation { namespace: String, data: String },
    CryptographicAlgorithm(u32),
    CryptographicLength(i32),
    CryptographicUsageMask(i32),
}

impl Attribute {
    fn encode(&self, version: Version) -> Ttlv {
        let (name, item) = match self {
            Self::Name(value) => (
                "Name",
                Ttlv::structure(
                    tag::NAME,
                    vec![
                        Ttlv::new(tag::NAME_VALUE, Value::TextString(value.clone())),
                        Ttlv::new(tag::NAME_TYPE, Value::Enumeration(NAME_TYPE_TEXT)),
                    ],
                ),
            ),
            Self::ApplicationSpecificInformation { namespace, data } => (
                "Application Specific Information",
                Ttlv::structure(
                    tag::APPLICATION_SPECIFIC_INFORMATION,
                    vec![
                        Ttlv::new(
                            tag::APPLICATION_NAMESPACE,
                            Value::TextString(namespace.clone()),
                        ),
                        Ttlv::new(tag::APPLICATION_DATA, Value::TextString(data.clone())),
                    ],
                ),
            ),
            Self::CryptographicAlgorithm(a) => (
                "Cryptographic Algorithm",
                Ttlv::new(tag::CRYPTOGRAPHIC_ALGORITHM, Value::Enumeration(*a)),
            ),
            Self::CryptographicLength(l) => (
                "Cryptographic Length",
                Ttlv::new(tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(*l)),
            ),
            Self::CryptographicUsageMask(m) => (
                "Cryptographic Usage Mask",
                Ttlv::new(tag::CRYPTOGRAPHIC_USAGE_MASK, Value::Integer(*m)),
            ),
        };
        if version.tagged_attributes() {
            item
        } else {
            Ttlv::structure(
                tag::ATTRIBUTE,
                vec![
                    Ttlv::new(tag::ATTRIBUTE_NAME, Value::TextString(name.into())),
                    Ttlv::new(tag::ATTRIBUTE_VALUE, item.value.clone()),
                ],
            )
        }
    }
}

/// The longest object name read (a key's label is at most 255 characters).
const MAX_NAME: usize = 256;

/// Attributes as an object holds them, read from a Get Attributes answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectAttributes {
    pub names: Vec<String>,
    pub object_type: Option<u32>,
    /// Application Specific Information: (namespace, data).
    pub application: Vec<(String, String)>,
    pub state: Option<u32>,
}

impl ObjectAttributes {
    /// Reads both encodings: 1.x `Attribute` structures and a 2.x `Attributes` structure.
    fn read(payload: &Ttlv) -> Self {
        let mut out = Self::default();
        let mut take = |tag: u32, value: &Ttlv| match tag {
            tag::NAME => {
                // A name shows in messages: one keyplane could not have given is skipped.
                if let Some(name) = value
                    .child(tag::NAME_VALUE)
                    .and_then(Ttlv::as_text)
                    .filter(|n| n.len() <= MAX_NAME && !n.chars().any(char::is_control))
                {
                    out.names.push(name.to_owned());
                }
            }
            tag::STATE => out.state = value.as_enumeration(),
            tag::OBJECT_TYPE => out.object_type = value.as_enumeration(),
            tag::APPLICATION_SPECIFIC_INFORMATION => {
                let text = |t| value.child(t).and_then(Ttlv::as_text).map(str::to_owned);
                if let (Some(namespace), Some(data)) = (
                    text(tag::APPLICATION_NAMESPACE),
                    text(tag::APPLICATION_DATA),
                ) {
                    out.application.push((namespace, data));
                }
            }
            _ => {}
        };
        for attribute in payload.children(tag::ATTRIBUTE) {
            let tag = match attribute.child(tag::ATTRIBUTE_NAME).and_then(Ttlv::as_text) {
                Some("Name") => tag::NAME,
                Some("State") => tag::STATE,
                Some("Object Type") => tag::OBJECT_TYPE,
                Some("Application Specific Information") => tag::APPLICATION_SPECIFIC_INFORMATION,
                _ => continue,
            };
            if let Some(value) = attribute.child(tag::ATTRIBUTE_VALUE) {
                take(tag, value);
            }
        }
        if let Some(Value::Structure(items)) = payload.child(tag::ATTRIBUTES).map(|a| &a.value) {
            for item in items {
                take(item.tag, item);
            }
        }
        out
    }
}

/// Username and password sent in every request header, when the keystore has them.
#[derive(Clone)]
pub struct Credential {
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
}

/// One request message of one batch item, which `batch_id` names (the answer must name it too).
pub fn request(
    version: Version,
    credential: Option<&Credential>,
    operation: Operation,
    batch_id: &[u8],
    payload: Vec<Ttlv>,
) -> Ttlv {
    let mut header = vec![version.to_ttlv()];
    if let Some(c) = credential {
        header.push(Ttlv::structure(
            tag::AUTHENTICATION,
            vec![Ttlv::structure(
                tag::CREDENTIAL,
                vec![
                    Ttlv::new(
                        tag::CREDENTIAL_TYPE,
                        Value::Enumeration(CREDENTIAL_USERNAME_PASSWORD),
                    ),
                    Ttlv::structure(
                        tag::CREDENTIAL_VALUE,
                        vec![
                            Ttlv::new(tag::USERNAME, Value::TextString(c.username.clone())),
                            Ttlv::new(tag::PASSWORD, Value::TextString((*c.password).clone())),
                        ],
                    ),
                ],
            )],
        ));
    }
    header.push(Ttlv::new(tag::BATCH_COUNT, Value::Integer(1)));
    Ttlv::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Ttlv::structure(tag::REQUEST_HEADER, header),
            Ttlv::structure(
                tag::BATCH_ITEM,
                vec![
                    Ttlv::new(tag::OPERATION, Value::Enumeration(operation.code())),
                    Ttlv::new(
                        tag::UNIQUE_BATCH_ITEM_ID,
                        Value::ByteString(batch_id.to_vec()),
                    ),
                    Ttlv::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

fn unique_identifier(id: &str) -> Ttlv {
    Ttlv::new(tag::UNIQUE_IDENTIFIER, Value::TextString(id.to_owned()))
}

/// Payloads of the requests keyplane sends.
pub mod payload {
    use super::*;

    pub fn discover_versions() -> Vec<Ttlv> {
        Version::SUPPORTED.iter().map(|v| v.to_ttlv()).collect()
    }

    /// A key object: `material` is raw bytes, PKCS#8 or SPKI DER by `kind`. The caller zeroizes
    /// the encoded message.
    pub fn register_key(
        version: Version,
        kind: ObjectKind,
        material: &[u8],
        algorithm: u32,
        length: i32,
        attributes: &[Attribute],
    ) -> Vec<Ttlv> {
        let attributes: Vec<Ttlv> = attributes.iter().map(|a| a.encode(version)).collect();
        let key_block = Ttlv::structure(
            tag::KEY_BLOCK,
            vec![
                Ttlv::new(tag::KEY_FORMAT_TYPE, Value::Enumeration(kind.key_format())),
                Ttlv::structure(
                    tag::KEY_VALUE,
                    vec![Ttlv::new(
                        tag::KEY_MATERIAL,
                        Value::ByteString(material.to_vec()),
                    )],
                ),
                Ttlv::new(tag::CRYPTOGRAPHIC_ALGORITHM, Value::Enumeration(algorithm)),
                Ttlv::new(tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(length)),
            ],
        );
        let attributes = if version.tagged_attributes() {
            Ttlv::structure(tag::ATTRIBUTES, attributes)
        } else {
            Ttlv::structure(tag::TEMPLATE_ATTRIBUTE, attributes)
        };
        vec![
            Ttlv::new(tag::OBJECT_TYPE, Value::Enumeration(kind.code())),
            attributes,
            Ttlv::structure(kind.tag(), vec![key_block]),
        ]
    }

    /// Objects of this name (at most `limit`).
    pub fn locate_by_name(version: Version, name: &str, limit: i32) -> Vec<Ttlv> {
        let name = Attribute::Name(name.to_owned()).encode(version);
        let filter = if version.tagged_attributes() {
            Ttlv::structure(tag::ATTRIBUTES, vec![name])
        } else {
            name
        };
        vec![Ttlv::new(tag::MAXIMUM_ITEMS, Value::Integer(limit)), filter]
    }

    /// Every attribute of the object (no names asked: the server sends all it has).
    pub fn get_attributes(id: &str) -> Vec<Ttlv> {
        vec![unique_identifier(id)]
    }

    pub fn by_id(id: &str) -> Vec<Ttlv> {
        vec![unique_identifier(id)]
    }

    /// Get of a key object in the format keyplane registered it in (so that the bytes compare).
    pub fn get(id: &str, kind: ObjectKind) -> Vec<Ttlv> {
        vec![
            unique_identifier(id),
            Ttlv::new(tag::KEY_FORMAT_TYPE, Value::Enumeration(kind.key_format())),
        ]
    }

    pub fn revoke(id: &str, reason: RevocationReason) -> Vec<Ttlv> {
        vec![
            unique_identifier(id),
            Ttlv::structure(
                tag::REVOCATION_REASON,
                vec![
                    Ttlv::new(
                        tag::REVOCATION_REASON_CODE,
                        Value::Enumeration(reason.code()),
                    ),
                    Ttlv::new(
                        tag::REVOCATION_MESSAGE,
                        Value::TextString(
                            match reason {
                                RevocationReason::KeyCompromise => "the managed key is compromised",
                                RevocationReason::Superseded => "a newer version replaces it",
                                RevocationReason::CessationOfOperation => {
                                    "the managed key is deactivated"
                                }
                            }
                            .into(),
                        ),
                    ),
                ],
            ),
        ]
    }
}

/// Why the server failed an operation (KMIP Result Reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ItemNotFound,
    AuthenticationNotSuccessful,
    PermissionDenied,
    OperationNotSupported,
    FeatureNotSupported,
    InvalidField,
    InvalidMessage,
    IllegalOperation,
    ObjectAlreadyExists,
    Sensitive,
    NotExtractable,
    KeyFormatTypeNotSupported,
    GeneralFailure,
    Other(u32),
}

impl Reason {
    fn from_code(code: u32) -> Self {
        match code {
            0x01 => Self::ItemNotFound,
            0x03 => Self::AuthenticationNotSuccessful,
            0x04 => Self::InvalidMessage,
            0x05 => Self::OperationNotSupported,
            0x07 => Self::InvalidField,
            0x08 => Self::FeatureNotSupported,
            0x0B => Self::IllegalOperation,
            0x0C => Self::PermissionDenied,
            0x10 => Self::KeyFormatTypeNotSupported,
            0x16 => Self::Sensitive,
            0x17 => Self::NotExtractable,
            0x18 => Self::ObjectAlreadyExists,
            0x100 => Self::GeneralFailure,
            other => Self::Other(other),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Self::ItemNotFound => "item not found".into(),
            Self::AuthenticationNotSuccessful => "authentication not successful".into(),
            Self::PermissionDenied => "permission denied".into(),
            Self::OperationNotSupported => "operation not supported".into(),
            Self::FeatureNotSupported => "feature not supported".into(),
            Self::InvalidField => "invalid field".into(),
            Self::InvalidMessage => "invalid message".into(),
            Self::IllegalOperation => "illegal operation".into(),
            Self::ObjectAlreadyExists => "object already exists".into(),
            Self::Sensitive => "the object is sensitive".into(),
            Self::NotExtractable => "the object is not extractable".into(),
            Self::KeyFormatTypeNotSupported => "key format type not supported".into(),
            Self::GeneralFailure => "general failure".into(),
            Self::Other(code) => format!("result reason 0x{code:x}"),
        }
    }
}

/// A batch item's outcome.
#[derive(Debug)]
pub enum Outcome {
    Success(Ttlv),
    Failed {
        reason: Reason,
        message: Option<String>,
    },
}

/// Why an answer is not one keyplane can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// The single batch item of an answer to the request for `operation` named `batch_id`.
pub fn read_response(
    message: &Ttlv,
    operation: Operation,
    batch_id: &[u8],
) -> Result<Outcome, Malformed> {
    let bad = |why: &str| Malformed(format!("the KMIP answer to {}: {why}", operation.name()));
    if message.tag != tag::RESPONSE_MESSAGE {
        return Err(bad("it is not a response message"));
    }
    if message.child(tag::RESPONSE_HEADER).is_none() {
        return Err(bad("it has no response header"));
    }
    let mut items = message.children(tag::BATCH_ITEM);
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(bad("it does not hold exactly one batch item"));
    };
    // An answer to another request (a connection out of step) must never pass for this one's.
    if item
        .child(tag::UNIQUE_BATCH_ITEM_ID)
        .and_then(Ttlv::as_bytes)
        != Some(batch_id)
    {
        return Err(bad(
            "it answers another request (its batch item id differs)",
        ));
    }
    let status = item
        .child(tag::RESULT_STATUS)
        .and_then(Ttlv::as_enumeration)
        .ok_or_else(|| bad("it has no result status"))?;
    // A server may leave the operation out of a failed item, never out of a successful one.
    match item.child(tag::OPERATION).and_then(Ttlv::as_enumeration) {
        Some(op) if op != operation.code() => return Err(bad("it answers another operation")),
        None if status == 0 => return Err(bad("it does not name the operation")),
        _ => {}
    }
    let message = item
        .child(tag::RESULT_MESSAGE)
        .and_then(Ttlv::as_text)
        .map(|m| m.chars().filter(|c| !c.is_control()).take(300).collect());
    match status {
        0 => Ok(Outcome::Success(
            item.child(tag::RESPONSE_PAYLOAD)
                .cloned()
                .unwrap_or_else(|| Ttlv::structure(tag::RESPONSE_PAYLOAD, vec![])),
        )),
        1 => Ok(Outcome::Failed {
            reason: Reason::from_code(
                item.child(tag::RESULT_REASON)
                    .and_then(Ttlv::as_enumeration)
                    .unwrap_or(0x100),
            ),
            message,
        }),
        2 => Err(bad(
            "the operation is pending (asynchronous answers are not used)",
        )),
        _ => Err(bad("the operation was undone")),
    }
}

/// What keyplane reads of answer payloads.
pub mod answer {
    use super::*;

    /// An object id as keyplane records and shows it: printable and at most this long.
    const MAX_ID: usize = 128;

    fn usable_id(id: &Ttlv) -> Option<String> {
        id.as_text()
            .filter(|t| !t.is_empty() && t.len() <= MAX_ID && !t.chars().any(char::is_control))
            .map(str::to_owned)
    }

    /// The object id an answer names; `None` when it names none keyplane can use.
    pub fn unique_identifier(payload: &Ttlv) -> Option<String> {
        payload.child(tag::UNIQUE_IDENTIFIER).and_then(usable_id)
    }

    /// Every object id a Locate answer names; `Err` when one is not usable.
    pub fn unique_identifiers(payload: &Ttlv) -> Result<Vec<String>, Malformed> {
        payload
            .children(tag::UNIQUE_IDENTIFIER)
            .map(|id| {
                usable_id(id).ok_or_else(|| {
                    Malformed(format!(
                        "the KMIP server named an object id that is empty, longer than {MAX_ID} characters or not printable"
                    ))
                })
            })
            .collect()
    }

    /// The versions a Discover Versions answer offers (the first 16).
    pub fn versions(payload: &Ttlv) -> Vec<Version> {
        payload
            .children(tag::PROTOCOL_VERSION)
            .filter_map(Version::from_ttlv)
            .take(16)
            .collect()
    }

    pub fn attributes(payload: &Ttlv) -> ObjectAttributes {
        ObjectAttributes::read(payload)
    }

    /// The key bytes a Get returned: a symmetric key's (Raw format, or Transparent Symmetric
    /// Key, whose key value holds a `Key` byte string), a private or public key's DER.
    pub fn key_material(payload: &Ttlv) -> Option<&[u8]> {
        let key_value = [tag::SYMMETRIC_KEY, tag::PRIVATE_KEY, tag::PUBLIC_KEY]
            .into_iter()
            .find_map(|t| payload.child(t))?
            .child(tag::KEY_BLOCK)?
            .child(tag::KEY_VALUE)?;
        let material = key_value.child(tag::KEY_MATERIAL)?;
        material
            .as_bytes()
            .or_else(|| material.child(KEY).and_then(Ttlv::as_bytes))
    }

    /// The `Key` item of a transparent symmetric key.
    const KEY: u32 = 0x42003F;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(items: Vec<Ttlv>) -> Ttlv {
        Ttlv::structure(
            tag::RESPONSE_MESSAGE,
            vec![
                Ttlv::structure(tag::RESPONSE_HEADER, vec![]),
                Ttlv::structure(tag::BATCH_ITEM, items),
            ],
        )
    }

    #[test]
    fn attributes_follow_the_version() {
        let name = Attribute::Name("k".into());
        let v1 = name.encode(Version::V1_2);
        assert_eq!(v1.tag, tag::ATTRIBUTE);
        assert_eq!(
            v1.child(tag::ATTRIBUTE_NAME).and_then(Ttlv::as_text),
            Some("Name")
        );
        let v2 = name.encode(Version { major: 2, minor: 0 });
        assert_eq!(v2.tag, tag::NAME);
        let back = ObjectAttributes::read(&Ttlv::structure(
            tag::RESPONSE_PAYLOAD,
            vec![
                v1,
                Ttlv::structure(
                    tag::ATTRIBUTES,
                    vec![v2, Ttlv::new(tag::STATE, Value::Enumeration(state::ACTIVE))],
                ),
            ],
        ));
        assert_eq!(back.names, ["k", "k"]);
        assert_eq!(back.state, Some(state::ACTIVE));
    }

    #[test]
    fn a_request_round_trips_through_the_codec() {
        let message = request(
            Version::V1_2,
            Some(&Credential {
                username: "u".into(),
                password: zeroize::Zeroizing::new("p".into()),
            }),
            Operation::Register,
            b"1",
            payload::register_key(
                Version::V1_2,
                ObjectKind::SymmetricKey,
                &[7; 32],
                3,
                256,
                &[],
            ),
        );
        let decoded = Ttlv::decode(&message.encode().unwrap()).unwrap();
        assert_eq!(decoded, message);
    }

    #[test]
    fn failures_carry_their_reason_and_malformed_answers_are_refused() {
        let item = |batch: &[u8], status: u32, operation: Option<u32>| {
            let mut items = vec![
                Ttlv::new(tag::UNIQUE_BATCH_ITEM_ID, Value::ByteString(batch.to_vec())),
                Ttlv::new(tag::RESULT_STATUS, Value::Enumeration(status)),
            ];
            if let Some(op) = operation {
                items.push(Ttlv::new(tag::OPERATION, Value::Enumeration(op)));
            }
            items
        };
        let mut failed = item(b"7", 1, Some(0x0A));
        failed.push(Ttlv::new(tag::RESULT_REASON, Value::Enumeration(0x01)));
        failed.push(Ttlv::new(
            tag::RESULT_MESSAGE,
            Value::TextString("gone".into()),
        ));
        let failed = answer(failed);
        match read_response(&failed, Operation::Get, b"7").unwrap() {
            Outcome::Failed { reason, message } => {
                assert_eq!(reason, Reason::ItemNotFound);
                assert_eq!(message.as_deref(), Some("gone"));
            }
            other => panic!("{other:?}"),
        }
        // Another request's answer, another operation's, a success that names no operation,
        // no status, two items, not a response.
        assert!(read_response(&failed, Operation::Get, b"8").is_err());
        assert!(read_response(&failed, Operation::Destroy, b"7").is_err());
        assert!(read_response(&answer(item(b"7", 0, None)), Operation::Get, b"7").is_err());
        assert!(read_response(&answer(item(b"7", 0, Some(0x0A))), Operation::Get, b"7").is_ok());
        assert!(read_response(&answer(vec![]), Operation::Get, b"7").is_err());
        let mut two = answer(item(b"7", 0, Some(0x0A)));
        if let Value::Structure(items) = &mut two.value {
            let again = items[1].clone();
            items.push(again);
        }
        assert!(read_response(&two, Operation::Get, b"7").is_err());
        assert!(
            read_response(
                &Ttlv::structure(tag::REQUEST_MESSAGE, vec![]),
                Operation::Get,
                b"7"
            )
            .is_err()
        );
    }

    #[test]
    fn ids_and_names_keyplane_could_not_show_are_refused() {
        let ids = |list: &[&str]| {
            Ttlv::structure(
                tag::RESPONSE_PAYLOAD,
                list.iter()
                    .map(|id| Ttlv::new(tag::UNIQUE_IDENTIFIER, Value::TextString((*id).into())))
                    .collect(),
            )
        };
        assert_eq!(
            answer::unique_identifiers(&ids(&["1", "2"])).unwrap(),
            ["1", "2"]
        );
        assert!(answer::unique_identifiers(&ids(&["1", &"x".repeat(129)])).is_err());
        assert!(answer::unique_identifiers(&ids(&["a\u{1b}[31m"])).is_err());
        assert_eq!(answer::unique_identifier(&ids(&[""])), None);
        let long = Attribute::Name("n".repeat(300)).encode(Version::V1_2);
        let read = ObjectAttributes::read(&Ttlv::structure(tag::RESPONSE_PAYLOAD, vec![long]));
        assert!(read.names.is_empty());
    }

    #[test]
    fn only_spoken_versions_parse() {
        assert_eq!(Version::parse("2.1"), Some(Version { major: 2, minor: 1 }));
        assert_eq!(Version::parse("1.2"), Some(Version::V1_2));
        for bad in ["1.0", "1.1", "3.0", "2", "x.y", ""] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }
}
