//! countable: an environment manager for web projects that live in docker compose.
//!
//! Data flows one way: `cli` (arguments, thin `run`s) → domain modules (`project`,
//! `scaffold`, `envfile`, `names`, `environment`) → seams (`compose` for the
//! `docker compose` program, `engine` for the Docker API). Output goes through `ui`.

pub mod adopt;
pub mod archive;
pub mod backup;
pub mod cli;
pub mod compose;
pub mod daily;
pub mod data;
pub mod deploy;
pub mod digest;
pub mod drill;
pub mod engine;
pub mod envfile;
pub mod environment;
pub mod error;
pub mod git;
pub mod interrupt;
pub mod media;
pub mod names;
pub mod process;
pub mod project;
pub mod restore;
pub mod retention;
pub mod scaffold;
pub mod secrets;
pub mod store;
pub mod swarm;
pub mod sync;
pub mod tls;
pub mod ui;
