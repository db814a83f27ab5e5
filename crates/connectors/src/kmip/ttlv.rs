//! KMIP's binary encoding, TTLV (KMIP 1.0 – 2.1, §9.1 of the 1.x specifications): every item is
//! a 3-byte tag, a 1-byte type, a 4-byte big-endian length and the value, padded with zeros to a
//! multiple of eight bytes; a structure's value is its items in order. The decoder takes
//! untrusted input (what a server answers): it bounds the total size and the nesting depth,
//! and refuses lengths a type cannot have, padding that is not zero, text that is not UTF-8 and
//! booleans other than 0 and 1.

use std::fmt;

/// The largest message read (a KMIP answer holding a key and its attributes is a few KB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The deepest nesting of structures read.
const MAX_DEPTH: usize = 16;
const HEADER: usize = 8;

/// One TTLV item. Zeroized when dropped, and shown without its strings: requests and answers
/// carry key material and passwords.
#[derive(Debug, Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Ttlv {
    /// The 24-bit tag (KMIP's are `0x42xxxx`).
    pub tag: u32,
    pub value: Value,
}

/// A TTLV value, by its type.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize)]
pub enum Value {
    Structure(Vec<Ttlv>),
    Integer(i32),
    LongInteger(i64),
    /// Two's complement, big-endian, a multiple of eight bytes.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// Microseconds since the Unix epoch (KMIP 2.0).
    DateTimeExtended(i64),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Structure(items) => f.debug_list().entries(items).finish(),
            Self::Integer(v) => write!(f, "Integer({v})"),
            Self::LongInteger(v) => write!(f, "LongInteger({v})"),
            Self::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Self::Enumeration(v) => write!(f, "Enumeration(0x{v:x})"),
            Self::Boolean(v) => write!(f, "Boolean({v})"),
            Self::TextString(v) => write!(f, "TextString({} bytes)", v.len()),
            Self::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Self::DateTime(v) => write!(f, "DateTime({v})"),
            Self::Interval(v) => write!(f, "Interval({v})"),
            Self::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

/// Why bytes are not TTLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtlvError {
    Truncated,
    TooLarge(usize),
    TooDeep,
    UnknownType(u8),
    BadLength { item_type: u8, length: usize },
    NonZeroPadding,
    NotUtf8,
    BadBoolean,
    TrailingBytes,
    TagTooWide(u32),
}

impl fmt::Display for TtlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "the TTLV item is cut short"),
            Self::TooLarge(n) => write!(
                f,
                "a TTLV message of {n} bytes is larger than {MAX_MESSAGE_BYTES}"
            ),
            Self::TooDeep => write!(f, "TTLV structures nest deeper than {MAX_DEPTH}"),
            Self::UnknownType(t) => write!(f, "unknown TTLV type 0x{t:02x}"),
            Self::BadLength { item_type, length } => {
                write!(
                    f,
                    "TTLV type 0x{item_type:02x} cannot be {length} bytes long"
                )
            }
            Self::NonZeroPadding => write!(f, "TTLV padding is not zero"),
            Self::NotUtf8 => write!(f, "a TTLV text string is not UTF-8"),
            Self::BadBoolean => write!(f, "a TTLV boolean is neither 0 nor 1"),
            Self::TrailingBytes => write!(f, "bytes follow the TTLV message"),
            Self::TagTooWide(t) => write!(f, "TTLV tag 0x{t:x} is wider than 24 bits"),
        }
    }
}

impl std::error::Error for TtlvError {}

const STRUCTURE: u8 = 0x01;
const INTEGER: u8 = 0x02;
const LONG_INTEGER: u8 = 0x03;
const BIG_INTEGER: u8 = 0x04;
const ENUMERATION: u8 = 0x05;
const BOOLEAN: u8 = 0x06;
const TEXT_STRING: u8 = 0x07;
const BYTE_STRING: u8 = 0x08;
const DATE_TIME: u8 = 0x09;
const INTERVAL: u8 = 0x0A;
const DATE_TIME_EXTENDED: u8 = 0x0B;

fn padded(length: usize) -> usize {
    length.div_ceil(8) * 8
}

impl Ttlv {
    pub fn new(tag: u32, value: Value) -> Self {
        Self { tag, value }
    }

