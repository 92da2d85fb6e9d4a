//! Reconciliation: what this node owns after a view change or on the reconcile tick. It adopts
//! the applications the ring now gives it (an actor each), releases those it gave away (the
//! actor stops what it runs, then clears the ownership: hand-off, I4 in docs/design.md), reloads
//! the traffic policies and records the automatic switches the view calls for, and lets the
//! maintenance run ([`super::maintenance`]).
//!
//! Must never: adopt an application the ring does not give this node at the current view, or
//! drop an actor without its release (its children would outlive the ownership).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::place::AppPlace;
use super::rounds::STOP_CLAIM_WITHIN;
use super::{parse_selector, wake, Dispatcher};
use crate::domain::Takeover;
use crate::jobs::traffic::Switch;
use crate::membership::MembershipState;
use crate::store::apps::{self, AppOwner};
use crate::store::claim;
use crate::store::StoreError;

impl Dispatcher {
    /// Adopt and release applications as the ring says, apply traffic switches, recover
    /// orphans, prune old rows.
    pub(super) async fn reconcile(&mut self) {
        let ms = self.shared.snapshot();
        let moved = ms.view.epoch != self.seen_epoch;
        self.seen_epoch = ms.view.epoch;
        self.seen_app_generation = ms.app_generation;
        if moved {
            self.place_anew().await;
        }
        self.actors.retain(|_, a| !a.is_finished());
        self.traffic(&ms, true).await;
        self.own_apps(&ms).await;
        self.maintenance.tick(self.apps.clone(), self.policies.clone()).await;
    }

    /// An application's selector or traffic group changed (announced by the database, or
    /// changed through this node's API): what the pump claimed ahead goes back, and the
    /// applications are read again before the next round reads the queue, so no job read from
    /// now on is placed by the old rule (docs/jobs.md#placement-changes).
    pub(super) async fn placement_changed(&mut self) {
        self.place_anew().await;
        let ms = self.shared.snapshot();
        self.traffic(&ms, false).await;
        self.own_apps(&ms).await;
    }

    /// What was read or claimed ahead was placed by an old rule (ring, selector): the pump's
    /// claims go back to pending before the new rule places them, and the next round reads
    /// from the head.
    async fn place_anew(&mut self) {
        if self.window.take().is_some() {
            self.cursor = 0;
        }
        self.windowed_to = 0;
        if let Some(pump) = self.pump.take() {
            pump.stop(self.shared.clone(), STOP_CLAIM_WITHIN).await;
        }
    }

