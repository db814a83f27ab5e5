//! List exports (UKO's alternative `Accept` types on list endpoints): the list's every item
//! matching the filters, whatever the paging, as CSV (`text/csv`), CSV in a zip
//! (`application/zip` or `application/vnd.ibm.uko.<entity>-list.v4.1.csv+zip`) or JSON in a zip
//! (`…v4.1.json+zip`). Streamed a page at a time: an export of a million keys holds one page
//! in memory. The first page is read before answering, so a refused call or a bad filter is an
//! ordinary error answer.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use keyplane_core::ErrorCode;
use keyplane_core::query::{MAX_LIMIT, Paging};
use serde_json::Value;
use zip::write::{SimpleFileOptions, StreamWriter};

use crate::error::ApiError;

/// What a list answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The ordinary paged JSON list.
    Json,
    Csv,
    CsvZip,
    JsonZip,
}

/// The listed resource, as UKO names it in its media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entity {
    Vault,
    KeyTemplate,
    Keystore,
    ManagedKey,
}

impl Entity {
    fn name(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::KeyTemplate => "key-template",
            Self::Keystore => "keystore",
            Self::ManagedKey => "managed-key",
        }
    }

    /// The JSON list's collection name.
    fn collection(self) -> &'static str {
        match self {
            Self::Vault => "vaults",
            Self::KeyTemplate => "templates",
            Self::Keystore => "keystores",
            Self::ManagedKey => "managed_keys",
        }
    }

    /// The CSV columns: a header and where its value is in the item's JSON (`a/b` for nested
    /// fields, `a[]/b` for a list's values joined by `;`, `a[]=` for `name=value` tags).
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Vault => &[
                ("id", "id"),
                ("name", "name"),
                ("description", "description"),
                ("keys_count", "keys_count"),
                ("key_templates_count", "key_templates_count"),
                ("keystores_count", "keystores_count"),
                ("created_at", "created_at"),
                ("updated_at", "updated_at"),
                ("created_by", "created_by"),
                ("updated_by", "updated_by"),
            ],
            Self::KeyTemplate => &[
                ("id", "id"),
                ("name", "name"),
                ("vault.id", "vault/id"),
                ("vault.name", "vault/name"),
                ("version", "version"),
                ("state", "state"),
                ("type", "type[]"),
                ("naming_scheme", "naming_scheme"),
                ("key.algorithm", "key/algorithm"),
                ("key.size", "key/size"),
                ("key.state", "key/state"),
                ("key.activation_date", "key/activation_date"),
                ("key.expiration_date", "key/expiration_date"),
                ("key.rotation_interval", "key/rotation_interval"),
                ("keystores.type", "keystores[]/type"),
                ("keystores.group", "keystores[]/group"),
                ("keys_count", "keys_count"),
                ("description", "description"),
                ("created_at", "created_at"),
                ("updated_at", "updated_at"),
            ],
            Self::Keystore => &[
                ("id", "id"),
                ("name", "name"),
                ("type", "type"),
                ("vault.id", "vault/id"),
                ("vault.name", "vault/name"),
                ("location", "location"),
                ("groups", "groups[]"),
                ("description", "description"),
                ("created_at", "created_at"),
                ("updated_at", "updated_at"),
            ],
            Self::ManagedKey => &[
                ("id", "id"),
                ("label", "label"),
                ("state", "state"),
                ("algorithm", "algorithm"),
                ("size", "size"),
                ("version", "version"),
                ("vault.id", "vault/id"),
                ("vault.name", "vault/name"),
                ("template.id", "template/id"),
                ("template.name", "template/name"),
                ("activation_date", "activation_date"),
                ("expiration_date", "expiration_date"),
                ("rotated_at", "rotated_at"),
                ("referenced_keystores", "referenced_keystores[]/name"),
                ("tags", "tags[]="),
                ("description", "description"),
                ("created_at", "created_at"),
                ("updated_at", "updated_at"),
                ("created_by", "created_by"),
                ("updated_by", "updated_by"),
            ],
        }
    }
}

