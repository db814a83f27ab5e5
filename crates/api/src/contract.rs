//! What every operation can answer, written into the OpenAPI document once, so the document
//! states all the server says: the refusals any call can meet (authentication, roles, call rate,
//! the seal, time, media type, size), `404` wherever a path names a resource, `412`/`428` wherever
//! an `If-Match` is read, path ids as UUIDs, and the error body of each dialect — Key Protect's
//! on `/api/v2`, UKO's elsewhere.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

use crate::error::{ErrorBody, KeyProtectErrorBody};

pub(crate) struct CommonAnswers;

/// Answers any authenticated call can get, with what they mean.
const ANY_CALL: [(u16, &str); 7] = [
    (
        400,
        "A query parameter or header is not valid; the error names it.",
    ),
    (
        401,
        "No valid bearer token (the answer carries WWW-Authenticate).",
    ),
    (403, "The caller's roles do not allow this operation."),
    (
        408,
        "The call took longer than the server's request timeout.",
    ),
    (
        429,
        "The caller is over its call rate (the answer carries Retry-After).",
    ),
    (503, "The server is sealed; unseal it first."),
    (
        500,
        "An internal error; the message says nothing of it, the log does.",
    ),
];
const WITH_BODY: [(u16, &str); 2] = [
    (413, "The body is larger than 1 MiB."),
    (415, "The body is not sent as application/json."),
];
const WITH_ID: (u16, &str) = (
    404,
    "There is no such resource (or keystore, for bluemix-instance), or the caller has no role in its vault.",
);
const CHANGE: (u16, &str) = (
    409,
    "The change conflicts with the resource's state or with another's name.",
);
const WITH_IF_MATCH: [(u16, &str); 2] = [
    (
        412,
        "The If-Match header does not match the resource's current ETag.",
    ),
    (428, "The If-Match header is missing."),
];

fn uuid_schema() -> RefOr<utoipa::openapi::schema::Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .into()
}

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, schema) in [
            <ErrorBody as utoipa::PartialSchema>::schema(),
            <KeyProtectErrorBody as utoipa::PartialSchema>::schema(),
        ]
        .into_iter()
        .zip(["ErrorBody", "KeyProtectErrorBody"])
        .map(|(schema, name)| (name, schema))
        {
            components.schemas.insert(name.to_owned(), schema);
        }
        let mut nested = Vec::new();
        <KeyProtectErrorBody as utoipa::ToSchema>::schemas(&mut nested);
        <ErrorBody as utoipa::ToSchema>::schemas(&mut nested);
        for (name, schema) in nested {
            components.schemas.entry(name).or_insert(schema);
        }
        for (schema, property, min, max, pattern) in TEXT_RULES {
            if let Some(text) = property_of(components, schema, property) {
                text.min_length = Some(min);
                text.max_length = Some(max);
                text.pattern = Some(pattern.to_owned());
            }
        }
        for (schema, property, fewest, most, min, max, pattern) in LIST_RULES {
            if let Some(list) = array_property_of(components, schema, property) {
                list.min_items = (fewest > 0).then_some(fewest);
                list.max_items = Some(most);
                if let utoipa::openapi::schema::ArrayItems::RefOrSchema(item) = &mut list.items
                    && let RefOr::T(utoipa::openapi::schema::Schema::Object(item)) = item.as_mut()
                {
                    item.min_length = Some(min);
                    item.max_length = Some(max);
                    item.pattern = Some(pattern.to_owned());
                }
            }
        }
        for (schema, property, min, max) in NUMBER_RULES {
            if let Some(number) = property_of(components, schema, property) {
                number.minimum = Some(min.into());
                number.maximum = Some(max.into());
            }
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let key_protect = path.starts_with("/api/v2/");
            let names_resource = path.contains('{');
            for (changes, operation) in [
                (false, &mut item.get),
                (true, &mut item.post),
                (true, &mut item.put),
                (true, &mut item.patch),
                (true, &mut item.delete),
            ] {
                if let Some(operation) = operation {
                    complete(operation, path, changes, key_protect, names_resource);
                }
            }
        }
    }
}