    pub fn structure(tag: u32, items: Vec<Ttlv>) -> Self {
        Self::new(tag, Value::Structure(items))
    }

    /// The first item tagged `tag` of a structure.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.children(tag).next()
    }

    /// Every item tagged `tag` of a structure, in order.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        let items: &[Ttlv] = match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        };
        items.iter().filter(move |t| t.tag == tag)
    }

    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_enumeration(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(e) => Some(e),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i32> {
        match self.value {
            Value::Integer(i) => Some(i),
            _ => None,
        }
    }

    /// The item's bytes. Tags wider than 24 bits are refused. The buffer is allocated once at
    /// its final size, so no copy of what it holds is left behind by a reallocation.
    pub fn encode(&self) -> Result<Vec<u8>, TtlvError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// The length of the item's encoding.
    fn encoded_len(&self) -> usize {
        let value = match &self.value {
            Value::Structure(items) => items.iter().map(Ttlv::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_)
            | Value::Boolean(_)
            | Value::DateTime(_)
            | Value::DateTimeExtended(_) => 8,
            Value::BigInteger(v) => padded(v.len().max(1)),
            Value::TextString(v) => v.len(),
            Value::ByteString(v) => v.len(),
        };
        HEADER + padded(value)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), TtlvError> {
        if self.tag > 0x00FF_FFFF {
            return Err(TtlvError::TagTooWide(self.tag));
        }
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        let header_at = out.len();
        // Type and length, the length filled in once the value is written.
        out.extend_from_slice(&[0; 5]);
        let start = out.len();
        let item_type = match &self.value {
            Value::Structure(items) => {
                for item in items {
                    item.encode_into(out)?;
                }
                STRUCTURE
            }
            Value::Integer(v) => {
                out.extend_from_slice(&v.to_be_bytes());
                INTEGER
            }
            Value::LongInteger(v) => {
                out.extend_from_slice(&v.to_be_bytes());
                LONG_INTEGER
            }
            Value::BigInteger(v) => {
                // Sign-extended on the left to a multiple of eight bytes.
                let fill = if v.first().is_some_and(|b| b & 0x80 != 0) {
                    0xFF
                } else {
                    0x00
                };
                let width = padded(v.len().max(1));
                out.extend(std::iter::repeat_n(fill, width - v.len()));
                out.extend_from_slice(v);
                BIG_INTEGER
            }
            Value::Enumeration(v) => {
                out.extend_from_slice(&v.to_be_bytes());
                ENUMERATION
            }
            Value::Boolean(v) => {
                out.extend_from_slice(&u64::from(*v).to_be_bytes());
                BOOLEAN
            }
            Value::TextString(v) => {
                out.extend_from_slice(v.as_bytes());
                TEXT_STRING
            }
            Value::ByteString(v) => {
                out.extend_from_slice(v);
                BYTE_STRING
            }
            Value::DateTime(v) => {
                out.extend_from_slice(&v.to_be_bytes());
                DATE_TIME
            }
            Value::Interval(v) => {
                out.extend_from_slice(&v.to_be_bytes());
                INTERVAL
            }
            Value::DateTimeExtended(v) => {
                out.extend_from_slice(&v.to_be_bytes());
                DATE_TIME_EXTENDED
            }
        };
        let length = out.len() - start;
        let length32 = u32::try_from(length).map_err(|_| TtlvError::TooLarge(length))?;
        out[header_at] = item_type;
        out[header_at + 1..header_at + 5].copy_from_slice(&length32.to_be_bytes());
        out.resize(start + padded(length), 0);
        Ok(())
    }

    /// One whole message: exactly one item, nothing after it.
    pub fn decode(bytes: &[u8]) -> Result<Ttlv, TtlvError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(TtlvError::TooLarge(bytes.len()));
        }
        let (item, used) = decode_item(bytes, 0)?;
        if used != bytes.len() {
            return Err(TtlvError::TrailingBytes);
        }
        Ok(item)
    }
}

