//! `keyplane-bare`: one axum endpoint doing what a data-plane wrap does on the wire — parse JSON,
//! decode base64, AES-256-GCM encrypt with a key held in memory, encode, answer JSON — and
//! nothing else. It measures the HTTP + JSON + crypto ceiling of this machine.

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, RandomizedNonceKey};
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:18099")]
    listen: String,
}

async fn wrap(State(key): State<Arc<RandomizedNonceKey>>, Json(body): Json<Value>) -> Json<Value> {
    let mut data = B64
        .decode(body["plaintext"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let nonce = key
        .seal_in_place_append_tag(Aad::from(b"bare"), &mut data)
        .expect("seal");
    let mut out = nonce.as_ref().to_vec();
    out.extend_from_slice(&data);
    Json(json!({ "ciphertext": B64.encode(out), "keyVersion": { "id": "bare" } }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let key =
        Arc::new(RandomizedNonceKey::new(&AES_256_GCM, &raw).map_err(|_| anyhow::anyhow!("key"))?);
    let app = axum::Router::new()
        .route("/wrap", post(wrap))
        .with_state(key);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