use keyplane_core::validate::{
    FREE_TEXT_PATTERN, KEY_LABEL_PATTERN, KEYSTORE_NAME_PATTERN, NO_CONTROL_PATTERN,
    TEMPLATE_NAME_PATTERN, VAULT_NAME_PATTERN,
};

/// Text fields of request bodies, with the lengths and pattern core checks them against:
/// (schema, property, shortest, longest, pattern).
const TEXT_RULES: [(&str, &str, usize, usize, &str); 27] = [
    ("VaultBody", "name", 1, 100, VAULT_NAME_PATTERN),
    ("VaultPatchBody", "name", 1, 100, VAULT_NAME_PATTERN),
    ("TemplateBody", "name", 1, 30, TEMPLATE_NAME_PATTERN),
    ("TemplatePatchBody", "name", 1, 30, TEMPLATE_NAME_PATTERN),
    ("KeystoreBody", "name", 1, 100, KEYSTORE_NAME_PATTERN),
    ("KeystorePatchBody", "name", 1, 100, KEYSTORE_NAME_PATTERN),
    ("KeyCreateBody", "label", 1, 255, KEY_LABEL_PATTERN),
    ("KeyUpdateBody", "label", 1, 255, KEY_LABEL_PATTERN),
    ("VaultBody", "description", 0, 200, FREE_TEXT_PATTERN),
    ("VaultPatchBody", "description", 0, 200, FREE_TEXT_PATTERN),
    ("TemplateBody", "description", 0, 200, FREE_TEXT_PATTERN),
    (
        "TemplatePatchBody",
        "description",
        0,
        200,
        FREE_TEXT_PATTERN,
    ),
    ("KeystoreBody", "description", 0, 200, FREE_TEXT_PATTERN),
    (
        "KeystorePatchBody",
        "description",
        0,
        200,
        FREE_TEXT_PATTERN,
    ),
    ("KeyCreateBody", "description", 0, 200, FREE_TEXT_PATTERN),
    ("KeyUpdateBody", "description", 0, 200, FREE_TEXT_PATTERN),
    ("TagBody", "value", 0, 256, FREE_TEXT_PATTERN),
    ("TagBody", "name", 1, 128, NO_CONTROL_PATTERN),
    (
        "VaultBody",
        "recovery_key_label",
        1,
        100,
        NO_CONTROL_PATTERN,
    ),
    (
        "VaultPatchBody",
        "recovery_key_label",
        1,
        100,
        NO_CONTROL_PATTERN,
    ),
    ("KeystoreBody", "location", 0, 100, NO_CONTROL_PATTERN),
    ("KeystorePatchBody", "location", 0, 100, NO_CONTROL_PATTERN),
    ("KeystoreBody", "tls_proxy", 0, 2048, NO_CONTROL_PATTERN),
    (
        "KeystorePatchBody",
        "tls_proxy",
        0,
        2048,
        NO_CONTROL_PATTERN,
    ),
    (
        "PrincipalBody",
        "description",
        0,
        keyplane_core::service::MAX_PRINCIPAL_DESCRIPTION,
        FREE_TEXT_PATTERN,
    ),
    ("TemplateKeystoreBody", "group", 1, 100, NO_CONTROL_PATTERN),
    (
        "WrapRequest",
        "plaintext",
        DATA_KEY_RULE.0,
        DATA_KEY_RULE.1,
        DATA_KEY_RULE.2,
    ),
];

/// A Key Protect key named by id or alias, as the handler takes it: 1 to its bound of
/// characters, none of them a control one.
fn key_reference_pattern() -> String {
    format!(
        r"^[^\u0000-\u001F\u007F-\u009F]{{1,{}}}$",
        crate::routes::MAX_KEY_REF_LEN
    )
}

/// Base64 as the data plane decodes it (standard alphabet, padded, no stray bits in the last
/// character).
const BASE64_PATTERN: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

