//! `reviewflow stack ...`: the self-managed local PostgreSQL and Kafka.

use std::process::ExitCode;

use clap::Subcommand;

use crate::error::Result;
use crate::stack::{self, StackConfig};

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum StackAction {
    /// Start PostgreSQL and Kafka (fetching Kafka, and PostgreSQL 16-18, once) and wait until
    /// both accept connections; --brokers 3 makes Kafka a cluster of three nodes.
    Up,
    /// Stop exactly the processes `up` started; data is kept unless --purge.
    Down {
        /// Also delete the stack's data (the PostgreSQL cluster and Kafka's log); the jar cache stays.
        #[arg(long)]
        purge: bool,
    },
    /// Show whether each part of the stack is running, and where.
    Status,
    /// Print the connection settings as shell `export` lines: eval "$(reviewflow stack env)".
    Env,
    /// Create (or renew the passwords of) a login user in each least-privilege group and print
    /// their connection strings as `export` lines (CDC_DATABASE_URL, API_DATABASE_URL,
    /// WORKER_DATABASE_URL): eval "$(reviewflow stack roles)".
    Roles,
    /// Kill the primary PostgreSQL with SIGKILL and promote the standby of `up --standby`;
    /// `stack env` then points at the new primary. The old primary stays down.
    Failover,
    /// Fault injection: kill one part with SIGKILL and start it again.
    Crash {
        #[arg(value_enum)]
        part: stack::Part,
    },
    /// Fault injection: kill Kafka node N (from 1) with SIGKILL and leave it down, so its
    /// partitions' leadership and the coordinators it hosted move to the others.
    KillBroker {
        /// The node, from 1 to the number of brokers (`stack status` lists them).
        node: u8,
    },
    /// Start Kafka node N again (after kill-broker) and wait until the cluster lists it.
    StartBroker { node: u8 },
}

pub(super) async fn execute(action: StackAction, cfg: &StackConfig) -> Result<ExitCode> {
    match action {
        StackAction::Up => {
            let info = stack::up(cfg).await?;
            println!("local stack is up (data in {})", cfg.home().display());
            // The password stays out of logs; `stack env` prints it for the shell that asks.
            let url = crate::secret::redact_url(&info.database_url);
            println!("  postgres {}: {url}", cfg.pg_version);
            println!("  kafka:    {}", info.kafka_bootstrap_servers);
            if let Ok((address, user, _)) = stack::kafka_sasl(cfg) {
                println!(
                    "  kafka SASL_PLAINTEXT (PLAIN, user {user}, password in {}): {address}",
                    cfg.home().join("kafka/sasl.password").display()
                );
            }
            if let Ok((address, ca)) = stack::kafka_sasl_ssl(cfg) {
                println!(
                    "  kafka SASL_SSL (the same user; ssl.ca.location {}): {address}",
                    ca.display()
                );
            }
            println!("use it from a shell with: eval \"$(reviewflow stack env)\"");
        }
        StackAction::Down { purge } => {
            stack::down(cfg).await?;
            if purge {
                stack::purge(cfg)?;
                println!("local stack is down and its data deleted");
            } else {
                println!(
                    "local stack is down (data kept in {})",
                    cfg.home().display()
                );
            }
        }
        StackAction::Status => {
            let mut all_up = true;
            for (part, state) in stack::status(cfg) {
                match state {
                    Ok(address) => println!("{part:<9} running  {address}"),
                    Err(_) => {
                        all_up = false;
                        println!("{part:<9} stopped");
                    }
                }
            }
            return Ok(if all_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
        StackAction::Env => print!("{}", stack::info(cfg).await?.exports()),
        StackAction::Roles => {
            for (role, url) in stack::roles(cfg).await? {
                println!("export {}='{url}'", role.variable());
            }
        }
        StackAction::Failover => {
            let url = stack::failover(cfg).await?;
            println!(
                "the standby is the primary now: {}",
                crate::secret::redact_url(&url)
            );
        }
        StackAction::Crash { part } => {
            stack::crash(cfg, part).await?;
            println!("{part:?} was killed and is running again");
        }
        StackAction::KillBroker { node } => {
            stack::kill_broker(cfg, node).await?;
            println!("Kafka node {node} was killed (start it with `reviewflow stack start-broker {node}`)");
        }
        StackAction::StartBroker { node } => {
            stack::start_broker(cfg, node).await?;
            println!("Kafka node {node} is running");
        }
    }
    Ok(ExitCode::SUCCESS)
}
