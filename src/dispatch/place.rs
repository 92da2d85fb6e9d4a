//! Placement: who owns a row, given the ring, the applications' selectors and traffic groups,
//! and the traffic policies. One place answers it for the claim, the recovery of orphans and the
//! adoption of applications, so they can never disagree.
//!
//! Keys: an application command is owned by its application's key (the app id); a job by its
//! own task id. A `hash`, `map` or `map_reduce` job runs on its owner, so the owner must match
//! the job's selector; a fan-out job's owner only coordinates, so any member may. A fan-out
//! child is owned by its `target_node`. Traffic policies narrow a selector to one side of their
//! label (`dc`): applications by their id (sticky), jobs by their application (`sticky`) or by
//! their task id (a percentage of runs).

use std::collections::HashMap;
use std::sync::Arc;

use crate::jobs::traffic::Policy;
use crate::jobs::Strategy;
use crate::membership::{MembershipState, View};
use crate::ring::{hash_key, Ring, Selector};
use crate::store::dispatch::Due;

/// What placement needs to know of an application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppPlace {
    /// Its selector.
    pub selector: Selector,
    /// Its traffic group.
    pub group: Option<String>,
}

/// A snapshot of everything ownership depends on. Cheap to clone (shared parts).
#[derive(Clone)]
pub struct Placement {
    /// This node.
    pub me: String,
    /// The ring.
    pub ring: Arc<Ring>,
    /// The view the ring was built from.
    pub view: Arc<View>,
    /// Applications by id.
    pub apps: Arc<HashMap<i64, AppPlace>>,
    /// Traffic policies by group.
    pub policies: Arc<HashMap<String, Policy>>,
}

impl Placement {
    /// A placement over `ms` with the given applications and policies.
    pub fn new(
        me: &str,
        ms: &MembershipState,
        apps: Arc<HashMap<i64, AppPlace>>,
        policies: Arc<HashMap<String, Policy>>,
    ) -> Self {
        Placement { me: me.to_string(), ring: ms.ring.clone(), view: ms.view.clone(), apps, policies }
    }

    /// True when some live member that takes work (weight > 0) has `label = value`.
    pub fn has_live(&self, label: &str, value: &str) -> bool {
        self.view.members.iter().any(|m| m.weight > 0 && m.labels.get(label).is_some_and(|v| v == value))
    }

    /// True when `node` is in the view.
    pub fn is_member(&self, node: &str) -> bool {
        self.view.members.iter().any(|m| m.node_id == node)
    }

    fn narrowed(&self, base: &Selector, group: Option<&str>, roll_key: &str) -> Selector {
        match group.and_then(|g| self.policies.get(g)) {
            Some(p) => {
                let has_live = |v: &str| self.has_live(&p.label, v);
                let mut s = base.clone();
                s.insert(p.label.clone(), p.side(&has_live, hash_key(roll_key.as_bytes())).to_string());
                s
            }
            None => base.clone(),
        }
    }

    fn app(&self, app_id: i64) -> AppPlace {
        self.apps.get(&app_id).cloned().unwrap_or_default()
    }

    /// The selector an application's owner must match (its own, narrowed by its traffic group).
    pub fn app_selector(&self, app_id: i64) -> Selector {
        let a = self.app(app_id);
        self.narrowed(&a.selector, a.group.as_deref(), &app_id.to_string())
    }

    /// The selector a job's executors must match: its own (`task.selector`) or its
    /// application's, narrowed by the application's traffic group.
    pub fn job_selector(&self, task_id: i64, app_id: Option<i64>, own: Option<&str>) -> Selector {
        let a = app_id.map(|id| self.app(id)).unwrap_or_default();
        let base = own.and_then(|s| serde_json::from_str::<Selector>(s).ok()).unwrap_or(a.selector);
        let sticky = a.group.as_deref().and_then(|g| self.policies.get(g)).is_none_or(|p| p.sticky);
        let roll_key = match (sticky, app_id) {
            (true, Some(app)) => format!("app:{app}"),
            _ => task_id.to_string(),
        };
        self.narrowed(&base, a.group.as_deref(), &roll_key)
    }

    /// The owner of `key` among the members matching `selector` (the plain ring owner when the
    /// selector is empty).
    pub fn owner_of(&self, key: &str, selector: &Selector) -> Option<&str> {
        let m = if selector.is_empty() {
            self.ring.owner(key.as_bytes())
        } else {
            self.ring.owner_matching(key.as_bytes(), selector)
        };
        m.map(|m| m.node_id.as_str())
    }

    /// Does this node own an application?
    pub fn owns_app(&self, app_id: i64) -> bool {
        self.owner_of(&app_id.to_string(), &self.app_selector(app_id)) == Some(self.me.as_str())
    }

    /// Does this node own the row (claim it, or recover it when its owner left)?
    pub fn owns(
        &self,
        id: i64,
        app_id: Option<i64>,
        action: &str,
        routing: Option<&str>,
        selector: Option<&str>,
        target: Option<&str>,
    ) -> bool {
        if let Some(t) = target {
            return t == self.me;
        }
        let owner = match (action, app_id) {
            ("run", _) => {
                // Fan-out coordinators need not match; an unreadable routing is a poison row that
                // its plain owner claims and fails.
                match Strategy::parse(routing) {
                    Ok(s) if !s.fans_out() => self.owner_of(&id.to_string(), &self.job_selector(id, app_id, selector)),
                    _ => self.owner_of(&id.to_string(), &Selector::new()),
                }
            }
            (_, Some(app)) => self.owner_of(&app.to_string(), &self.app_selector(app)),
            (_, None) => self.owner_of(&id.to_string(), &Selector::new()),
        };
        owner == Some(self.me.as_str())
    }

    /// [`Placement::owns`] for a due row.
    pub fn owns_due(&self, d: &Due) -> bool {
        self.owns(d.id, d.app_id, &d.action, d.routing.as_deref(), d.selector.as_deref(), d.target_node.as_deref())
    }

    /// True when the row's owner depends on labels (it is addressed to another node, or it or
    /// its application has a selector or a traffic group): the rows `claim_next` leaves out.
    pub fn depends_on_labels(&self, d: &Due) -> bool {
        let app = d.app_id.and_then(|a| self.apps.get(&a));
        d.target_node.as_deref().is_some_and(|t| t != self.me)
            || d.selector.is_some()
            || app.is_some_and(|a| !a.selector.is_empty() || a.group.is_some())
    }

    /// True when the row is a job owned by the ring owner of its task id alone: no target node,
    /// no selector of its own, and an application (if any) with neither a selector nor a traffic
    /// group — the rows [`crate::store::dispatch::claim_jobs`] claims.
    pub fn placed_by_id(&self, d: &Due) -> bool {
        (d.app_id.is_none() || d.action == "run") && d.target_node.is_none() && !self.depends_on_labels(d)
    }

    /// True when this node is a member that takes work (weight > 0).
    pub fn takes_work(&self) -> bool {
        self.view.members.iter().any(|m| m.node_id == self.me && m.weight > 0)
    }

    /// Members that may run work matching `selector`: live, weight > 0, sorted by id.
    pub fn candidates(&self, selector: &Selector) -> Vec<String> {
        self.view
            .members
            .iter()
            .filter(|m| m.weight > 0 && selector.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
            .map(|m| m.node_id.clone())
            .collect()
    }

    /// The HTTP address of a member.
    pub fn addr(&self, node: &str) -> Option<&str> {
        self.view.members.iter().find(|m| m.node_id == node).map(|m| m.addr.as_str())
    }
}