/// The whole length of the message whose first eight bytes are `header` (to read the rest from
/// a stream), bounded by [`MAX_MESSAGE_BYTES`].
pub fn message_length(header: &[u8; HEADER]) -> Result<usize, TtlvError> {
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let whole = HEADER + padded(length);
    if whole > MAX_MESSAGE_BYTES {
        return Err(TtlvError::TooLarge(whole));
    }
    Ok(whole)
}

fn fixed<const N: usize>(value: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&value[..N]);
    out
}

fn decode_item(bytes: &[u8], depth: usize) -> Result<(Ttlv, usize), TtlvError> {
    if depth > MAX_DEPTH {
        return Err(TtlvError::TooDeep);
    }
    if bytes.len() < HEADER {
        return Err(TtlvError::Truncated);
    }
    let tag = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
    let item_type = bytes[3];
    let length = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let whole = padded(length);
    if bytes.len() - HEADER < whole {
        return Err(TtlvError::Truncated);
    }
    let value = &bytes[HEADER..HEADER + length];
    if bytes[HEADER + length..HEADER + whole]
        .iter()
        .any(|b| *b != 0)
    {
        return Err(TtlvError::NonZeroPadding);
    }
    let bad_length = || TtlvError::BadLength { item_type, length };
    let exactly = |n: usize| {
        if length == n {
            Ok(())
        } else {
            Err(bad_length())
        }
    };
    let value = match item_type {
        STRUCTURE => {
            let mut items = Vec::new();
            let mut at = 0;
            while at < value.len() {
                let (item, used) = decode_item(&value[at..], depth + 1)?;
                items.push(item);
                at += used;
            }
            Value::Structure(items)
        }
        INTEGER => {
            exactly(4)?;
            Value::Integer(i32::from_be_bytes(fixed(value)))
        }
        LONG_INTEGER => {
            exactly(8)?;
            Value::LongInteger(i64::from_be_bytes(fixed(value)))
        }
        BIG_INTEGER => {
            if length == 0 || !length.is_multiple_of(8) {
                return Err(bad_length());
            }
            Value::BigInteger(value.to_vec())
        }
        ENUMERATION => {
            exactly(4)?;
            Value::Enumeration(u32::from_be_bytes(fixed(value)))
        }
        BOOLEAN => {
            exactly(8)?;
            match u64::from_be_bytes(fixed(value)) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => return Err(TtlvError::BadBoolean),
            }
        }
        TEXT_STRING => Value::TextString(
            std::str::from_utf8(value)
                .map_err(|_| TtlvError::NotUtf8)?
                .to_owned(),
        ),
        BYTE_STRING => Value::ByteString(value.to_vec()),
        DATE_TIME => {
            exactly(8)?;
            Value::DateTime(i64::from_be_bytes(fixed(value)))
        }
        INTERVAL => {
            exactly(4)?;
            Value::Interval(u32::from_be_bytes(fixed(value)))
        }
        DATE_TIME_EXTENDED => {
            exactly(8)?;
            Value::DateTimeExtended(i64::from_be_bytes(fixed(value)))
        }
        other => return Err(TtlvError::UnknownType(other)),
    };
    Ok((Ttlv { tag, value }, HEADER + whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The examples of the KMIP 1.x specification's TTLV encoding section (tag 0x420020).
    #[test]
    fn the_specifications_examples_encode_and_decode() {
        let tag = 0x42_0020;
        let cases = [
            (
                Value::Integer(8),
                "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
            ),
            (
                Value::LongInteger(123_456_789_000_000_000),
                "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
            ),
            (
                Value::BigInteger(hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")),
                "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
            ),
            (
                Value::Enumeration(255),
                "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
            (
                Value::Boolean(true),
                "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
            ),
            (
                Value::TextString("Hello World".into()),
                "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
            ),
            (
                Value::ByteString(vec![1, 2, 3]),
                "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
            ),
            (
                // Friday, March 14, 2008, 11:56:40 GMT.
                Value::DateTime(0x47DA_67F8),
                "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
            ),
            (
                // Ten days.
                Value::Interval(864_000),
                "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
            ),
            (
                Value::Structure(vec![
                    Ttlv::new(0x42_0004, Value::Enumeration(254)),
                    Ttlv::new(0x42_0005, Value::Integer(255)),
                ]),
                "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
        ];
        // A big integer given narrower is sign-extended to whole eight-byte words.
        assert_eq!(
            Ttlv::new(
                tag,
                Value::BigInteger(hex("03 FD 35 EB 6B C2 DF 46 18 08 00 00"))
            )
            .encode()
            .unwrap(),
            hex("42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")
        );
        for (value, bytes) in cases {
            let item = Ttlv::new(tag, value);
            let expected = hex(bytes);
            assert_eq!(item.encode().unwrap(), expected, "{item:?}");
            assert_eq!(Ttlv::decode(&expected).unwrap(), item);
        }
    }

    #[test]
    fn a_structure_is_read_by_its_tags() {
        let message = Ttlv::structure(
            0x42_0078,
            vec![
                Ttlv::new(0x42_0094, Value::TextString("key-1".into())),
                Ttlv::new(0x42_0094, Value::TextString("key-2".into())),
                Ttlv::new(0x42_005C, Value::Enumeration(3)),
            ],
        );
        let decoded = Ttlv::decode(&message.encode().unwrap()).unwrap();
        let ids: Vec<&str> = decoded
            .children(0x42_0094)
            .filter_map(Ttlv::as_text)
            .collect();
        assert_eq!(ids, ["key-1", "key-2"]);
        assert_eq!(
            decoded.child(0x42_005C).and_then(Ttlv::as_enumeration),
            Some(3)
        );
        let header: [u8; 8] = message.encode().unwrap()[..8].try_into().unwrap();
        assert_eq!(
            message_length(&header).unwrap(),
            message.encode().unwrap().len()
        );
    }

    #[test]
    fn an_encoding_is_allocated_once_and_shown_without_its_strings() {
        let message = Ttlv::structure(
            0x420078,
            vec![
                Ttlv::new(0x4200A1, Value::TextString("hunter2".into())),
                Ttlv::new(0x420043, Value::ByteString(vec![0xAB; 33])),
                Ttlv::new(0x420004, Value::BigInteger(vec![1, 2, 3])),
            ],
        );
        let bytes = message.encode().unwrap();
        assert_eq!(bytes.len(), message.encoded_len());
        assert_eq!(bytes.capacity(), bytes.len());
        let shown = format!("{message:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("171"),
            "{shown}"
        );
    }

    #[test]
    fn malformed_input_is_refused() {
        let good = hex("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00");
        assert_eq!(Ttlv::decode(&good[..12]), Err(TtlvError::Truncated));
        let mut padding = good.clone();
        padding[15] = 1;
        assert_eq!(Ttlv::decode(&padding), Err(TtlvError::NonZeroPadding));
        let mut long = good.clone();
        long[7] = 8;
        assert!(matches!(
            Ttlv::decode(&long),
            Err(TtlvError::BadLength { .. })
        ));
        let mut unknown = good.clone();
        unknown[3] = 0x0F;
        assert_eq!(Ttlv::decode(&unknown), Err(TtlvError::UnknownType(0x0F)));
        let mut trailing = good.clone();
        trailing.extend_from_slice(&good);
        assert_eq!(Ttlv::decode(&trailing), Err(TtlvError::TrailingBytes));
        let boolean = hex("42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02");
        assert_eq!(Ttlv::decode(&boolean), Err(TtlvError::BadBoolean));
        let text = hex("42 00 20 | 07 | 00 00 00 02 | FF FE 00 00 00 00 00 00");
        assert_eq!(Ttlv::decode(&text), Err(TtlvError::NotUtf8));
        // A length claiming more than the bound is refused before anything is read.
        assert!(matches!(
            message_length(&hex("42 00 78 01 7F FF FF FF").try_into().unwrap()),
            Err(TtlvError::TooLarge(_))
        ));
        // Structures nested past the bound.
        let mut nested = Ttlv::new(0x42_0001, Value::Integer(1));
        for _ in 0..20 {
            nested = Ttlv::structure(0x42_0001, vec![nested]);
        }
        assert_eq!(
            Ttlv::decode(&nested.encode().unwrap()),
            Err(TtlvError::TooDeep)
        );
        assert_eq!(
            Ttlv::new(0x0100_0000, Value::Integer(1)).encode(),
            Err(TtlvError::TagTooWide(0x0100_0000))
        );
    }
}
