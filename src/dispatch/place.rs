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

use crate::domain::Action;
use crate::jobs::traffic::Policy;
use crate::jobs::Strategy;
use crate::membership::{MembershipState, View};
use crate::ring::{hash_key, Ring, Selector};
use crate::store::claim::Due;

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
    /// The ring: jobs are placed by it.
    pub ring: Arc<Ring>,
    /// The ring applications (and their commands) are placed by: the view's once it has
    /// settled ([`crate::membership::settle`]).
    pub app_ring: Arc<Ring>,
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
        Placement {
            me: me.to_string(),
            ring: ms.ring.clone(),
            app_ring: ms.app_ring.clone(),
            view: ms.view.clone(),
            apps,
            policies,
        }
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

    /// The owner of application `app_id` (on the applications' ring), if any member matches.
    pub fn app_owner(&self, app_id: i64) -> Option<&str> {
        let (key, selector) = (app_id.to_string(), self.app_selector(app_id));
        let m = if selector.is_empty() {
            self.app_ring.owner(key.as_bytes())
        } else {
            self.app_ring.owner_matching(key.as_bytes(), &selector)
        };
        m.map(|m| m.node_id.as_str())
    }

    /// True while applications are not yet placed by the view's ring (it has not settled).
    pub fn settling(&self) -> bool {
        !Arc::ptr_eq(&self.ring, &self.app_ring)
    }

    /// Does this node own an application?
    pub fn owns_app(&self, app_id: i64) -> bool {
        self.app_owner(app_id) == Some(self.me.as_str())
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
                // A job that runs where its owner is goes to the first matching node; when no
                // live node matches, to its plain owner, which fails it by the rule of the
                // fan-out strategies (retried with backoff, then failed: `jobs::no_candidate`)
                // instead of leaving it pending, unseen, for ever.
                match Strategy::parse(routing) {
                    Ok(s) if !s.fans_out() => self
                        .owner_of(&id.to_string(), &self.job_selector(id, app_id, selector))
                        .or_else(|| self.owner_of(&id.to_string(), &Selector::new())),
                    _ => self.owner_of(&id.to_string(), &Selector::new()),
                }
            }
            (_, Some(app)) => self.app_owner(app),
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
    /// group — the rows [`crate::store::claim::claim_jobs`] claims.
    pub fn placed_by_id(&self, d: &Due) -> bool {
        (d.app_id.is_none() || Action::parse(&d.action) == Some(Action::Run))
            && d.target_node.is_none()
            && !self.depends_on_labels(d)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::strategy::Strategy;

    use super::*;
    use crate::jobs::Strategy as Routing;
    use crate::membership::Member;

    /// Few points per member: no rule here depends on balance, and a ring per case stays cheap.
    const VNODES: u32 = 32;

    fn selector(pairs: &[(&str, &str)]) -> Selector {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn member(id: &str, weight: u32, labels: &[(&str, &str)]) -> Member {
        Member {
            node_id: id.into(),
            addr: format!("{id}.test:7000"),
            labels: selector(labels),
            weight,
            started_at: String::new(),
        }
    }

    fn row(id: i64, app_id: Option<i64>, action: &str) -> Due {
        Due { id, app_id, action: action.into(), target_node: None, routing: None, selector: None }
    }

    fn app(selector: Selector, group: Option<&str>) -> AppPlace {
        AppPlace { selector, group: group.map(String::from) }
    }

    /// Group `g` on label `dc`: preferred `a`, backup `b`, `percent` of the keys to `a`.
    fn policy(percent: i32, sticky: bool) -> Policy {
        Policy {
            group: "g".into(),
            label: "dc".into(),
            preferred: "a".into(),
            backup: Some("b".into()),
            percent,
            sticky,
            auto_failover: true,
            auto_failback: true,
            failed_over: false,
        }
    }

    /// One view, and the placement every member of it computes.
    struct Cluster {
        places: Vec<Placement>,
    }

    impl Cluster {
        fn new(mut members: Vec<Member>, apps: HashMap<i64, AppPlace>, policies: Vec<Policy>) -> Cluster {
            // A view's members are sorted by id.
            members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            let ids: Vec<String> = members.iter().map(|m| m.node_id.clone()).collect();
            let mut ms = MembershipState::joining();
            ms.adopt_view(View { epoch: 1, members }, VNODES);
            let apps = Arc::new(apps);
            let policies: Arc<HashMap<String, Policy>> =
                Arc::new(policies.into_iter().map(|p| (p.group.clone(), p)).collect());
            let places = ids.iter().map(|me| Placement::new(me, &ms, apps.clone(), policies.clone())).collect();
            Cluster { places }
        }

        /// n1 and n2 in `dc=a` (n2 with a GPU), n3 and n4 in `dc=b`, n5 in `dc=c` drained
        /// (weight 0).
        fn five(apps: HashMap<i64, AppPlace>, policies: Vec<Policy>) -> Cluster {
            Cluster::new(
                vec![
                    member("n1", 1, &[("dc", "a")]),
                    member("n2", 1, &[("dc", "a"), ("gpu", "yes")]),
                    member("n3", 1, &[("dc", "b")]),
                    member("n4", 1, &[("dc", "b")]),
                    member("n5", 0, &[("dc", "c")]),
                ],
                apps,
                policies,
            )
        }

        /// What does not depend on who asks (any member's placement).
        fn any(&self) -> &Placement {
            &self.places[0]
        }

        /// The members that each find they own the row.
        fn owners(&self, d: &Due) -> Vec<String> {
            self.places.iter().filter(|p| p.owns_due(d)).map(|p| p.me.clone()).collect()
        }

        /// The members that each find they own the application.
        fn app_owners(&self, app: i64) -> Vec<String> {
            self.places.iter().filter(|p| p.owns_app(app)).map(|p| p.me.clone()).collect()
        }

        /// The plain ring owner of a key, as a one-element list (empty when nobody takes work).
        fn ring_owner(&self, key: i64) -> Vec<String> {
            self.any().ring.owner(key.to_string().as_bytes()).map(|m| m.node_id.clone()).into_iter().collect()
        }

        fn labels_of(&self, node: &str) -> (u32, BTreeMap<String, String>) {
            let m = self.any().view.members.iter().find(|m| m.node_id == node);
            m.map(|m| (m.weight, m.labels.clone())).unwrap_or_default()
        }

        /// True when `node` takes work and has every label of `selector`.
        fn matches(&self, node: &str, selector: &Selector) -> bool {
            let (weight, labels) = self.labels_of(node);
            weight > 0 && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        }
    }

    fn one(node: &str) -> Vec<String> {
        vec![node.to_string()]
    }

    #[test]
    fn a_row_addressed_to_a_node_is_owned_by_that_node_alone() {
        // Application 1 wants dc=b; the rows are addressed to n1 in dc=a all the same.
        let c = Cluster::five(HashMap::from([(1, app(selector(&[("dc", "b")]), None))]), vec![]);
        for id in 1..50 {
            let d = Due { target_node: Some("n1".into()), ..row(id, Some(1), "run") };
            assert_eq!(c.owners(&d), one("n1"), "row {id}");
            // Even to a drained member: the address decides, not the ring.
            let d = Due { target_node: Some("n5".into()), ..row(id, None, "run") };
            assert_eq!(c.owners(&d), one("n5"), "row {id}");
        }
        // Addressed to a node that left: nobody takes it (it waits to be reassigned).
        let gone = Due { target_node: Some("n9".into()), ..row(1, None, "run") };
        assert_eq!(c.owners(&gone), Vec::<String>::new());
    }

    #[test]
    fn every_command_of_an_application_goes_to_the_owner_of_its_id() {
        let c = Cluster::five(HashMap::new(), vec![]);
        for a in 1..40 {
            let owner = c.app_owners(a);
            assert_eq!(owner, c.ring_owner(a), "application {a} is keyed by its id");
            for (n, action) in ["start", "stop", "status", "restart"].into_iter().enumerate() {
                let id = a * 1_000 + n as i64;
                assert_eq!(c.owners(&row(id, Some(a), action)), owner, "{action} (task {id}) of application {a}");
            }
        }
    }

    #[test]
    fn an_application_is_owned_by_a_member_matching_its_selector() {
        let mut apps: HashMap<i64, AppPlace> = (1..30).map(|a| (a, app(selector(&[("dc", "b")]), None))).collect();
        apps.insert(30, app(selector(&[("gpu", "yes")]), None));
        apps.insert(31, app(selector(&[("dc", "c")]), None));
        let c = Cluster::five(apps, vec![]);
        for a in 1..30 {
            let owner = c.app_owners(a);
            assert!(owner == one("n3") || owner == one("n4"), "application {a} owned by {owner:?}");
            assert_eq!(c.owners(&row(a * 10, Some(a), "start")), owner);
        }
        assert_eq!(c.app_owners(30), one("n2"));
        // dc=c has only a drained member: nobody may own the application.
        assert_eq!(c.app_owners(31), Vec::<String>::new());
        assert_eq!(c.owners(&row(310, Some(31), "start")), Vec::<String>::new());
    }

    #[test]
    fn a_hash_or_map_job_runs_on_a_member_matching_its_selector_and_a_fan_out_coordinator_anywhere() {
        let c = Cluster::five(HashMap::new(), vec![]);
        let gpu = Some(r#"{"gpu":"yes"}"#.to_string());
        let mut coordinators_elsewhere = 0;
        for id in 1..60 {
            for routing in [None, Some("hash"), Some("map"), Some("map_reduce")] {
                let d = Due { routing: routing.map(String::from), selector: gpu.clone(), ..row(id, None, "run") };
                assert_eq!(c.owners(&d), one("n2"), "job {id}, routing {routing:?}");
            }
            for routing in ["broadcast", "sharding", "round_robin", "random"] {
                let d = Due { routing: Some(routing.into()), selector: gpu.clone(), ..row(id, None, "run") };
                assert_eq!(c.owners(&d), c.ring_owner(id), "job {id}, routing {routing}");
            }
            coordinators_elsewhere += usize::from(c.ring_owner(id) != one("n2"));
        }
        assert!(coordinators_elsewhere > 0, "every id's ring owner is n2: the case tells nothing");
    }

    #[test]
    fn a_job_with_an_unreadable_routing_goes_to_the_plain_owner_of_its_id() {
        // Its selector matches nobody, yet its owner claims it (and fails it as a poison row).
        let c = Cluster::five(HashMap::new(), vec![]);
        for id in 1..40 {
            let d = Due {
                routing: Some("no-such-routing".into()),
                selector: Some(r#"{"dc":"nowhere"}"#.into()),
                ..row(id, None, "run")
            };
            assert_eq!(c.owners(&d), c.ring_owner(id), "job {id}");
        }
    }

    #[test]
    fn a_job_selector_is_its_own_else_its_application_s() {
        let c = Cluster::five(HashMap::from([(1, app(selector(&[("dc", "b")]), None))]), vec![]);
        let p = c.any();
        assert_eq!(p.job_selector(5, Some(1), None), selector(&[("dc", "b")]));
        // Its own replaces the application's; it is not added to it.
        assert_eq!(p.job_selector(5, Some(1), Some(r#"{"gpu":"yes"}"#)), selector(&[("gpu", "yes")]));
        // An unreadable one counts as none.
        assert_eq!(p.job_selector(5, Some(1), Some("dc=a")), selector(&[("dc", "b")]));
        assert_eq!(p.job_selector(5, None, None), Selector::new());
        assert_eq!(p.job_selector(5, Some(2), None), Selector::new(), "an unknown application constrains nothing");
        for id in 1..30 {
            let owner = c.owners(&row(id, Some(1), "run"));
            assert!(owner == one("n3") || owner == one("n4"), "job {id} of application 1 owned by {owner:?}");
        }
    }

    #[test]
    fn a_traffic_policy_puts_an_application_on_its_side_and_fails_over_when_the_side_is_gone() {
        let apps: HashMap<i64, AppPlace> = (1..25).map(|a| (a, app(Selector::new(), Some("g")))).collect();
        let c = Cluster::five(apps.clone(), vec![policy(100, true)]);
        for a in 1..25 {
            assert_eq!(c.any().app_selector(a), selector(&[("dc", "a")]));
            let owner = c.app_owners(a);
            assert!(owner == one("n1") || owner == one("n2"), "application {a} owned by {owner:?}");
        }
        // dc=a drained (weight 0): no live member there, so the group runs in dc=b.
        let drained = Cluster::new(
            vec![
                member("n1", 0, &[("dc", "a")]),
                member("n2", 0, &[("dc", "a")]),
                member("n3", 1, &[("dc", "b")]),
                member("n4", 1, &[("dc", "b")]),
            ],
            apps,
            vec![policy(100, true)],
        );
        for a in 1..25 {
            assert_eq!(drained.any().app_selector(a), selector(&[("dc", "b")]));
            let owner = drained.app_owners(a);
            assert!(owner == one("n3") || owner == one("n4"), "application {a} owned by {owner:?}");
        }
        // A group without a policy narrows nothing.
        let c = Cluster::five(HashMap::from([(1, app(selector(&[("gpu", "yes")]), Some("h")))]), vec![]);
        assert_eq!(c.any().app_selector(1), selector(&[("gpu", "yes")]));
    }

    #[test]
    fn sticky_jobs_of_an_application_keep_one_side_and_others_split_by_task_id() {
        let apps: HashMap<i64, AppPlace> = (1..10).map(|a| (a, app(Selector::new(), Some("g")))).collect();
        let side = |c: &Cluster, id: i64, a: i64| c.any().job_selector(id, Some(a), None).get("dc").cloned();
        let sticky = Cluster::five(apps.clone(), vec![policy(50, true)]);
        let mut seen = std::collections::BTreeSet::new();
        for a in 1..10 {
            let first = side(&sticky, 1, a);
            seen.insert(first.clone());
            for id in 2..100 {
                assert_eq!(side(&sticky, id, a), first, "job {id} of application {a}");
            }
        }
        assert_eq!(seen.len(), 2, "half the applications on each side: {seen:?}");
        let split = Cluster::five(apps, vec![policy(50, false)]);
        let sides: std::collections::BTreeSet<_> = (1..100).map(|id| side(&split, id, 1)).collect();
        assert_eq!(sides, [Some("a".to_string()), Some("b".to_string())].into(), "jobs of one application split");
    }

    #[test]
    fn liveness_counts_only_members_that_take_work() {
        let c = Cluster::five(HashMap::new(), vec![]);
        let p = c.any();
        assert!(p.has_live("dc", "a"));
        assert!(!p.has_live("dc", "c"), "n5 is drained");
        assert!(!p.has_live("zone", "a"));
        let takes = |me: &str| c.places.iter().find(|p| p.me == me).is_some_and(Placement::takes_work);
        assert!(takes("n1"));
        assert!(!takes("n5"));
        let stranger = Placement { me: "n9".into(), ..p.clone() };
        assert!(!stranger.takes_work());
        assert!(p.is_member("n5") && !p.is_member("n9"));
        assert_eq!(p.addr("n3"), Some("n3.test:7000"));
        assert_eq!(p.addr("n9"), None);
    }

    #[test]
    fn candidates_are_the_matching_members_that_take_work_in_id_order() {
        let c = Cluster::five(HashMap::new(), vec![]);
        let p = c.any();
        assert_eq!(p.candidates(&Selector::new()), ["n1", "n2", "n3", "n4"]);
        assert_eq!(p.candidates(&selector(&[("dc", "b")])), ["n3", "n4"]);
        assert_eq!(p.candidates(&selector(&[("dc", "a"), ("gpu", "yes")])), ["n2"]);
        assert_eq!(p.candidates(&selector(&[("dc", "c")])), Vec::<String>::new());
    }

    #[test]
    fn rows_whose_owner_depends_on_labels_are_told_apart() {
        let apps = HashMap::from([
            (1, AppPlace::default()),
            (2, app(selector(&[("dc", "b")]), None)),
            (3, app(Selector::new(), Some("g"))),
        ]);
        let c = Cluster::five(apps, vec![]);
        let p = c.any();
        assert_eq!(p.me, "n1");
        let own = |sel: &str| Some(sel.to_string());
        let to = |node: &str| Some(node.to_string());
        // (row, depends on labels, placed by its id alone)
        let cases = [
            (row(1, None, "run"), false, true),
            (row(2, Some(1), "run"), false, true),
            (row(3, Some(9), "run"), false, true),
            (row(4, Some(1), "start"), false, false),
            (row(5, Some(2), "run"), true, false),
            (row(6, Some(3), "run"), true, false),
            (row(7, Some(2), "stop"), true, false),
            (Due { selector: own(r#"{"gpu":"yes"}"#), ..row(8, None, "run") }, true, false),
            (Due { selector: own("{}"), ..row(9, None, "run") }, true, false),
            (Due { target_node: to("n2"), ..row(10, None, "run") }, true, false),
            (Due { target_node: to("n1"), ..row(11, None, "run") }, false, false),
        ];
        for (d, depends, by_id) in cases {
            assert_eq!((p.depends_on_labels(&d), p.placed_by_id(&d)), (depends, by_id), "{d:?}");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Properties, over random views, applications, policies and rows.
    // ---------------------------------------------------------------------------------------

    fn any_selector() -> impl Strategy<Value = Selector> {
        // dc=c has no member: some selectors match nobody.
        (prop::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]), any::<bool>()).prop_map(|(dc, gpu)| {
            let mut s = Selector::new();
            if let Some(dc) = dc {
                s.insert("dc".into(), dc.into());
            }
            if gpu {
                s.insert("gpu".into(), "yes".into());
            }
            s
        })
    }

    fn any_members() -> impl Strategy<Value = Vec<Member>> {
        let one = (0u32..3, prop::option::of(prop_oneof![Just("a"), Just("b")]), any::<bool>());
        prop::collection::btree_map(0u8..6, one, 1..6).prop_map(|nodes| {
            nodes
                .into_iter()
                .map(|(n, (weight, dc, gpu))| {
                    let mut labels = Vec::new();
                    labels.extend(dc.map(|dc| ("dc", dc)));
                    if gpu {
                        labels.push(("gpu", "yes"));
                    }
                    member(&format!("n{n}"), weight, &labels)
                })
                .collect()
        })
    }

    /// Applications 1..5 (a row may name 5, which placement does not know); group `g` may have
    /// a policy, `h` never has.
    fn any_apps() -> impl Strategy<Value = HashMap<i64, AppPlace>> {
        let group = prop::option::of(prop_oneof![Just("g"), Just("h")]);
        prop::collection::hash_map(1i64..5, (any_selector(), group), 0..5)
            .prop_map(|apps| apps.into_iter().map(|(id, (s, g))| (id, app(s, g))).collect())
    }

    fn any_policies() -> impl Strategy<Value = Vec<Policy>> {
        let backup = prop::option::of(prop_oneof![Just("b"), Just("c")]);
        let p = (backup, 0i32..=100, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(backup, percent, sticky, auto_failover, auto_failback, failed_over)| Policy {
                backup: backup.map(String::from),
                auto_failover,
                auto_failback,
                failed_over,
                ..policy(percent, sticky)
            },
        );
        prop::collection::vec(p, 0..2)
    }

    fn any_row() -> impl Strategy<Value = Due> {
        let action = prop_oneof![Just("run"), Just("start"), Just("stop"), Just("status")];
        let routing = prop_oneof![
            Just("hash"),
            Just("map"),
            Just("map_reduce"),
            Just("broadcast"),
            Just("sharding"),
            Just("random"),
            Just("bogus")
        ];
        let own = prop_oneof![
            any_selector().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
            Just("not json".to_string())
        ];
        (
            1i64..100_000,
            prop::option::of(1i64..6),
            action,
            prop::option::weighted(0.2, 0u8..7),
            prop::option::of(routing),
            prop::option::of(own),
        )
            .prop_map(|(id, app_id, action, target, routing, selector)| Due {
                target_node: target.map(|n| format!("n{n}")),
                routing: routing.map(String::from),
                selector,
                ..row(id, app_id, action)
            })
    }

    proptest! {
        /// Two members never both find they own a row, whatever the row.
        #[test]
        fn no_row_has_two_owners(
            members in any_members(), apps in any_apps(), policies in any_policies(), d in any_row(),
        ) {
            let c = Cluster::new(members, apps, policies);
            let owners = c.owners(&d);
            prop_assert!(owners.len() <= 1, "{d:?} owned by {owners:?}");
        }

        /// An application is owned by exactly one member when some member that takes work
        /// matches its (narrowed) selector, by none otherwise, never by one whose labels do not
        /// match; and each of its commands, whatever its task id, by that same member.
        #[test]
        fn an_application_has_one_matching_owner_and_its_commands_follow_it(
            members in any_members(), apps in any_apps(), policies in any_policies(),
            a in 1i64..6, ids in prop::collection::vec(1i64..100_000, 1..5),
        ) {
            let c = Cluster::new(members, apps, policies);
            let wanted = c.any().app_selector(a);
            let owners = c.app_owners(a);
            let matching = c.any().view.members.iter().filter(|m| c.matches(&m.node_id, &wanted)).count();
            prop_assert_eq!(owners.len(), usize::from(matching > 0), "{:?} for {:?}", owners, wanted);
            for o in &owners {
                prop_assert!(c.matches(o, &wanted), "{} does not match {:?}", o, wanted);
            }
            for (id, action) in ids.into_iter().zip(["start", "stop", "status", "restart"].into_iter().cycle()) {
                prop_assert_eq!(c.owners(&row(id, Some(a), action)), owners.clone());
            }
        }

        /// A job that runs on its owner (`hash`, `map`, `map_reduce`) is owned by exactly one
        /// member matching its selector when there is one, otherwise by the plain ring owner of
        /// its task id (which fails it by the fan-out rule, `jobs::no_candidate`); a fan-out
        /// coordinator or an unreadable routing by the plain ring owner of the task id.
        #[test]
        fn a_job_runs_only_where_its_selector_matches_and_a_coordinator_anywhere(
            members in any_members(), apps in any_apps(), policies in any_policies(), d in any_row(),
        ) {
            let d = Due { action: "run".into(), target_node: None, ..d };
            let c = Cluster::new(members, apps, policies);
            let owners = c.owners(&d);
            match Routing::parse(d.routing.as_deref()) {
                Ok(s) if !s.fans_out() => {
                    let wanted = c.any().job_selector(d.id, d.app_id, d.selector.as_deref());
                    let matching = c.any().view.members.iter().filter(|m| c.matches(&m.node_id, &wanted)).count();
                    if matching == 0 {
                        prop_assert_eq!(owners, c.ring_owner(d.id), "none matches {:?}", wanted);
                    } else {
                        prop_assert_eq!(owners.len(), 1, "{:?} for {:?}", owners, wanted);
                        for o in &owners {
                            prop_assert!(c.matches(o, &wanted), "{} does not match {:?}", o, wanted);
                        }
                    }
                }
                _ => prop_assert_eq!(owners, c.ring_owner(d.id)),
            }
        }

        /// The rows the job window claims by id alone are owned by the ring owner of their task
        /// id: the window and the placement agree.
        #[test]
        fn a_row_placed_by_id_is_owned_by_the_ring_owner_of_its_id(
            members in any_members(), apps in any_apps(), policies in any_policies(), d in any_row(),
        ) {
            let c = Cluster::new(members, apps, policies);
            prop_assume!(c.any().placed_by_id(&d));
            prop_assert_eq!(c.owners(&d), c.ring_owner(d.id));
        }

        /// The only member of a ring, taking work, owns every row whose placement does not depend
        /// on labels: the rows its one-statement claim takes without asking placement.
        #[test]
        fn a_lone_member_owns_every_row_that_does_not_depend_on_labels(
            weight in 1u32..3, labels in any_selector(), apps in any_apps(), policies in any_policies(),
            d in any_row(),
        ) {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let c = Cluster::new(vec![member("n0", weight, &labels)], apps, policies);
            prop_assume!(!c.any().depends_on_labels(&d));
            prop_assert_eq!(c.owners(&d), one("n0"));
        }

        /// Under a sticky policy every job of an application gets the same side, so they run
        /// in one place.
        #[test]
        fn sticky_jobs_of_an_application_share_a_side(
            percent in 0i32..=100, a in 1i64..1_000, t1 in 1i64..100_000, t2 in 1i64..100_000,
        ) {
            let c = Cluster::five(HashMap::from([(a, app(Selector::new(), Some("g")))]), vec![policy(percent, true)]);
            prop_assert_eq!(c.any().job_selector(t1, Some(a), None), c.any().job_selector(t2, Some(a), None));
        }
    }
}
