//! The client verbs: `keyplane <resource> <verb>` against a running server, through
//! `keyplane-client`. Tables on a terminal, `--output json` for scripts, documented exit codes.

pub mod approvals;
pub mod audit_events;
pub mod keys;
pub mod keystores;
pub mod profiles;
pub mod templates;
pub mod vaults;

use std::io::{BufRead, Write};

use clap::{Args, ValueEnum};
use keyplane_client::{Client, ClientError, Credential, Settings};
use serde_json::Value;

/// Exit codes scripts can rely on (also in `docs/CLI.md`).
pub mod exit {
    /// Bad input: the server refused the request as invalid (400, 413, 415).
    pub const BAD_INPUT: i32 = 3;
    /// Not signed in, or not allowed (401, 403).
    pub const NOT_ALLOWED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    /// Refused by a rule or a stale ETag (409, 412, 428).
    pub const REFUSED: i32 = 6;
    /// The server or a keystore is unreachable, or the server is sealed (424, 503, no answer).
    pub const UNAVAILABLE: i32 = 7;
    /// The user declined a confirmation.
    pub const DECLINED: i32 = 8;
}

/// Where the server is and who is calling: flags, then environment, then the profile.
#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// The profile to use (see `keyplane login`); default: the file's default profile.
    #[arg(long, global = true, env = "KEYPLANE_PROFILE")]
    pub profile: Option<String>,
    /// The server's base URL (default `http://127.0.0.1:8080`).
    #[arg(long, global = true, env = "KEYPLANE_URL")]
    pub url: Option<String>,
    /// A bearer token.
    #[arg(long, global = true, env = "KEYPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An API key, exchanged for an access token (used when no token is given).
    #[arg(long, global = true, env = "KEYPLANE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A PEM file of CA certificates trusted instead of the system's.
    #[arg(long, global = true, env = "KEYPLANE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML; returns false (printing nothing) for table output.
pub fn print_data(output: Output, value: &impl serde::Serialize) -> bool {
    let text = match output {
        Output::Table => return false,
        Output::Json => serde_json::to_string_pretty(value).unwrap_or_default(),
        Output::Yaml => serde_yaml_ng::to_string(value).unwrap_or_default(),
    };
    let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
    true
}

/// The user declined a confirmation: nothing was done.
#[derive(Debug, thiserror::Error)]
#[error("nothing was done")]
pub struct Declined;

impl ConnectArgs {
    pub async fn client(&self) -> anyhow::Result<Client> {
        let profile = profiles::Profiles::load()?
            .pick(self.profile.as_deref())?
            .unwrap_or_default();
        let credential = match (&self.token, &self.api_key, &profile.token, &profile.api_key) {
            (Some(t), _, _, _) => Credential::Token(t.clone()),
            (None, Some(k), _, _) => Credential::ApiKey(k.clone()),
            (None, None, Some(t), _) => Credential::Token(t.clone()),
            (None, None, None, Some(k)) => Credential::ApiKey(k.clone()),
            (None, None, None, None) => anyhow::bail!(
                "no credentials: run keyplane login, or give --token (KEYPLANE_TOKEN) or \
                 --api-key (KEYPLANE_API_KEY)"
            ),
        };
        let url = self
            .url
            .clone()
            .or_else(|| Some(profile.url.clone()).filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let ca_cert_pem = self
            .ca_cert
            .as_ref()
            .or(profile.ca_cert.as_ref())
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
            })
            .transpose()?;
        Ok(Client::connect(Settings {
            url,
            credential,
            ca_cert_pem,
            iam_url: None,
        })
        .await?)
    }
}

/// `keyplane login`: checks an API key against the server and keeps it in a profile.
pub async fn login(args: &ConnectArgs) -> anyhow::Result<()> {
    let url = args.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    let api_key = match &args.api_key {
        Some(k) => k.clone(),
        None => {
            eprintln!("API key for {url}:");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    if api_key.is_empty() {
        anyhow::bail!("no API key was given");
    }
    let ca_cert = args.ca_cert.clone();
    let ca_cert_pem = ca_cert
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
        })
        .transpose()?;
    // Exchanging the key proves it works before it is kept.
    Client::connect(Settings {
        url: url.clone(),
        credential: Credential::ApiKey(api_key.clone()),
        ca_cert_pem,
        iam_url: None,
    })
    .await?;
    let name = args.profile.clone().unwrap_or_else(|| "default".to_owned());
    let mut all = profiles::Profiles::load()?;
    all.profiles.insert(
        name.clone(),
        profiles::Profile {
            url: url.clone(),
            api_key: Some(api_key),
            token: None,
            ca_cert,
        },
    );
    if all.default.is_none() {
        all.default = Some(name.clone());
    }
    let path = all.save()?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "signed in to {url}; profile '{name}' saved in {}",
        path.display()
    );
    Ok(())
}