/// The format the `Accept` header asks for: of the types it names that a list serves, the one
/// it prefers most (`q`), the first among equals; a type refused with `q=0` is never chosen. A
/// header naming none of them is the ordinary JSON list, as before exports existed, unless it
/// names only UKO list types this list does not serve (another entity's): 406.
pub(crate) fn negotiate(headers: &HeaderMap, entity: Entity) -> Result<Format, ApiError> {
    let vendor = format!("application/vnd.ibm.uko.{}-list.v4.1", entity.name());
    let mut named_uko = false;
    let mut best: Option<(f32, Format)> = None;
    for range in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        named_uko |= media.starts_with("application/vnd.ibm.uko.");
        let format = match media.as_str() {
            "*/*" | "application/*" | "application/json" => Format::Json,
            "text/csv" => Format::Csv,
            "application/zip" => Format::CsvZip,
            m if m == format!("{vendor}+json") => Format::Json,
            m if m == format!("{vendor}.csv+zip") => Format::CsvZip,
            m if m == format!("{vendor}.json+zip") => Format::JsonZip,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    match best {
        Some((_, format)) => Ok(format),
        None if named_uko => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            ErrorCode::NotAcceptable,
            format!(
                "this list answers application/json, text/csv, application/zip, {vendor}+json, {vendor}.csv+zip or {vendor}.json+zip"
            ),
        )),
        None => Ok(Format::Json),
    }
}

/// Marks a list's answer as chosen by `Accept`, for caches between client and server.
pub(crate) fn varied(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

/// A list query an export reads page after page, from the start, in creation order: no
/// change moves an item in that order, so a page boundary never skips or repeats one updated
/// meanwhile.
pub(crate) trait Exportable: Clone + Send + Sync + 'static {
    fn page(&self, paging: Paging) -> Self;
}

macro_rules! exportable {
    ($($query:ty),*) => {$(
        impl Exportable for $query {
            fn page(&self, paging: Paging) -> Self {
                let mut query = self.clone();
                query.paging = paging;
                query.sort = vec![keyplane_core::query::SortKey {
                    field: "created_at",
                    descending: false,
                }];
                query
            }
        }
    )*};
}

exportable!(
    keyplane_core::query::VaultQuery,
    keyplane_core::query::TemplateQuery,
    keyplane_core::query::KeystoreQuery,
    keyplane_core::query::KeyQuery
);

/// The reader of an export of `query`'s list: `read` lists one page of it.
pub(crate) fn reader<Q, F, Fut>(query: Q, read: F) -> PageReader
where
    Q: Exportable,
    F: Fn(Q) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(Vec<Value>, u64), ApiError>> + Send + 'static,
{
    Box::new(move |paging| Box::pin(read(query.page(paging))))
}

/// Exports streaming at once, over the whole server: each holds a database read a page at a
/// time for as long as its client reads.
static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The export the `Accept` header asks for; `None` for the ordinary JSON list.
pub(crate) fn requested(headers: &HeaderMap, entity: Entity) -> Result<Option<Format>, ApiError> {
    negotiate(headers, entity).map(|f| (f != Format::Json).then_some(f))
}

/// A page's items as their JSON, and the total as a count.
pub(crate) fn page_of<T: serde::Serialize>(
    items: impl Iterator<Item = T>,
    total: i64,
) -> Result<(Vec<Value>, u64), ApiError> {
    let items = items
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::from(keyplane_core::Error::internal(e.to_string())))?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

/// Reads one page of the list: its items as their JSON, and how many match in all.
pub(crate) type PageReader =
    Box<dyn FnMut(Paging) -> BoxFuture<'static, Result<(Vec<Value>, u64), ApiError>> + Send>;

