//! `rota ring …` commands: the operator's view of the consistent-hash ring.
//!
//! Why it exists: `rota ring simulate` lets an operator see, before deploying,
//! what a node count, a vnode count and a set of weights do to balance,
//! movement on join/leave, memory and lookup time. The work is done by the
//! pure [`crate::ring::simulate()`]; this file only parses flags, validates
//! them with messages that name the flag, and prints.
//!
//! It must never hold logic the ring needs elsewhere: anything a node needs at
//! run time lives in `crate::ring`.

use super::client::CliError;

use crate::ring::simulate::MAX_SIMULATED_KEYS;
use crate::ring::{SimulateParams, DEFAULT_VNODES, MAX_MEMBERS};

/// Simulate the ring for N nodes: balance, keys moved on join and leave,
/// memory, build and lookup time (`rota ring simulate`).
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  $ rota ring simulate --nodes 10 --keys 100000
  $ rota ring simulate --nodes 4 --weights 1,1,2,4 --keys 100000 --json")]
pub struct SimulateArgs {
    /// Number of nodes (named node-1..node-N).
    #[arg(long, default_value_t = 10)]
    pub nodes: u32,
    /// Virtual points per unit of node weight.
    #[arg(long, default_value_t = DEFAULT_VNODES)]
    pub vnodes: u32,
    /// Number of keys placed ("1".."K", like application and task ids).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Comma-separated node weights, one per node (e.g. 1,1,2); default all 1.
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<u32>>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `rota ring simulate`: prints the table, or with `--json` exactly one
/// JSON object on stdout. Flags out of range are usage errors (exit 2).
pub fn simulate(args: &SimulateArgs) -> Result<(), CliError> {
    let params = validate(args).map_err(CliError::Usage)?;
    let report =
        crate::ring::simulate(&params).map_err(|e| CliError::Failed(format!("ring simulation failed: {e}")))?;
    if args.json {
        let text = serde_json::to_string(&report)
            .map_err(|e| CliError::Failed(format!("could not encode the report as JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.render_table());
    }
    Ok(())
}

/// Checks the flags and turns them into simulator parameters; the error names the flag.
fn validate(args: &SimulateArgs) -> Result<SimulateParams, String> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1 (got 0)".to_string());
    }
    // u32 always fits usize on the 32- and 64-bit targets Rota builds for.
    let nodes = usize::try_from(args.nodes).unwrap_or(usize::MAX);
    let max_nodes = MAX_MEMBERS - 1;
    if nodes > max_nodes {
        return Err(format!("--nodes must be at most {max_nodes} (got {})", args.nodes));
    }
    if args.vnodes == 0 {
        return Err(format!("--vnodes must be at least 1 (got 0); the default is {DEFAULT_VNODES}"));
    }
    if args.keys == 0 || args.keys > MAX_SIMULATED_KEYS {
        return Err(format!("--keys must be between 1 and {MAX_SIMULATED_KEYS} (got {})", args.keys));
    }
    if let Some(weights) = &args.weights {
        if weights.len() != nodes {
            return Err(format!(
                "--weights has {} entries but --nodes is {}: give exactly one weight per node, in node order (e.g. --nodes 3 --weights 1,1,2)",
                weights.len(),
                args.nodes
            ));
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("--weights are all 0: at least one node must have a weight above 0".to_string());
        }
    }
    Ok(SimulateParams { nodes: args.nodes, vnodes: args.vnodes, keys: args.keys, weights: args.weights.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SimulateArgs {
        SimulateArgs { nodes: 3, vnodes: 16, keys: 100, weights: None, json: false }
    }

    #[test]
    fn weights_must_match_nodes() {
        let a = SimulateArgs { weights: Some(vec![1, 2]), ..args() };
        let err = validate(&a).unwrap_err();
        assert!(err.contains("--weights has 2 entries but --nodes is 3"), "{err}");
    }

    #[test]
    fn zero_flags_are_named() {
        for (a, flag) in [
            (SimulateArgs { nodes: 0, ..args() }, "--nodes"),
            (SimulateArgs { vnodes: 0, ..args() }, "--vnodes"),
            (SimulateArgs { keys: 0, ..args() }, "--keys"),
        ] {
            let err = validate(&a).unwrap_err();
            assert!(err.starts_with(flag), "{err}");
        }
    }

    #[test]
    fn valid_flags_pass() {
        let a = SimulateArgs { weights: Some(vec![1, 2, 3]), ..args() };
        let p = validate(&a).unwrap();
        assert_eq!(p.weights, Some(vec![1, 2, 3]));
    }
}
