//! `keyplane migrate from-uko`: reads a UKO v4 estate (vaults, templates, keystores, managed
//! keys) from its server and recreates it in Keyplane. Keys whose copies live in external
//! keystores are adopted by reference (each copy proven there by the target server); keys whose
//! material stays in the source's internal keystores cannot move. Every step is an ordinary API
//! call on the target, so each is authorised and audited there; what was done is kept in a
//! state file, so a second run changes nothing and an interrupted one resumes.

mod apply;
mod mapping;
mod plan;
mod report;
mod source;
mod state;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::remote::{self, ConnectArgs, Output};

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Bring a UKO estate across: vaults, templates, keystores, and keys adopted by reference.
    FromUko(Box<FromUko>),
}

/// The target is the Keyplane server of `--url` (with `--token` or `--api-key`, as for every
/// client verb); the source is `--source-url`.
#[derive(Args)]
pub struct FromUko {
    #[command(flatten)]
    target: ConnectArgs,
    /// The source UKO v4 endpoint (UKO_URL, as UKO's own CLI reads it).
    #[arg(long, env = "UKO_URL")]
    source_url: String,
    /// Where the source's API key is exchanged for a token: `{iam-url}/identity/token`.
    #[arg(
        long,
        env = "IBMCLOUD_IAM_URL",
        default_value = "https://iam.cloud.ibm.com"
    )]
    iam_url: String,
    /// A file holding the source's IAM API key; otherwise it is read from the environment
    /// variable IBMCLOUD_API_KEY. Never given on the command line.
    #[arg(long)]
    source_api_key_file: Option<PathBuf>,
    /// PEM CA certificates the source is trusted with instead of the system's.
    #[arg(long)]
    source_ca_cert: Option<PathBuf>,
    /// The mapping file (TOML): per source keystore, where its secrets come from.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// What was done so far, kept between runs: a rerun skips it, an interrupted run resumes.
    #[arg(long, default_value = "keyplane-migration.json")]
    state: PathBuf,
    /// Print the plan (as a table, or JSON with --output json) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write the final verification report, as JSON, to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Requests per second to the source, at most.
    #[arg(long, default_value_t = 10)]
    source_rate: u32,
    /// For keys that cannot move, create a successor key in Keyplane from this template (by
    /// name, in the migrated vault); repeat per template, or give `all`.
    #[arg(long = "create-successors", value_name = "TEMPLATE")]
    successors_for: Vec<String>,
}

pub async fn run(command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::FromUko(args) => from_uko(*args).await,
    }
}

async fn from_uko(args: FromUko) -> anyhow::Result<()> {
    let mapping = mapping::Mapping::load(args.mapping.as_deref())?;
    let source_url = args.source_url.trim_end_matches('/').to_owned();
    let mut state = state::State::load(&args.state, &source_url)?;
    let source = source::Source::connect(
        &source_url,
        &args.iam_url,
        args.source_api_key_file.as_deref(),
        args.source_ca_cert.as_deref(),
        args.source_rate,
    )
    .await?;
    let target = args
        .target
        .client()
        .await
        .map_err(|e| anyhow::anyhow!("signing in to Keyplane: {e:#}"))?;
    let estate = source::read_estate(&source).await?;
    let plan = plan::Plan::make(&estate, &mapping, &state, &target).await?;
    // Every keystore that will be created is reached first, from here.
    let unreachable = plan.test_connections(&estate, &mapping).await;
    let output = args.target.output;
    if args.dry_run {
        plan.print(output, &unreachable);
        return Ok(());
    }
    if !unreachable.is_empty() {
        plan.print(output, &unreachable);
        bail!(
            "{} keystore connection(s) failed the test; nothing was written",
            unreachable.len()
        );
    }

    let mut run = apply::Apply {
        target: &target,
        estate: &estate,
        plan: &plan,
        mapping: &mapping,
        state: &mut state,
        state_path: &args.state,
        failures: Vec::new(),
        refused: Default::default(),
    };
    run.vaults().await?;
    run.keystores().await?;
    run.templates().await?;
    run.keys().await?;
    run.successors(&args.successors_for).await?;
    let (failures, refused) = (run.failures, run.refused);

    let report = report::verify(&target, &estate, &state, &plan, &mapping, &refused).await?;
    if let Some(path) = &args.report {
        let whole = json!({"report": report, "successor_offers": plan.offers});
        std::fs::write(path, serde_json::to_vec_pretty(&whole)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    report::print(output, &report, &plan.offers);
    for f in &failures {
        eprintln!("error: {f}");
    }
    let unmoved = report
        .iter()
        .filter(|o| matches!(o.result, "differs" | "not_migrated"))
        .count();
    if unmoved > 0 || !failures.is_empty() {
        return Err(MigrationIncomplete(unmoved + failures.len()).into());
    }
    Ok(())
}

/// Some objects were not migrated or differ; the report says which.
#[derive(Debug, thiserror::Error)]
#[error("{0} object(s) were not migrated or differ; see the report")]
pub struct MigrationIncomplete(usize);

pub(super) fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn is_internal(keystore: &Value) -> bool {
    text(keystore, "/type") == "ibm_cloud_kms" && text(keystore, "/ibm_variant") == "internal"
}

/// `whole` as JSON or YAML; or, as a table, `rows` in `columns`, then `notes` a line each.
fn print_rows(
    output: Output,
    whole: &Value,
    rows: &[Value],
    columns: &[(&str, &str)],
    notes: &[String],
) {
    if remote::print_data(output, whole) {
        return;
    }
    remote::print_list(output, rows, columns, None);
    let mut out = std::io::stdout().lock();
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
}