    /// Read every application's selector and traffic group, and adopt and release them as the
    /// ring says.
    async fn own_apps(&mut self, ms: &MembershipState) {
        let me = self.shared.node_id.clone();
        match self.shared.store.run(apps::app_owners).await {
            Ok(rows) => {
                self.apps = Arc::new(
                    rows.iter()
                        .map(|a| {
                            (a.id, AppPlace { selector: parse_selector(a.id, &a.selector), group: a.group.clone() })
                        })
                        .collect(),
                );
                let place = self.placement();
                // A member of weight 0 is being drained: it gives every application away.
                let drained = ms.view.members.iter().any(|m| m.node_id == me && m.weight == 0);
                let why = if drained { Takeover::Drained } else { Takeover::HandOff };
                let mut unplaced = Vec::new();
                // Every release is asked before any is awaited: they stop and are written
                // together (docs/benchmarks.md#scale).
                let mut releases = Vec::new();
                for AppOwner { id, owner, .. } in rows {
                    if place.app_owner(id).is_none() && !place.settling() {
                        unplaced.push(id);
                    }
                    if place.owns_app(id) {
                        self.actor(id);
                    } else if let Some(handle) = self.actors.remove(&id) {
                        releases.push(handle.release(why));
                    } else if owner.as_deref() == Some(me.as_str()) {
                        // Ours from an earlier life (no actor runs it): let the new owner have it.
                        let m = me.clone();
                        if let Err(e) = self.shared.store.run(move |c| apps::release_stale_app(c, id, &m)).await {
                            tracing::warn!(app.id = id, error = %e, "could not release a stale application");
                        }
                    }
                }
                self.shared.metrics.owned_applications.set(self.actors.len() as i64);
                futures_util::future::join_all(releases).await;
                if !unplaced.is_empty() && self.unplaced_logged != (ms.view.epoch, unplaced.len()) {
                    self.unplaced_logged = (ms.view.epoch, unplaced.len());
                    tracing::warn!(
                        ring.epoch = ms.view.epoch, apps = ?unplaced,
                        "no member matches these applications' selectors: their commands wait until one joins"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list applications"),
        }
        self.shared.metrics.owned_applications.set(self.actors.len() as i64);
    }

    /// Load the selectors and traffic groups of applications seen for the first time.
    pub(super) async fn learn_apps(&mut self, due: &[claim::Due]) -> Result<(), StoreError> {
        let mut unknown: Vec<i64> =
            due.iter().filter_map(|d| d.app_id).filter(|a| !self.apps.contains_key(a)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        unknown.dedup();
        let ids = unknown.clone();
        let found = self.shared.store.run(move |c| apps::app_selectors(c, &ids)).await?;
        let apps = Arc::make_mut(&mut self.apps);
        for a in unknown {
            // Missing applications constrain nothing (their commands fail on their owner).
            apps.insert(a, AppPlace::default());
        }
        for AppOwner { id, selector, group, .. } in found {
            apps.insert(id, AppPlace { selector: parse_selector(id, &selector), group });
        }
        Ok(())
    }

    /// Reload the traffic policies and, with `decide`, record the automatic switches the view
    /// calls for (each is written once, by whichever node gets there first).
    pub(super) async fn traffic(&mut self, ms: &MembershipState, decide: bool) {
        // Read again when a change was announced, at every reconciliation while nothing
        // announces changes, and every `CONFIG_BACKSTOP` otherwise; switches are decided at every
        // reconciliation (they follow the membership). The generation is taken before the read,
        // so a change announced during it is read next time.
        let config = *self.shared.config.borrow();
        let fresh = self.traffic_rows.as_ref().is_some_and(|(generation, at, _)| {
            *generation == config.generation && at.elapsed() < config.period(Duration::ZERO, wake::CONFIG_BACKSTOP)
        });
        if !fresh {
            match self.shared.store.run(crate::store::jobs::traffic_policies).await {
                Ok(rows) => self.traffic_rows = Some((config.generation, Instant::now(), rows)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read traffic policies; keeping the last ones");
                    return;
                }
            }
        }
        let rows = self.traffic_rows.as_ref().map(|(_, _, rows)| rows.as_slice()).unwrap_or_default();
        let mut policies = HashMap::new();
        for row in rows {
            let mut p = row.policy();
            let live = |label: &str, v: &str| {
                ms.view.members.iter().filter(|m| m.weight > 0 && m.labels.get(label).is_some_and(|x| x == v)).count()
            };
            let has_live = |v: &str| live(&p.label, v) > 0;
            if let Some(switch) = p.switch_due(&has_live).filter(|_| decide) {
                let backup = p.backup.clone().unwrap_or_default();
                let (kind, failed_over, reason) = match switch {
                    Switch::FailOver => (
                        "traffic.failover",
                        true,
                        format!(
                            "no live node has {}={}; moving group {} to {}={} ({} live)",
                            p.label,
                            p.preferred,
                            p.group,
                            p.label,
                            backup,
                            live(&p.label, &backup)
                        ),
                    ),
                    Switch::FailBack => (
                        "traffic.failback",
                        false,
                        format!(
                            "{}={} has {} live node(s) again; moving group {} back",
                            p.label,
                            p.preferred,
                            live(&p.label, &p.preferred),
                            p.group
                        ),
                    ),
                };
                let mut ev = self.shared.new_event(
                    kind,
                    None,
                    None,
                    reason.clone(),
                    serde_json::json!({
                        "group": p.group, "label": p.label, "preferred": p.preferred, "backup": p.backup,
                        "ring_epoch": ms.view.epoch,
                    }),
                );
                ev.actor = Some("system".into());
                let group = p.group.clone();
                match self
                    .shared
                    .store
                    .run(move |c| crate::store::jobs::record_switch(c, &group, failed_over, &reason, &ev))
                    .await
                {
                    Ok(true) => {
                        tracing::warn!(traffic.group = %p.group, switch = kind, "traffic switched automatically")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(traffic.group = %p.group, error = %e, "could not record a traffic switch"),
                }
                p.failed_over = failed_over;
            }
            policies.insert(p.group.clone(), p);
        }
        self.policies = Arc::new(policies);
    }
}
