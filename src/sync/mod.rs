//! `countable sync <from> <to>` and `countable undo-sync <pair>` (seed 004, the Stage
//! Sync role, done safely): one environment's database and bucket pairs into another,
//! with fixups, and a way back.

pub mod config;
pub mod sql;
