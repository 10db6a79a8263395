//! `punctual tokens create|list|revoke`: API tokens, made and revoked directly on the store, so
//! the first admin token exists before any server does. Every node of a cluster sees them at
//! once (a revocation within 2 s: nodes cache a token's record that long).

use anyhow::Context;
use clap::Subcommand;
use punctual_core::{TokenId, limits};
use punctual_server::api::tokens::parse_scopes;
use punctual_server::auth::issue;
use punctual_server::dto::TokenView;
use punctual_server::store_url::{self, PostgresSettings, StoreUrl};

#[derive(clap::Args)]
pub struct TokensArgs {
    /// The store: sqlite:PATH or postgres://... [default: sqlite:punctual.db].
    #[arg(long, value_name = "STORE", global = true, env = "PUNCTUAL_STORE")]
    store: Option<StoreUrl>,
    /// With a PostgreSQL store: the schema punctual's tables are in.
    #[arg(long, value_name = "NAME", global = true, env = "PUNCTUAL_SCHEMA")]
    schema: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make a token; its secret is printed this once.
    Create {
        /// What the token is for.
        #[arg(long)]
        label: String,
        /// A scope: read, write, worker or admin (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The token stops working after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id (the part after pct_ and before the second _).
    Revoke { id: String },
}

pub fn run(args: TokensArgs) -> anyhow::Result<()> {
    let store = match args.store {
        Some(store) => store,
        None => "sqlite:punctual.db".parse().context("the default store")?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let settings = PostgresSettings {
            schema: args.schema.clone(),
            pool_size: 1,
            ..PostgresSettings::default()
        };
        let opened = store_url::open(&store, &settings).await?;
        let (store, now) = (opened.store.clone(), opened.clock.now());
        let result = match args.command {
            TokensCommand::Create {
                label,
                scopes,
                expires_in_days,
            } => {
                let scopes = parse_scopes(&scopes)
                    .map_err(|error| anyhow::anyhow!("invalid --scope: {}", error.detail()))?;
                let expires_at = expires_in_days
                    .map(|days| now.add(std::time::Duration::from_secs(u64::from(days) * 86_400)));
                let (secret, record) = issue(&label, &scopes, expires_at, now)
                    .map_err(|error| anyhow::anyhow!("invalid token: {}", error.detail()))?;
                store
                    .insert_token(record.clone())
                    .await
                    .context("storing the token")?;
                if args.json {
                    let mut value = serde_json::to_value(TokenView::from_token(&record))?;
                    value["token"] = serde_json::Value::String(secret);
                    println!("{value}");
                } else {
                    println!("{secret}");
                    eprintln!(
                        "token {} ({}) with scopes {}: shown once, keep it safe",
                        record.id,
                        record.label,
                        record.scopes.join(" ")
                    );
                }
                Ok(())
            }
            TokensCommand::List => {
                let mut after: Option<TokenId> = None;
                loop {
                    let page = store
                        .list_tokens(after.as_ref(), limits::PAGE_SIZE_MAX)
                        .await
                        .context("listing tokens")?;
                    for token in &page {
                        if args.json {
                            println!("{}", serde_json::to_string(&TokenView::from_token(token))?);
                        } else {
                            let state = match (token.revoked_at, token.is_active(now)) {
                                (Some(at), _) => format!("revoked {at}"),
                                (None, true) => "active".to_owned(),
                                (None, false) => "expired".to_owned(),
                            };
                            println!(
                                "{}  {:<24}  {:<22}  {state}",
                                token.id,
                                token.label,
                                token.scopes.join(" ")
                            );
                        }
                    }
                    if page.len() < limits::PAGE_SIZE_MAX {
                        break;
                    }
                    after = page.last().map(|token| token.id.clone());
                }
                Ok(())
            }
            TokensCommand::Revoke { id } => {
                let id = TokenId::new(&id).with_context(|| format!("invalid token id {id:?}"))?;
                let token = store
                    .revoke_token(&id, now)
                    .await
                    .with_context(|| format!("revoking token {id}"))?;
                if args.json {
                    println!("{}", serde_json::to_string(&TokenView::from_token(&token))?);
                } else {
                    println!("revoked token {} ({})", token.id, token.label);
                }
                Ok(())
            }
        };
        drop(store);
        opened.close().await;
        result
    })
}
