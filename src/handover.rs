//! Graceful stop of a master: hand the role to a replica before redis stops.

use std::fmt;
use std::time::Duration;

use crate::config::Config;
use crate::discover::Decision;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Skipped(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

pub fn worth_trying(_d: &Decision) -> bool {
    false
}

pub async fn run(_cfg: &Config, _budget: Duration) -> Outcome {
    Outcome::Skipped("not implemented".into())
}
