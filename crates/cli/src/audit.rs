//! `keyplane audit`: proves the audit chain and exports it, reading the deployment's
//! database (the server may be running: readers do not block it).

use std::io::Write;

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use keyplane_core::ports::AuditQuery;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walks the whole chain: every event must link to the one before and match its hash.
    /// Exits non-zero and names the first broken event otherwise.
    Verify {
        #[command(flatten)]
        store: crate::serve::StoreArgs,
    },
    /// Events through a running server's API, newest pages last (filters as the API names them).
    Events {
        #[command(flatten)]
        connect: crate::remote::ConnectArgs,
        #[command(flatten)]
        filters: crate::remote::audit_events::EventFilters,
    },
    /// Asks a running server to verify its chain (any store, any node); non-zero if broken.
    Chain {
        #[command(flatten)]
        connect: crate::remote::ConnectArgs,
    },
    /// Writes every event (or those after `--after-seq`) to standard output.
    Export {
        #[command(flatten)]
        store: crate::serve::StoreArgs,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Only events after this position in the chain.
        #[arg(long, default_value_t = 0)]
        after_seq: i64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON event per line.
    Jsonl,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Events { .. } | AuditCommand::Chain { .. } => {
            bail!("a client verb runs through run_client")
        }
        AuditCommand::Verify { store } => {
            let store = store.open_existing().await?;
            let report = store.verify_audit_chain().await?;
            store.close().await;
            let mut out = std::io::stdout().lock();
            match report.first_broken {
                None => {
                    writeln!(
                        out,
                        "audit chain intact: {} events, head {}",
                        report.events, report.head
                    )?;
                    Ok(())
                }
                Some(seq) => bail!(
                    "audit chain broken at event {seq}: {} ({} events before it verify)",
                    report.reason.unwrap_or_default(),
                    report.events
                ),
            }
        }
        AuditCommand::Export {
            store,
            format: ExportFormat::Jsonl,
            after_seq,
        } => {
            let store = store.open_existing().await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = after_seq;
            loop {
                let page = store.list_audit_events(&AuditQuery::after(after)).await?;
                let Some(last) = page.items.last() else {
                    break;
                };
                after = last.seq;
                for event in &page.items {
                    serde_json::to_writer(&mut out, event)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
            drop(out);
            store.close().await;
            Ok(())
        }
    }
}
