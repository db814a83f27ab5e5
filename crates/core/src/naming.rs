//! UKO naming schemes: fixed text with `<placeholder>` tokens that a managed
//! key's label must follow.
//!
//! Matching is deterministic: a custom placeholder's value ends at the
//! *first* occurrence of the literal text that follows it in the scheme (or
//! at the end of the label when it is last). A value therefore never contains
//! its following separator; for `<APP>-<ENV>` the label `my-app-prod` splits
//! into `my` and `app-prod`, and the latter is rejected because `-` is not a
//! valid value character. With a separator that values may contain (a space,
//! a letter), the leftmost split wins: `<A> <B>` on `x1 y1 z1` yields
//! `A = "x1"`, `B = "y1 z1"`.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// Longest accepted naming scheme, in characters.
pub const MAX_SCHEME_LEN: usize = 255;
/// Longest label a naming scheme may produce (UKO rule).
pub const MAX_LABEL_LEN: usize = 50;
/// Longest placeholder name, in characters.
pub const MAX_PLACEHOLDER_NAME_LEN: usize = 20;
/// Shortest custom placeholder value, in characters.
pub const MIN_VALUE_LEN: usize = 2;

/// UKO placeholders that Keyplane does not compute; accepting them would
/// silently produce labels UKO would fill differently.
const RESERVED: &[&str] = &[
    "SEQUENCENUMBER",
    "seqno",
    "sqn",
    "sequenceNumber",
    "SEQNO",
    "SQN",
    "hierarchy",
    "h",
    "hier",
    "keyType",
    "kt",
    "institutionId",
    "iid",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// Value supplied through the key's label.
    Custom(String),
    /// Value computed from the key's dates; `written` is the name as it
    /// appears in the scheme (aliases are kept for the label tags).
    System {
        written: String,
        kind: SystemPlaceholder,
    },
}

impl Placeholder {
    /// The name as written in the scheme, without the angle brackets.
    pub fn name(&self) -> &str {
        match self {
            Self::Custom(name) => name,
            Self::System { written, .. } => written,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemPlaceholder {
    LastActiveYear4,
    LastActiveYear2,
    LastActiveMonth,
    CreationYear4,
    CreationYear2,
    CreationMonth,
}

impl SystemPlaceholder {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "lastActiveYear"
            | "lay"
            | "lastActiveYear/yyyy"
            | "lay/yyyy"
            | "lastActiveYear/4"
            | "lay/4" => Self::LastActiveYear4,
            "lastActiveYear/yy" | "lay/2" | "lastActiveYear/2" | "lay/yy" => Self::LastActiveYear2,
            "lastActiveMonth" | "lam" => Self::LastActiveMonth,
            "yyyy" => Self::CreationYear4,
            "yy" => Self::CreationYear2,
            "mm" => Self::CreationMonth,
            _ => return None,
        })
    }

    /// Whether the value comes from the key's expiration date.
    pub fn needs_expiration(self) -> bool {
        matches!(
            self,
            Self::LastActiveYear4 | Self::LastActiveYear2 | Self::LastActiveMonth
        )
    }