/// The longest base64 text of a data key.
const DATA_KEY_BASE64: usize = keyplane_core::service::MAX_DATA_KEY_BYTES.div_ceil(3) * 4;

/// A data key as the data plane takes it.
const DATA_KEY_RULE: (usize, usize, &str) = (4, DATA_KEY_BASE64, BASE64_PATTERN);

/// Lists of text in request bodies: (schema, property, fewest and most items, each item's
/// shortest and longest, pattern).
const LIST_RULES: [(&str, &str, usize, usize, usize, usize, &str); 3] = [
    ("KeystoreBody", "groups", 0, 128, 1, 100, NO_CONTROL_PATTERN),
    (
        "KeystorePatchBody",
        "groups",
        0,
        128,
        1,
        100,
        NO_CONTROL_PATTERN,
    ),
    (
        "WrapBatchRequest",
        "plaintexts",
        1,
        keyplane_core::service::MAX_BATCH,
        DATA_KEY_RULE.0,
        DATA_KEY_RULE.1,
        DATA_KEY_RULE.2,
    ),
];

/// Whole numbers in request bodies: (schema, property, smallest, largest).
const NUMBER_RULES: [(&str, &str, f64, f64); 3] = [
    (
        "NewImportToken",
        "expiration",
        1.0,
        keyplane_core::service::MAX_IMPORT_TOKEN_SECONDS as f64,
    ),
    (
        "NewImportToken",
        "maxAllowedRetrievals",
        1.0,
        keyplane_core::service::MAX_IMPORT_TOKEN_RETRIEVALS as f64,
    ),
    (
        "WrapBatchRequest",
        "count",
        1.0,
        keyplane_core::service::MAX_BATCH as f64,
    ),
];

/// A property of a component schema, to complete.
fn schema_property<'a>(
    components: &'a mut utoipa::openapi::Components,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::Schema;
    // A body with a flattened map of connection fields is an `allOf` of its fields and the map.
    let objects: Vec<&mut utoipa::openapi::schema::Object> =
        match components.schemas.get_mut(schema)? {
            RefOr::T(Schema::Object(object)) => vec![object],
            RefOr::T(Schema::AllOf(all)) => all
                .items
                .iter_mut()
                .filter_map(|item| match item {
                    RefOr::T(Schema::Object(object)) => Some(object),
                    _ => None,
                })
                .collect(),
            _ => return None,
        };
    objects
        .into_iter()
        .find_map(|object| match object.properties.get_mut(property) {
            Some(RefOr::T(property)) => Some(property),
            _ => None,
        })
}

/// A text or number property of a component schema.
fn property_of<'a>(
    components: &'a mut utoipa::openapi::Components,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Object> {
    match schema_property(components, schema, property)? {
        utoipa::openapi::schema::Schema::Object(object) => Some(object),
        _ => None,
    }
}

/// A list property of a component schema.
fn array_property_of<'a>(
    components: &'a mut utoipa::openapi::Components,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Array> {
    match schema_property(components, schema, property)? {
        utoipa::openapi::schema::Schema::Array(list) => Some(list),
        _ => None,
    }
}

/// A whole number from `min` to `max`.
fn integer_schema(min: f64, max: f64) -> RefOr<utoipa::openapi::schema::Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .into()
}

/// Query parameters that take one or more values.
const LISTS: [&str; 12] = [
    "state",
    "algorithm",
    "key.algorithm",
    "type",
    "type[]",
    "template.type[]",
    "keystores[].type",
    "referenced_keystores[].type",
    "instances[].keystore.type",
    "managing_systems",
    "vault.id",
    "template.id",
];

