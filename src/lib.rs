//! Rota: a database-as-queue task dispatcher.
//!
//! Commands are rows in a `task` table. Every node reads the pending rows, asks a
//! consistent-hash ring which node owns each, and the owner executes it; start, stop and
//! monitoring of one application always happen on one node. The map:
//!
//! - [`domain`]: the vocabulary as types — task status, action, application state, node id.
//! - [`ring`]: the consistent-hash ring (pure): who owns a key at an epoch.
//! - [`config`]: settings, defaults, layering and validation.
//! - [`clock`]: the wall and monotonic clock services take as an argument (a manual one in tests).
//! - [`store`]: the database (PostgreSQL or SQLite through diesel); every SQL statement lives here.
//! - [`membership`]: who is in the cluster (standalone lock row, or etcd leases) and whether this
//!   node may act.
//! - [`dispatch`]: poll, own, claim, per-application actors, recovery.
//! - [`drivers`]: what start / stop / status / run mean per kind of application.
//! - [`schedule`]: cron and fixed-rate schedules: the pure firing rule and the owner's loop.
//! - [`jobs`]: routing strategies, fan-out and traffic policies (pure rules).
//! - [`workflow`]: DAGs of jobs: definitions, their checks, how a run advances, decisions (pure).
//! - [`tls`]: which servers outgoing TLS trusts (Mozilla's roots, or a `ca_file`).
//! - [`alarms`]: telling people when something fails: rules, channels, the delivery loop.
//! - [`api`]: the HTTP surface — health, metrics, `/api/v1`.
//! - [`console`]: the web console every node serves at `/` (an API client in the browser).
//! - [`metrics`]: the Prometheus registry.
//! - [`node`]: `rota serve`, wiring the above together with a safe start and stop order.
//! - [`logging`]: tracing output.
//! - [`cli`]: command-line front ends that are more than flag parsing (`ring simulate`).
//!
//! docs/design.md is the design (the invariants I1–I5 are stated there); the other files of docs/
//! explain each part.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alarms;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod domain;
pub mod drivers;
pub mod jobs;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ring;
pub mod schedule;
pub mod store;
pub mod tls;
pub mod workflow;