/// The exit code an error stands for.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.is::<Declined>() {
        return exit::DECLINED;
    }
    if error.is::<crate::migrate::MigrationIncomplete>() {
        return exit::REFUSED;
    }
    if error.is::<keys::WaitTimedOut>() {
        return exit::UNAVAILABLE;
    }
    match error.downcast_ref::<ClientError>() {
        // An API key the token endpoint does not know (IAM's error codes).
        Some(ClientError::Api { code, .. }) if code.starts_with("BXNIM") => exit::NOT_ALLOWED,
        Some(ClientError::Api { status, .. }) => match status {
            400 | 413 | 415 => exit::BAD_INPUT,
            401 | 403 => exit::NOT_ALLOWED,
            404 => exit::NOT_FOUND,
            409 | 412 | 428 => exit::REFUSED,
            424 | 503 => exit::UNAVAILABLE,
            _ => 1,
        },
        Some(ClientError::Unreachable { .. }) => exit::UNAVAILABLE,
        _ => 1,
    }
}

/// Asks before a destructive verb; `yes` skips the question. Reads the answer from standard
/// input, so scripts without `--yes` are refused rather than left waiting on a terminal.
pub fn confirm(yes: bool, question: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    eprint!("{question} Type 'yes' to go on: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(Declined.into())
    }
}

/// A cell of a table: the value at a JSON pointer, as text.
fn cell(item: &Value, pointer: &str) -> String {
    match item.pointer(pointer) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| cell(v, ""))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Prints items as aligned columns (`(header, JSON pointer)`), or the JSON itself.
pub fn print_list(output: Output, items: &[Value], columns: &[(&str, &str)], total: Option<u64>) {
    if print_data(output, &items) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, p)| cell(item, p)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(
        out,
        "{}",
        line(columns.iter().map(|(h, _)| (*h).to_owned()).collect())
    );
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
    if let Some(total) = total.filter(|t| *t > items.len() as u64) {
        let _ = writeln!(
            out,
            "({} of {total} shown; --all-pages lists every one)",
            items.len()
        );
    }
}

/// Prints one resource as `field: value` lines, or the JSON itself.
pub fn print_one(output: Output, item: &Value, fields: &[(&str, &str)]) {
    if print_data(output, item) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let width = fields.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
    for (label, pointer) in fields {
        let _ = writeln!(out, "{label:<width$}  {}", cell(item, pointer));
    }
}

/// A one-line confirmation of what was done (tables only; JSON output prints the resource).
pub fn done(output: Output, message: &str, item: &Value) {
    if !print_data(output, item) {
        let _ = writeln!(std::io::stdout().lock(), "{message}");
    }
}

/// A list read once (one page, as the server pages it) or whole (`--all-pages`).
pub async fn list(
    client: &Client,
    path: &str,
    collection: &str,
    all_pages: bool,
) -> anyhow::Result<(Vec<Value>, Option<u64>)> {
    if all_pages {
        let items = client.list_all(path, collection).await?;
        let total = items.len() as u64;
        return Ok((items, Some(total)));
    }
    let page = client.get(path).await?.body;
    let items = page[collection].as_array().cloned().unwrap_or_default();
    Ok((items, page["total_count"].as_u64()))
}

/// `body` with the optional fields that were given added to it.
pub fn with_fields<'a>(
    mut body: Value,
    fields: impl IntoIterator<Item = (&'a str, Option<String>)>,
) -> Value {
    for (name, value) in fields {
        if let Some(v) = value {
            body[name] = Value::String(v);
        }
    }
    body
}

/// `PATCH resource` under its ETag (read now, or pinned); the changed resource.
pub async fn patch(
    client: &Client,
    resource: &str,
    body: &Value,
    if_match: Option<&str>,
) -> anyhow::Result<Value> {
    let reply = client
        .act(reqwest::Method::PATCH, resource, "", Some(body), if_match)
        .await?;
    Ok(reply.body)
}

/// `DELETE resource` + `suffix` (a query) under its ETag (read now, or pinned).
pub async fn delete(
    client: &Client,
    resource: &str,
    suffix: &str,
    if_match: Option<&str>,
) -> anyhow::Result<()> {
    client
        .act(reqwest::Method::DELETE, resource, suffix, None, if_match)
        .await?;
    Ok(())
}

/// Appends `name=value` query parameters that are set, encoded.
pub fn with_query(path: &str, params: &[(&str, Option<&str>)]) -> String {
    let set: Vec<(&str, &str)> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    if set.is_empty() {
        return path.to_owned();
    }
    // Only the query's encoding is wanted from the URL; the host is a placeholder.
    match reqwest::Url::parse_with_params(&format!("http://server{path}"), &set) {
        Ok(url) => format!("{}?{}", url.path(), url.query().unwrap_or_default()),
        Err(_) => path.to_owned(),
    }
}