/// What a list's query parameter takes, as `api::params` reads it: bounds, closed sets of
/// spellings, dates, UUIDs and the lengths of text filters.
fn query_schema(path: &str, name: &str) -> Option<RefOr<utoipa::openapi::schema::Schema>> {
    use keyplane_core::model::{
        Algorithm, KeyState, KeystoreDeleteMode, KeystoreType, ManagingSystem, TemplateState,
        TemplateType,
    };
    let text = |max: usize| -> RefOr<utoipa::openapi::schema::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(max))
            .into()
    };
    let format = |format: KnownFormat| -> RefOr<utoipa::openapi::schema::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
            .into()
    };
    let keys = path.ends_with("/managed_keys") || path.ends_with("/versions");
    Some(match name {
        "limit" if path.starts_with("/api/v2/") => {
            integer_schema(1.0, f64::from(crate::routes::MAX_KEY_PROTECT_LIMIT))
        }
        "limit" => integer_schema(1.0, f64::from(keyplane_core::query::MAX_LIMIT)),
        "offset" | "after_seq" => integer_schema(0.0, i64::MAX as f64),
        "size" | "size_min" | "size_max" | "key.size" | "key.size_min" | "key.size_max" => {
            integer_schema(0.0, f64::from(u32::MAX))
        }
        "vault.id" | "template.id" | "principal.id" => uuid_schema(),
        "since" | "until" => format(KnownFormat::DateTime),
        n if n.contains("_date")
            || n.starts_with("created_at")
            || n.starts_with("updated_at")
            || n.starts_with("rotated_at") =>
        {
            format(KnownFormat::Date)
        }
        "name" | "template.name" => text(100),
        "description" => text(200),
        "label" | "naming_scheme" => text(255),
        "action" => text(128),
        "initiator" => text(256),
        "outcome" => crate::schema::one_of(["success", "failure", "denied"]),
        "mode" => crate::schema::one_of(KeystoreDeleteMode::WIRE.iter().copied()),
        "algorithm" | "key.algorithm" => crate::schema::one_of(Algorithm::WIRE.iter().copied()),
        "state" if keys => crate::schema::one_of(KeyState::WIRE.iter().copied()),
        "state" if path == "/api/v4/templates" => {
            crate::schema::one_of(TemplateState::WIRE.iter().copied())
        }
        "type[]" | "template.type[]" => crate::schema::one_of(TemplateType::WIRE.iter().copied()),
        "keystores[].type" | "referenced_keystores[].type" | "instances[].keystore.type" => {
            crate::schema::one_of(KeystoreType::WIRE.iter().copied())
        }
        "type" if path == "/api/v4/keystores" => {
            crate::schema::one_of(KeystoreType::WIRE.iter().copied())
        }
        "managing_systems" => crate::schema::one_of(ManagingSystem::WIRE.iter().copied()),
        "sort" => sort_schema(path)?,
        _ => return None,
    })
}

/// `sort`: a comma-joined list of the list's sortable fields, each with `-` for descending.
fn sort_schema(path: &str) -> Option<RefOr<utoipa::openapi::schema::Schema>> {
    use keyplane_core::query::{
        KEY_SORT_FIELDS, KEYSTORE_SORT_FIELDS, TEMPLATE_SORT_FIELDS, VAULT_SORT_FIELDS,
    };
    let fields = match path {
        "/api/v4/vaults" => VAULT_SORT_FIELDS,
        "/api/v4/templates" => TEMPLATE_SORT_FIELDS,
        "/api/v4/keystores" => KEYSTORE_SORT_FIELDS,
        "/api/v4/managed_keys" => KEY_SORT_FIELDS,
        _ => return None,
    };
    let field = fields
        .iter()
        .map(|f| regex::escape(f))
        .collect::<Vec<_>>()
        .join("|");
    Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^-?(?:{field})(?:,-?(?:{field}))*$")))
            .into(),
    )
}