/// A cell's text: nested fields by path, lists joined by `;`. A cell that a spreadsheet would
/// take for a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`.
fn cell(item: &Value, path: &str) -> String {
    fn text(v: &Value) -> String {
        match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    let text = if let Some((list, rest)) = path.split_once("[]") {
        let items = item.pointer(&format!("/{list}")).and_then(Value::as_array);
        items
            .map(|items| {
                items
                    .iter()
                    .map(|i| match rest {
                        "" => text(i),
                        "=" => format!("{}={}", text(&i["name"]), text(&i["value"])),
                        field => i.pointer(field).map(text).unwrap_or_default(),
                    })
                    .collect::<Vec<_>>()
                    .join(";")
            })
            .unwrap_or_default()
    } else {
        item.pointer(&format!("/{path}"))
            .map(text)
            .unwrap_or_default()
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

/// Bytes written by the zip writer, taken out a page at a time.
#[derive(Clone, Default)]
struct Spool(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Spool {
    fn take(&self) -> bytes::Bytes {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())).into()
    }
}

/// Writes pages into the export's bytes.
struct Encoder {
    format: Format,
    entity: Entity,
    rows: u64,
    zip: Option<(zip::ZipWriter<StreamWriter<Spool>>, Spool)>,
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Encoder {
    fn new(format: Format, entity: Entity) -> std::io::Result<Self> {
        let zip = match format {
            Format::CsvZip | Format::JsonZip => {
                let spool = Spool::default();
                let mut zip = zip::ZipWriter::new_stream(spool.clone());
                let extension = if format == Format::CsvZip {
                    "csv"
                } else {
                    "json"
                };
                zip.start_file(
                    format!("{}-list.{extension}", entity.name()),
                    SimpleFileOptions::default()
                        .compression_method(zip::CompressionMethod::Deflated)
                        .large_file(true),
                )
                .map_err(io_error)?;
                Some((zip, spool))
            }
            _ => None,
        };
        Ok(Self {
            format,
            entity,
            rows: 0,
            zip,
        })
    }

    /// The bytes of one page (the first with the CSV header or the JSON list's opening).
    fn page(&mut self, items: &[Value], total: u64) -> std::io::Result<bytes::Bytes> {
        let mut text = Vec::new();
        match self.format {
            Format::Csv | Format::CsvZip => {
                let mut csv = csv::Writer::from_writer(&mut text);
                let columns = self.entity.columns();
                if self.rows == 0 {
                    csv.write_record(columns.iter().map(|(h, _)| *h))
                        .map_err(io_error)?;
                }
                for item in items {
                    csv.write_record(columns.iter().map(|(_, path)| cell(item, path)))
                        .map_err(io_error)?;
                }
                csv.flush()?;
            }
            Format::JsonZip => {
                if self.rows == 0 {
                    write!(
                        text,
                        "{{\"total_count\":{total},\"{}\":[",
                        self.entity.collection()
                    )?;
                }
                for (i, item) in items.iter().enumerate() {
                    if self.rows + i as u64 > 0 {
                        text.push(b',');
                    }
                    serde_json::to_writer(&mut text, item).map_err(io_error)?;
                }
            }
            Format::Json => {}
        }
        self.rows += items.len() as u64;
        self.out(&text)
    }

    /// The export's closing bytes.
    fn finish(mut self) -> std::io::Result<bytes::Bytes> {
        let mut text = Vec::new();
        if self.format == Format::JsonZip {
            if self.rows == 0 {
                write!(
                    text,
                    "{{\"total_count\":0,\"{}\":[",
                    self.entity.collection()
                )?;
            }
            text.extend_from_slice(b"]}");
        }
        let tail = self.out(&text)?;
        match self.zip.take() {
            Some((zip, spool)) => {
                zip.finish().map_err(io_error)?;
                let mut all = tail.to_vec();
                all.extend_from_slice(&spool.take());
                Ok(all.into())
            }
            None => Ok(tail),
        }
    }

    fn out(&mut self, text: &[u8]) -> std::io::Result<bytes::Bytes> {
        match &mut self.zip {
            Some((zip, spool)) => {
                zip.write_all(text)?;
                Ok(spool.take())
            }
            None => Ok(bytes::Bytes::copy_from_slice(text)),
        }
    }
}

/// The export's answer: every page `read` gives, from the first, in `format`.
pub(crate) async fn answer(
    format: Format,
    entity: Entity,
    mut read: PageReader,
) -> Result<Response, ApiError> {
    let Ok(slot) = EXPORTS.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many exports are running; try again when one has finished",
        ));
    };
    let limit = MAX_LIMIT;
    let (first, total) = read(Paging { limit, offset: 0 }).await?;
    let internal = |e: std::io::Error| {
        ApiError::from(keyplane_core::Error::internal(format!(
            "writing an export: {e}"
        )))
    };
    let mut encoder = Encoder::new(format, entity).map_err(internal)?;
    let head = encoder.page(&first, total).map_err(internal)?;
    let more = first.len() == limit as usize;
    struct State {
        read: PageReader,
        /// Held while the export streams.
        _slot: tokio::sync::SemaphorePermit<'static>,
        encoder: Option<Encoder>,
        offset: u64,
        more: bool,
        total: u64,
    }
    let state = State {
        read,
        _slot: slot,
        encoder: Some(encoder),
        offset: u64::from(limit),
        more,
        total,
    };
    let rest = futures::stream::unfold(state, move |mut state| async move {
        let encoder = state.encoder.as_mut()?;
        if state.more {
            let page = (state.read)(Paging {
                limit,
                offset: state.offset,
            })
            .await;
            let chunk = match page {
                Ok((items, _)) => {
                    state.more = items.len() == limit as usize;
                    state.offset += u64::from(limit);
                    encoder.page(&items, state.total)
                }
                // The answer has begun: cutting it off is how the client learns it is short.
                Err(e) => Err(io_error(&e.message)),
            };
            if chunk.is_err() {
                state.encoder = None;
            }
            return Some((chunk, state));
        }
        let encoder = state.encoder.take()?;
        Some((encoder.finish(), state))
    });
    let body = Body::from_stream(
        futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(rest),
    );
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/zip", "zip"),
    };
    let mut response = varied((StatusCode::OK, body).into_response());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}-list.{extension}\"",
        entity.name()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Result<Format, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers, Entity::ManagedKey)
    }

    #[test]
    fn accept_types_choose_the_format() {
        assert_eq!(
            negotiate(&HeaderMap::new(), Entity::Vault).unwrap(),
            Format::Json
        );
        assert_eq!(accept("*/*").unwrap(), Format::Json);
        assert_eq!(accept("text/csv").unwrap(), Format::Csv);
        assert_eq!(
            accept("text/csv;q=0, application/zip").unwrap(),
            Format::CsvZip
        );
        assert_eq!(
            accept("text/csv;q=0.1, application/json").unwrap(),
            Format::Json
        );
        // What no list serves falls back to JSON, as before exports.
        assert_eq!(accept("application/problem+json").unwrap(), Format::Json);
        assert_eq!(
            accept("application/vnd.ibm.uko.managed-key-list.v4.1.json+zip").unwrap(),
            Format::JsonZip
        );
        assert_eq!(
            accept("application/vnd.ibm.uko.managed-key-list.v4.1+json").unwrap(),
            Format::Json
        );
        // Another entity's type is not this list's.
        assert!(accept("application/vnd.ibm.uko.vault-list.v4.1.csv+zip").is_err());
        assert_eq!(accept("text/html").unwrap(), Format::Json);
    }

    #[test]
    fn cells_flatten_and_defuse_formulas() {
        let item = serde_json::json!({"vault": {"id": "v"}, "groups": ["a", "b"],
            "tags": [{"name": "env", "value": "prod"}], "description": "=HYPERLINK(\"x\")",
            "referenced_keystores": [{"name": "k1"}, {"name": "k2"}]});
        assert_eq!(cell(&item, "vault/id"), "v");
        assert_eq!(cell(&item, "groups[]"), "a;b");
        assert_eq!(cell(&item, "tags[]="), "env=prod");
        assert_eq!(cell(&item, "referenced_keystores[]/name"), "k1;k2");
        assert_eq!(cell(&item, "description"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell(&item, "missing"), "");
        let tabbed = serde_json::json!({"description": "\t=1+2"});
        assert_eq!(cell(&tabbed, "description"), "'\t=1+2");
    }
}