    fn description(self) -> &'static str {
        match self {
            Self::LastActiveYear4 => "the 4-digit year of the key's expiration date",
            Self::LastActiveYear2 => "the 2-digit year of the key's expiration date",
            Self::LastActiveMonth => "the 2-digit month of the key's expiration date",
            Self::CreationYear4 => "the 4-digit year of the key's creation date",
            Self::CreationYear2 => "the 2-digit year of the key's creation date",
            Self::CreationMonth => "the 2-digit month of the key's creation date",
        }
    }

    fn value(self, ctx: &NamingContext) -> Result<String, NamingError> {
        let date = if self.needs_expiration() {
            ctx.expiration.ok_or(NamingError::NoExpiration)?
        } else {
            ctx.created
        };
        Ok(match self {
            Self::LastActiveYear4 | Self::CreationYear4 => format!("{:04}", date.year()),
            Self::LastActiveYear2 | Self::CreationYear2 => {
                format!("{:02}", date.year().rem_euclid(100))
            }
            Self::LastActiveMonth | Self::CreationMonth => format!("{:02}", date.month()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

/// A parsed, validated naming scheme. Invariant: no two placeholders are
/// adjacent, so every placeholder is followed by a literal or the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamingScheme {
    raw: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("invalid naming scheme: {0}")]
    InvalidScheme(String),
    #[error("{0}")]
    LabelMismatch(String),
    #[error(
        "the label is required and must provide values for placeholders {}",
        .0.join(", ")
    )]
    MissingPlaceholders(Vec<String>),
    #[error("invalid placeholder value: {0}")]
    InvalidValue(String),
    #[error(
        "the naming scheme uses an expiration-based placeholder (lastActiveYear, lastActiveMonth) \
         but the template has no expiration"
    )]
    NoExpiration,
    #[error(
        "the label is {0} characters long; labels following a naming scheme may be at most 50 characters"
    )]
    TooLong(usize),
}

/// The dates system placeholders are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamingContext {
    pub created: NaiveDate,
    pub expiration: Option<NaiveDate>,
}

/// Quotes user-supplied text so control characters cannot forge log lines.
fn quoted(s: &str) -> String {
    format!("'{}'", s.escape_debug())
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ' ' | '/' | '-')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ' '
}

fn invalid(msg: String) -> NamingError {
    NamingError::InvalidScheme(msg)
}

fn classify(name: &str, start: usize) -> Result<Placeholder, NamingError> {
    let shown = format!("<{}>", name.escape_debug());
    if name.is_empty() {
        return Err(invalid(format!(
            "empty placeholder <> at character {start}"
        )));
    }
    let len = name.chars().count();
    if len > MAX_PLACEHOLDER_NAME_LEN {
        return Err(invalid(format!(
            "placeholder {shown} has a {len}-character name; at most {MAX_PLACEHOLDER_NAME_LEN} are allowed"
        )));
    }
    if let Some(kind) = SystemPlaceholder::from_name(name) {
        return Ok(Placeholder::System {
            written: name.to_owned(),
            kind,
        });
    }
    if RESERVED.contains(&name) {
        return Err(invalid(format!(
            "placeholder {shown} is reserved and not supported"
        )));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(format!(
            "placeholder {shown} is not a known system placeholder, and custom placeholder names \
             may contain only letters and digits"
        )));
    }
    Ok(Placeholder::Custom(name.to_owned()))
}