fn complete(
    operation: &mut Operation,
    path: &str,
    changes: bool,
    key_protect: bool,
    names_resource: bool,
) {
    // Key Protect names a key by id, alias or name.
    let mut reads_if_match = false;
    for parameter in operation.parameters.iter_mut().flatten() {
        match (&parameter.parameter_in, parameter.name.as_str()) {
            (ParameterIn::Path, "id") if !key_protect => parameter.schema = Some(uuid_schema()),
            (ParameterIn::Path, "id") if path.starts_with("/api/v2/key_rings/") => {
                parameter.schema = Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(keyplane_core::service::KEY_RING_PATTERN))
                        .into(),
                )
            }
            (ParameterIn::Path, "alias") => {
                parameter.schema = Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(keyplane_core::service::ALIAS_PATTERN))
                        .into(),
                )
            }
            (ParameterIn::Path, "id") => {
                parameter.schema = Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(key_reference_pattern()))
                        .into(),
                )
            }
            (ParameterIn::Header, "bluemix-instance") => parameter.schema = Some(uuid_schema()),
            (ParameterIn::Header, "If-Match") => reads_if_match = true,
            (ParameterIn::Query, name) => {
                if let Some(schema) = query_schema(path, name) {
                    // Filters that take several values take them repeated (or comma-joined).
                    parameter.schema = Some(if LISTS.contains(&name) {
                        parameter.explode = Some(true);
                        parameter.style = Some(utoipa::openapi::path::ParameterStyle::Form);
                        ArrayBuilder::new().items(schema).min_items(Some(1)).into()
                    } else {
                        schema
                    });
                }
            }
            _ => {}
        }
    }
    let mut answers: Vec<(u16, &str)> = ANY_CALL.to_vec();
    if operation.request_body.is_some() {
        answers.extend(WITH_BODY);
    }
    // A Key Protect call names its keystore in bluemix-instance, whatever its path.
    if names_resource || key_protect {
        answers.push(WITH_ID);
    }
    if changes {
        answers.push(CHANGE);
    }
    if reads_if_match {
        answers.extend(WITH_IF_MATCH);
    }
    let dialect = if key_protect {
        "KeyProtectErrorBody"
    } else {
        "ErrorBody"
    };
    let error_body = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(dialect)))
            .build()
    };
    let responses = &mut operation.responses.responses;
    for (status, meaning) in answers {
        responses.entry(status.to_string()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(meaning)
                .content("application/json", error_body())
                .into()
        });
    }
    // Every error of the Key Protect API is in its own dialect, whatever a handler declared.
    if key_protect {
        for (status, response) in responses.iter_mut() {
            if !status.starts_with(['4', '5']) {
                continue;
            }
            if let RefOr::T(response) = response {
                response
                    .content
                    .insert("application/json".to_owned(), error_body());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text rule reaches its schema: a renamed body or field would silently drop it.
    #[test]
    fn every_text_rule_is_in_the_document() {
        let mut doc = crate::openapi();
        let components = doc.components.as_mut().expect("components");
        for (schema, property, _, _, pattern) in TEXT_RULES {
            let text = property_of(components, schema, property)
                .unwrap_or_else(|| panic!("{schema}.{property} is not in the document"));
            assert_eq!(
                text.pattern.as_deref(),
                Some(pattern),
                "{schema}.{property}"
            );
        }
        for (schema, property, min, _) in NUMBER_RULES {
            let number = property_of(components, schema, property)
                .unwrap_or_else(|| panic!("{schema}.{property} is not in the document"));
            assert!(number.minimum == Some(min.into()), "{schema}.{property}");
        }
        for (schema, property, _, most, ..) in LIST_RULES {
            let list = array_property_of(components, schema, property)
                .unwrap_or_else(|| panic!("{schema}.{property} is not in the document"));
            assert_eq!(list.max_items, Some(most), "{schema}.{property}");
        }
    }

    /// The base64 the document describes is exactly what the data plane decodes.
    #[test]
    fn the_documented_base64_is_what_decodes() {
        use base64::Engine as _;
        let pattern = regex::Regex::new(BASE64_PATTERN).expect("pattern");
        for length in 0..40 {
            let bytes: Vec<u8> = (0..length).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
            assert!(pattern.is_match(&text), "{text}");
        }
        for stray in ["AB==", "AAB=", "AAA", "A===", "AA=A", "AA"] {
            let decodes = base64::engine::general_purpose::STANDARD
                .decode(stray)
                .is_ok();
            assert_eq!(pattern.is_match(stray), decodes, "{stray}");
        }
        assert_eq!(DATA_KEY_BASE64, 5464);
    }
}
