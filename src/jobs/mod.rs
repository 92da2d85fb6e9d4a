//! Jobs: one-shot `run` tasks, where they run (routing strategies), how fan-out parents derive
//! their status from their children, and which datacenter a traffic group runs in.
//!
//! Why pure: these rules decide where work runs and whether it counts as done; they are
//! property-tested here without a database, a ring or a clock. The dispatcher (I/O) feeds them
//! the live members, the routing memory read from `job_route` and the children's statuses.

pub mod routing;
pub mod traffic;

pub use routing::{Strategy, JOB_ROUTE_NONE};
