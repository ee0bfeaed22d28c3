//! nbgate: a JupyterLab for everyone in the room.
//!
//! One tokio process in front of a pool of warm Docker notebook containers:
//!
//! - [`config`]  typed configuration: file → `NBGATE_*` env → flags
//! - [`cli`]     the command line (`serve`, `check`)
//! - [`app`]     shared state and the HTTP server (build → bound port → run)
//! - [`web`]     `/hub/*` routes
//! - [`db`]      SQLite through sqlx, embedded migrations, careful opening
//! - [`docker`]  the engine connection, labels, the isolated network
//! - [`pool`]    the notebook container spec (and, with the pool issue, the pool)
//! - [`volumes`] per-user volumes and hot-binding them into running containers
//! - [`check`]   the environment doctor
//!
//! See ARCHITECTURE.md for the data flow and where each piece of state lives.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod culler;
pub mod db;
pub mod docker;
pub mod firewall;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod recycle;
pub mod slot;
pub mod telemetry;
pub mod tls;
pub mod volumes;
pub mod web;