impl NamingScheme {
    pub fn parse(raw: &str) -> Result<NamingScheme, NamingError> {
        if raw.is_empty() {
            return Err(invalid("the naming scheme is empty".to_owned()));
        }
        let len = raw.chars().count();
        if len > MAX_SCHEME_LEN {
            return Err(invalid(format!(
                "the naming scheme is {len} characters long; at most {MAX_SCHEME_LEN} are allowed"
            )));
        }

        let mut segments: Vec<Segment> = Vec::new();
        let mut literal = String::new();
        // Start position (1-based) and name of the placeholder being read.
        let mut open: Option<(usize, String)> = None;

        for (i, c) in raw.chars().enumerate() {
            let pos = i + 1;
            if let Some((start, mut name)) = open.take() {
                match c {
                    '>' => {
                        let placeholder = classify(&name, start)?;
                        if let Some(Segment::Placeholder(prev)) = segments.last() {
                            return Err(invalid(format!(
                                "placeholders <{}> and <{}> are adjacent; separate them with \
                                 literal text so a label can be split unambiguously",
                                prev.name().escape_debug(),
                                placeholder.name().escape_debug()
                            )));
                        }
                        if let Placeholder::Custom(n) = &placeholder {
                            let duplicate = segments.iter().any(|s| {
                                matches!(s, Segment::Placeholder(Placeholder::Custom(o)) if o == n)
                            });
                            if duplicate {
                                return Err(invalid(format!(
                                    "placeholder <{n}> appears more than once"
                                )));
                            }
                        }
                        segments.push(Segment::Placeholder(placeholder));
                    }
                    '<' => {
                        return Err(invalid(format!(
                            "unbalanced '<': the placeholder opened at character {start} is not \
                             closed before the '<' at character {pos}"
                        )));
                    }
                    _ => {
                        name.push(c);
                        open = Some((start, name));
                    }
                }
                continue;
            }
            match c {
                '<' => {
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    open = Some((pos, String::new()));
                }
                '>' => {
                    return Err(invalid(format!(
                        "unbalanced '>' at character {pos} has no matching '<'"
                    )));
                }
                c if is_literal_char(c) => literal.push(c),
                c => {
                    return Err(invalid(format!(
                        "character '{}' at position {pos} is not allowed; the text outside \
                         placeholders may contain only letters, digits, '.', '_', ' ', '/' and '-'",
                        c.escape_debug()
                    )));
                }
            }
        }
        if let Some((start, _)) = open {
            return Err(invalid(format!(
                "unbalanced '<': the placeholder opened at character {start} is never closed"
            )));
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(NamingScheme {
            raw: raw.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(p) => Some(p),
            Segment::Literal(_) => None,
        })
    }

    /// Custom placeholder names in scheme order.
    pub fn custom_placeholders(&self) -> Vec<&str> {
        self.placeholders()
            .filter_map(|p| match p {
                Placeholder::Custom(name) => Some(name.as_str()),
                Placeholder::System { .. } => None,
            })
            .collect()
    }

    /// Keys labelled from such a scheme cannot be rotated: the new key's
    /// dates would call for a different label.
    pub fn uses_system_placeholders(&self) -> bool {
        self.placeholders()
            .any(|p| matches!(p, Placeholder::System { .. }))
    }

    /// Whether the scheme needs the key's expiration date.
    pub fn uses_expiration_placeholders(&self) -> bool {
        self.placeholders()
            .any(|p| matches!(p, Placeholder::System { kind, .. } if kind.needs_expiration()))
    }

    fn check_expiration(&self, ctx: &NamingContext) -> Result<(), NamingError> {
        if ctx.expiration.is_none() && self.uses_expiration_placeholders() {
            return Err(NamingError::NoExpiration);
        }
        Ok(())
    }

    fn mismatch(&self, label: &str, reason: &str) -> NamingError {
        NamingError::LabelMismatch(format!(
            "label {} does not match naming scheme {}: {reason}",
            quoted(label),
            quoted(&self.raw)
        ))
    }

    /// Checks `label` against the scheme and returns the label tags (name, value) in scheme order.
    pub fn match_label(
        &self,
        label: &str,
        ctx: &NamingContext,
    ) -> Result<Vec<(String, String)>, NamingError> {
        self.check_expiration(ctx)?;
        // Checked first so that oversized input is never echoed back.
        let len = label.chars().count();
        if len > MAX_LABEL_LEN {
            return Err(NamingError::TooLong(len));
        }

        let mut rest = label;
        let mut tags = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(lit) => {
                    rest = rest.strip_prefix(lit.as_str()).ok_or_else(|| {
                        let at = label.len() - rest.len() + 1;
                        self.mismatch(
                            label,
                            &format!("expected {} at character {at}", quoted(lit)),
                        )
                    })?;
                }
                Segment::Placeholder(Placeholder::Custom(name)) => {
                    let value = match self.segments.get(i + 1) {
                        None => rest,
                        Some(Segment::Literal(next)) => match rest.find(next.as_str()) {
                            Some(end) => &rest[..end],
                            None => {
                                return Err(self.mismatch(
                                    label,
                                    &format!(
                                        "expected {} after the value of <{name}>",
                                        quoted(next)
                                    ),
                                ));
                            }
                        },
                        // Excluded by `parse`; kept as an error rather than a panic.
                        Some(Segment::Placeholder(_)) => {
                            return Err(invalid(format!(
                                "placeholder <{name}> is directly followed by another placeholder"
                            )));
                        }
                    };
                    check_value(name, value)?;
                    tags.push((name.clone(), value.to_owned()));
                    rest = &rest[value.len()..];
                }
                Segment::Placeholder(Placeholder::System { written, kind }) => {
                    let expected = kind.value(ctx)?;
                    rest = rest.strip_prefix(expected.as_str()).ok_or_else(|| {
                        self.mismatch(
                            label,
                            &format!(
                                "placeholder <{written}> must be '{expected}' ({})",
                                kind.description()
                            ),
                        )
                    })?;
                    tags.push((written.clone(), expected));
                }
            }
        }
        if !rest.is_empty() {
            return Err(self.mismatch(label, &format!("unexpected trailing text {}", quoted(rest))));
        }
        Ok(tags)
    }

    /// Builds a label when none was given; only for schemes without custom placeholders.
    pub fn generate_label(
        &self,
        ctx: &NamingContext,
    ) -> Result<(String, Vec<(String, String)>), NamingError> {
        let missing = self.custom_placeholders();
        if !missing.is_empty() {
            return Err(NamingError::MissingPlaceholders(
                missing.into_iter().map(str::to_owned).collect(),
            ));
        }
        self.check_expiration(ctx)?;

        let mut label = String::new();
        let mut tags = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(lit) => label.push_str(lit),
                Segment::Placeholder(Placeholder::System { written, kind }) => {
                    let value = kind.value(ctx)?;
                    label.push_str(&value);
                    tags.push((written.clone(), value));
                }
                Segment::Placeholder(Placeholder::Custom(name)) => {
                    return Err(NamingError::MissingPlaceholders(vec![name.clone()]));
                }
            }
        }
        let len = label.chars().count();
        if len > MAX_LABEL_LEN {
            return Err(NamingError::TooLong(len));
        }
        Ok((label, tags))
    }
}

