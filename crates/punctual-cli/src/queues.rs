//! `punctual queues list`: each queue's counts by state, its due jobs and how long the oldest
//! has waited, from a server (`GET /v1/queues`) or a store (`Store::queue_stats`). Both are
//! answered from counts the store keeps with every write, so this is cheap on any store.

use clap::Subcommand;
use punctual_server::dto::{QueueList, QueueView};
use punctual_server::store_url::OpenedStore;

use crate::endpoint::{Endpoint, EndpointArgs, OpenMode, block_on};
use crate::failure::Failure;
use crate::render;

#[derive(clap::Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Print JSON (the API's own, one queue per line) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: QueuesCommand,
}

#[derive(Subcommand)]
enum QueuesCommand {
    /// Each queue that holds a job: its counts by state, due jobs and the oldest due's age.
    List,
}

pub fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let QueuesCommand::List = args.command;
    let endpoint = args.endpoint.resolve()?;
    block_on(async {
        let queues = match endpoint {
            Endpoint::Server(client) => {
                let list: QueueList = client.get("v1/queues", &[]).await?;
                list.queues
            }
            Endpoint::Store(target) => {
                target
                    .session(OpenMode::MustExist, async |opened: &OpenedStore| {
                        let now = opened.clock.now();
                        let stats = opened
                            .store
                            .queue_stats(now)
                            .await
                            .map_err(Failure::store)?;
                        Ok(stats
                            .iter()
                            .map(|stats| QueueView::from_stats(stats, now))
                            .collect::<Vec<_>>())
                    })
                    .await?
            }
        };
        if args.json {
            for queue in &queues {
                render::print_json(queue)?;
            }
        } else if queues.is_empty() {
            println!("no queues: no jobs");
        } else {
            print!("{}", render::queue_table(&queues));
        }
        Ok(())
    })
}