fn check_value(name: &str, value: &str) -> Result<(), NamingError> {
    let rule = "values must be at least 2 characters of letters, digits and spaces";
    if value.chars().count() < MIN_VALUE_LEN {
        return Err(NamingError::InvalidValue(format!(
            "value {} for placeholder <{name}> is too short; {rule}",
            quoted(value)
        )));
    }
    if let Some(c) = value.chars().find(|&c| !is_value_char(c)) {
        return Err(NamingError::InvalidValue(format!(
            "value {} for placeholder <{name}> contains the character '{}'; {rule}",
            quoted(value),
            c.escape_debug()
        )));
    }
    Ok(())
}

impl fmt::Display for NamingScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn ctx() -> NamingContext {
        NamingContext {
            created: date(2025, 3, 7),
            expiration: Some(date(2029, 6, 30)),
        }
    }

    fn no_exp() -> NamingContext {
        NamingContext {
            created: date(2025, 3, 7),
            expiration: None,
        }
    }

    fn scheme(raw: &str) -> NamingScheme {
        NamingScheme::parse(raw).expect("scheme should parse")
    }

    fn parse_err(raw: &str) -> String {
        match NamingScheme::parse(raw) {
            Err(NamingError::InvalidScheme(msg)) => msg,
            other => panic!("expected InvalidScheme for {raw:?}, got {other:?}"),
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_example_schemes() {
        let s = scheme("<APP>-<ENV>-<lay>");
        assert_eq!(s.custom_placeholders(), vec!["APP", "ENV"]);
        assert_eq!(s.as_str(), "<APP>-<ENV>-<lay>");
        assert_eq!(s.to_string(), "<APP>-<ENV>-<lay>");

        let s = scheme("A-<APP>-AES256-<ENV>-<GROUP>");
        assert_eq!(s.custom_placeholders(), vec!["APP", "ENV", "GROUP"]);

        let s = scheme("akms-<PROJECT>-<LOCATION>-<ENV>-appdata");
        assert_eq!(s.custom_placeholders(), vec!["PROJECT", "LOCATION", "ENV"]);

        let s = scheme("fixed.label_1 /x");
        assert!(s.custom_placeholders().is_empty());
    }

    #[test]
    fn system_aliases_map_to_kinds() {
        use SystemPlaceholder::*;
        let cases = [
            ("lastActiveYear", LastActiveYear4),
            ("lay", LastActiveYear4),
            ("lastActiveYear/yyyy", LastActiveYear4),
            ("lay/yyyy", LastActiveYear4),
            ("lastActiveYear/4", LastActiveYear4),
            ("lay/4", LastActiveYear4),
            ("lastActiveYear/yy", LastActiveYear2),
            ("lay/2", LastActiveYear2),
            ("lastActiveYear/2", LastActiveYear2),
            ("lay/yy", LastActiveYear2),
            ("lastActiveMonth", LastActiveMonth),
            ("lam", LastActiveMonth),
            ("yyyy", CreationYear4),
            ("yy", CreationYear2),
            ("mm", CreationMonth),
        ];
        for (name, kind) in cases {
            let s = scheme(&format!("k-<{name}>"));
            assert_eq!(
                s.segments[1],
                Segment::Placeholder(Placeholder::System {
                    written: name.to_owned(),
                    kind
                }),
                "{name}"
            );
        }
    }

    #[test]
    fn every_reserved_name_is_rejected() {
        for name in RESERVED {
            let msg = parse_err(&format!("k-<{name}>"));
            assert!(msg.contains(&format!("<{name}>")), "{msg}");
            assert!(msg.contains("reserved"), "{msg}");
        }
        // Reserved names are matched exactly, so other spellings are custom.
        assert_eq!(scheme("<H>-<KT>").custom_placeholders(), vec!["H", "KT"]);
    }

    #[test]
    fn malformed_schemes_are_rejected() {
        assert!(parse_err("").contains("empty"));
        assert!(parse_err("<APP").contains("never closed"));
        assert!(parse_err("APP>").contains("unbalanced '>'"));
        assert!(parse_err("<A<B>>").contains("unbalanced '<'"));
        assert!(parse_err("x-<>").contains("empty placeholder"));
        assert!(parse_err("<A><B>").contains("adjacent"));
        assert!(parse_err("<yyyy><mm>").contains("adjacent"));
        assert!(parse_err("<lay/3>").contains("not a known system placeholder"));
        assert!(parse_err("<A_B>").contains("letters and digits"));
        assert!(parse_err("<A B>").contains("letters and digits"));
        assert!(parse_err(&format!("<{}>", "A".repeat(21))).contains("at most 20"));
        assert!(parse_err("key*<APP>").contains("'*'"));
        assert!(parse_err("key:<APP>").contains("not allowed"));
        assert!(parse_err(&"a".repeat(256)).contains("at most 255"));
        // Boundaries that must still be accepted.
        scheme(&format!("<{}>", "A".repeat(20)));
        scheme(&"a".repeat(255));
    }

    #[test]
    fn duplicate_custom_placeholder_is_rejected() {
        let msg = parse_err("<APP>-<ENV>-<APP>");
        assert!(
            msg.contains("<APP>") && msg.contains("more than once"),
            "{msg}"
        );
        // System placeholders are computed, so repeating one is harmless.
        scheme("<yyyy>-x-<yyyy>");
    }

    #[test]
    fn matches_label_and_extracts_tags() {
        let s = scheme("<APP>-<ENV>-<lay>");
        let got = s.match_label("AWS-production-2029", &ctx()).unwrap();
        assert_eq!(
            got,
            tags(&[("APP", "AWS"), ("ENV", "production"), ("lay", "2029")])
        );

        let s = scheme("A-<APP>-AES256-<ENV>-<GROUP>");
        let got = s.match_label("A-Pay 1-AES256-prod-Team A", &ctx()).unwrap();
        assert_eq!(
            got,
            tags(&[("APP", "Pay 1"), ("ENV", "prod"), ("GROUP", "Team A")])
        );

        let s = scheme("k-<lay/yy>-<lam>-<yy>-<mm>-<yyyy>");
        let got = s.match_label("k-29-06-25-03-2025", &ctx()).unwrap();
        assert_eq!(
            got,
            tags(&[
                ("lay/yy", "29"),
                ("lam", "06"),
                ("yy", "25"),
                ("mm", "03"),
                ("yyyy", "2025")
            ])
        );
    }

    #[test]
    fn wrong_literal_text_is_a_mismatch() {
        let s = scheme("A-<APP>-AES256-<ENV>-<GROUP>");
        let err = s.match_label("B-Pay-AES256-prod-grp", &ctx()).unwrap_err();
        match &err {
            NamingError::LabelMismatch(msg) => {
                assert!(
                    msg.starts_with(
                        "label 'B-Pay-AES256-prod-grp' does not match naming scheme \
                         'A-<APP>-AES256-<ENV>-<GROUP>'"
                    ),
                    "{msg}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            s.match_label("A-Pay-AES128-prod-grp", &ctx()),
            Err(NamingError::LabelMismatch(_))
        ));
        let s = scheme("akms-<PROJECT>-appdata");
        assert!(matches!(
            s.match_label("akms-proj-appdata-x", &ctx()),
            Err(NamingError::LabelMismatch(m)) if m.contains("trailing")
        ));
        // Literals are case-sensitive.
        assert!(matches!(
            s.match_label("AKMS-proj-appdata", &ctx()),
            Err(NamingError::LabelMismatch(_))
        ));
    }

    #[test]
    fn system_placeholder_wrong_value_is_a_mismatch() {
        let s = scheme("<APP>-<lay>");
        match s.match_label("AWS-2030", &ctx()) {
            Err(NamingError::LabelMismatch(msg)) => {
                assert!(msg.contains("<lay> must be '2029'"), "{msg}");
                assert!(msg.contains("expiration"), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            scheme("k-<mm>").match_label("k-3", &ctx()),
            Err(NamingError::LabelMismatch(_))
        ));
    }

    #[test]
    fn invalid_custom_values_are_rejected() {
        let s = scheme("<APP>-<ENV>");
        match s.match_label("A-prod", &ctx()) {
            Err(NamingError::InvalidValue(msg)) => {
                assert!(msg.contains("<APP>") && msg.contains("too short"), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
        match s.match_label("my_app-prod", &ctx()) {
            Err(NamingError::InvalidValue(msg)) => {
                assert!(msg.contains("<APP>") && msg.contains("'_'"), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            s.match_label("-prod", &ctx()),
            Err(NamingError::InvalidValue(_))
        ));
        assert!(matches!(
            s.match_label("app-", &ctx()),
            Err(NamingError::InvalidValue(_))
        ));
    }

    #[test]
    fn values_containing_the_separator_split_at_the_first_occurrence() {
        // `-` can never be in a value, so the leftover is rejected.
        let s = scheme("<APP>-<ENV>");
        match s.match_label("my-app-prod", &ctx()) {
            Err(NamingError::InvalidValue(msg)) => {
                assert!(msg.contains("'app-prod'") && msg.contains("<ENV>"), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Separators that values may contain: the leftmost split wins.
        let s = scheme("<A> <B>");
        assert_eq!(
            s.match_label("x1 y1 z1", &ctx()).unwrap(),
            tags(&[("A", "x1"), ("B", "y1 z1")])
        );
        let s = scheme("<A>X<B>");
        assert_eq!(
            s.match_label("aaXbbXcc", &ctx()).unwrap(),
            tags(&[("A", "aa"), ("B", "bbXcc")])
        );
        // No backtracking: once the first split fails, the label is rejected.
        let s = scheme("<A>X<B>-x");
        assert!(matches!(
            s.match_label("aXbbXcc-x", &ctx()),
            Err(NamingError::InvalidValue(_))
        ));
        // A missing separator is a mismatch, not a value error.
        let s = scheme("<APP>-<ENV>");
        assert!(matches!(
            s.match_label("appprod", &ctx()),
            Err(NamingError::LabelMismatch(m)) if m.contains("after the value of <APP>")
        ));
    }

    #[test]
    fn expiration_placeholders_need_an_expiration() {
        let s = scheme("<APP>-<lay>");
        assert_eq!(
            s.match_label("AWS-2029", &no_exp()),
            Err(NamingError::NoExpiration)
        );
        assert!(
            NamingError::NoExpiration
                .to_string()
                .contains("no expiration")
        );
        // Creation-based placeholders do not.
        let s = scheme("<APP>-<yyyy>");
        assert_eq!(
            s.match_label("AWS-2025", &no_exp()).unwrap(),
            tags(&[("APP", "AWS"), ("yyyy", "2025")])
        );
    }

    #[test]
    fn generates_labels_for_system_only_schemes() {
        let s = scheme("KEY-<yyyy>-<mm>");
        let (label, t) = s.generate_label(&no_exp()).unwrap();
        assert_eq!(label, "KEY-2025-03");
        assert_eq!(t, tags(&[("yyyy", "2025"), ("mm", "03")]));
        // The generated label must satisfy the scheme it came from.
        assert_eq!(s.match_label(&label, &no_exp()).unwrap(), t);

        let s = scheme("<lay>");
        let (label, t) = s.generate_label(&ctx()).unwrap();
        assert_eq!(label, "2029");
        assert_eq!(t, tags(&[("lay", "2029")]));
        assert_eq!(s.generate_label(&no_exp()), Err(NamingError::NoExpiration));

        let (label, _) = scheme("x-<lay/2>-<lam>").generate_label(&ctx()).unwrap();
        assert_eq!(label, "x-29-06");

        let (label, t) = scheme("static-key").generate_label(&ctx()).unwrap();
        assert_eq!(label, "static-key");
        assert!(t.is_empty());
    }

    #[test]
    fn generation_lists_missing_custom_placeholders() {
        let s = scheme("<APP>-<ENV>-<lay>");
        let err = s.generate_label(&ctx()).unwrap_err();
        assert_eq!(
            err,
            NamingError::MissingPlaceholders(vec!["APP".to_owned(), "ENV".to_owned()])
        );
        assert_eq!(
            err.to_string(),
            "the label is required and must provide values for placeholders APP, ENV"
        );
    }

    #[test]
    fn labels_over_50_characters_are_rejected() {
        let s = scheme(&format!("{}-<yyyy>", "a".repeat(45)));
        assert_eq!(s.generate_label(&ctx()).unwrap().0.len(), 50);
        let s = scheme(&format!("{}-<yyyy>", "a".repeat(46)));
        assert_eq!(s.generate_label(&ctx()), Err(NamingError::TooLong(51)));

        let s = scheme("<APP>");
        assert_eq!(
            s.match_label(&"a".repeat(51), &ctx()),
            Err(NamingError::TooLong(51))
        );
        assert!(s.match_label(&"a".repeat(50), &ctx()).is_ok());
        assert!(NamingError::TooLong(51).to_string().contains("51"));
    }

    #[test]
    fn reports_system_placeholder_usage() {
        assert!(scheme("<APP>-<ENV>-<lay>").uses_system_placeholders());
        assert!(scheme("KEY-<mm>").uses_system_placeholders());
        assert!(!scheme("<APP>-<ENV>").uses_system_placeholders());
        assert!(!scheme("fixed").uses_system_placeholders());
        assert!(scheme("<APP>-<lam>").uses_expiration_placeholders());
        assert!(!scheme("<APP>-<yy>").uses_expiration_placeholders());
    }

    #[test]
    fn error_messages_escape_control_characters() {
        let s = scheme("<APP>-x");
        match s.match_label("ab\ny", &ctx()) {
            Err(NamingError::LabelMismatch(msg)) => assert!(!msg.contains('\n'), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
