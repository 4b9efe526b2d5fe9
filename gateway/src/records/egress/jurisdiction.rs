//! The jurisdiction check: may this release or record kind go to this destination, in the
//! region where that destination is?
//!
//! Owns the [`EgressPermissions`] trait the policy engine implements, a table implementation
//! ([`PermissionTable`], also built from a compiled policy), and [`Permissions`], the handle
//! holding the current answer that a policy reload swaps. Egress asks it twice per batch: at
//! enqueue and again just before sending, so a reload that withdraws a permission stops what is
//! already queued. It fails closed: an unknown destination, a region the policy does not name
//! for it, or an output it does not list is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use super::item::{OutputKind, OutputName};

/// The answer to "may this go there?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The policy allows it.
    Permit,
    /// The policy does not; the reason goes to the audit log.
    Deny(DenyReason),
}

/// Why a batch may not leave.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// The policy has no such destination.
    UnknownDestination,
    /// The policy puts the destination in another region than the sink is configured in.
    RegionNotPermitted {
        /// Region(s) the policy permits for the destination.
        permitted: String,
        /// Region of the configured sink.
        actual: String,
    },
    /// The destination may not receive this release or record kind.
    NotListed(OutputName),
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownDestination => write!(f, "the policy has no such destination"),
            Self::RegionNotPermitted { permitted, actual } => write!(
                f,
                "the policy permits region {permitted} for this destination, not {actual}"
            ),
            Self::NotListed(output) => {
                write!(
                    f,
                    "the policy does not permit {output} for this destination"
                )
            }
        }
    }
}

/// What the policy engine answers for egress. Implementations must fail closed.
pub trait EgressPermissions: Send + Sync {
    /// May `output` go to `destination`, whose sink is in `region`?
    fn permits(&self, destination: &str, region: &str, output: &OutputName) -> Verdict;

    /// ε one window of `release` spends, for the audit log when the released items do not
    /// say (unknown: `None`, audited as 0).
    fn release_epsilon(&self, release: &str) -> Option<f64> {
        let _ = release;
        None
    }
}

/// Checks every output of a batch; the first refusal wins.
pub fn check_batch<'a>(
    permissions: &dyn EgressPermissions,
    destination: &str,
    region: &str,
    outputs: impl IntoIterator<Item = &'a OutputName>,
) -> Verdict {
    for output in outputs {
        if let Verdict::Deny(reason) = permissions.permits(destination, region, output) {
            return Verdict::Deny(reason);
        }
    }
    Verdict::Permit
}

#[derive(Debug, Clone, Default)]
struct DestinationRule {
    region: String,
    releases: BTreeSet<String>,
    kinds: BTreeSet<String>,
}

/// A fixed table of which destination (in which region) may receive which releases and kinds.
#[derive(Debug, Clone, Default)]
pub struct PermissionTable {
    destinations: BTreeMap<String, DestinationRule>,
    release_epsilon: BTreeMap<String, f64>,
}

impl PermissionTable {
    /// An empty table: everything is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Permits `releases` and record `kinds` to `destination` when its sink is in `region`.
    pub fn allow(
        mut self,
        destination: &str,
        region: &str,
        releases: &[&str],
        kinds: &[&str],
    ) -> Self {
        self.destinations.insert(
            destination.to_string(),
            DestinationRule {
                region: region.to_string(),
                releases: releases.iter().map(|s| s.to_string()).collect(),
                kinds: kinds.iter().map(|s| s.to_string()).collect(),
            },
        );
        self
    }

    /// Records the ε one window of `release` spends.
    pub fn with_release_epsilon(mut self, release: &str, epsilon: f64) -> Self {
        self.release_epsilon.insert(release.to_string(), epsilon);
        self
    }

    /// The destinations section of a compiled policy, and each release's ε.
    pub fn from_policy(policy: &mecgw_policy::model::Policy) -> Self {
        let destinations = policy
            .destinations
            .iter()
            .map(|(name, d)| {
                (
                    name.clone(),
                    DestinationRule {
                        region: d.region.clone(),
                        releases: d.releases.iter().cloned().collect(),
                        kinds: d.kinds.iter().cloned().collect(),
                    },
                )
            })
            .collect();
        let release_epsilon = policy
            .releases
            .iter()
            .map(|(name, r)| (name.clone(), r.epsilon.as_f64()))
            .collect();
        Self {
            destinations,
            release_epsilon,
        }
    }
}

impl EgressPermissions for PermissionTable {
    fn permits(&self, destination: &str, region: &str, output: &OutputName) -> Verdict {
        let Some(rule) = self.destinations.get(destination) else {
            return Verdict::Deny(DenyReason::UnknownDestination);
        };
        if rule.region != region {
            return Verdict::Deny(DenyReason::RegionNotPermitted {
                permitted: rule.region.clone(),
                actual: region.to_string(),
            });
        }
        let listed = match output.kind {
            OutputKind::Release => rule.releases.contains(&output.name),
            OutputKind::Record => rule.kinds.contains(&output.name),
        };
        if listed {
            Verdict::Permit
        } else {
            Verdict::Deny(DenyReason::NotListed(output.clone()))
        }
    }

    fn release_epsilon(&self, release: &str) -> Option<f64> {
        self.release_epsilon.get(release).copied()
    }
}

/// The permissions in force. A policy reload calls [`Permissions::replace`]; every check after
/// that, including the send-time check of batches already queued, uses the new answer.
pub struct Permissions {
    current: RwLock<Arc<dyn EgressPermissions>>,
}

impl Permissions {
    /// Starts with `initial`.
    pub fn new(initial: Arc<dyn EgressPermissions>) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    /// Swaps in new permissions (a policy reload).
    pub fn replace(&self, next: Arc<dyn EgressPermissions>) {
        // A poisoned lock only means a reader panicked while cloning an Arc; the value is intact.
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = next;
    }

    /// The permissions in force now.
    pub fn current(&self) -> Arc<dyn EgressPermissions> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn release(name: &str) -> OutputName {
        OutputName {
            kind: OutputKind::Release,
            name: name.into(),
        }
    }

    fn kind(name: &str) -> OutputName {
        OutputName {
            kind: OutputKind::Record,
            name: name.into(),
        }
    }

    #[test]
    fn table_fails_closed() {
        let t = PermissionTable::new().allow("eu", "EU-DE", &["cells"], &["flow"]);
        assert_eq!(t.permits("eu", "EU-DE", &release("cells")), Verdict::Permit);
        assert_eq!(t.permits("eu", "EU-DE", &kind("flow")), Verdict::Permit);
        // A release name is not a kind name, and vice versa.
        assert!(matches!(
            t.permits("eu", "EU-DE", &kind("cells")),
            Verdict::Deny(DenyReason::NotListed(_))
        ));
        assert!(matches!(
            t.permits("eu", "US-VA", &release("cells")),
            Verdict::Deny(DenyReason::RegionNotPermitted { .. })
        ));
        assert_eq!(
            t.permits("us", "EU-DE", &release("cells")),
            Verdict::Deny(DenyReason::UnknownDestination)
        );
    }

    #[test]
    fn batch_check_refuses_if_any_output_is_refused() {
        let t = PermissionTable::new().allow("eu", "EU-DE", &["cells"], &[]);
        let outputs = [release("cells"), kind("flow")];
        assert!(matches!(
            check_batch(&t, "eu", "EU-DE", &outputs),
            Verdict::Deny(DenyReason::NotListed(o)) if o == kind("flow")
        ));
        assert_eq!(
            check_batch(&t, "eu", "EU-DE", &outputs[..1]),
            Verdict::Permit
        );
    }

    #[test]
    fn table_from_the_example_policy_follows_its_destinations() {
        let src = include_str!("../../../../examples/policies/flow-records.yaml");
        let policy = mecgw_policy::compile::compile(src).expect("the example policy compiles");
        let t = PermissionTable::from_policy(&policy);
        assert_eq!(
            t.permits("analytics", "EU-DE", &kind("flow")),
            Verdict::Permit
        );
        assert_eq!(
            t.permits("national_statistics", "EU-DE", &release("traffic_per_cell")),
            Verdict::Permit
        );
        // Listed for the other destination only, or in another region: refused.
        assert!(matches!(
            t.permits("analytics", "EU-DE", &release("traffic_per_cell")),
            Verdict::Deny(DenyReason::NotListed(_))
        ));
        assert!(matches!(
            t.permits("analytics", "US-VA", &kind("flow")),
            Verdict::Deny(DenyReason::RegionNotPermitted { .. })
        ));
        let eps = policy.releases["traffic_per_cell"].epsilon.as_f64();
        assert!(eps > 0.0);
        assert_eq!(t.release_epsilon("traffic_per_cell"), Some(eps));
        assert_eq!(t.release_epsilon("nope"), None);
    }

    #[test]
    fn replace_changes_the_answer() {
        let p = Permissions::new(Arc::new(PermissionTable::new().allow(
            "eu",
            "EU",
            &["r"],
            &[],
        )));
        assert_eq!(
            p.current().permits("eu", "EU", &release("r")),
            Verdict::Permit
        );
        p.replace(Arc::new(PermissionTable::new()));
        assert_eq!(
            p.current().permits("eu", "EU", &release("r")),
            Verdict::Deny(DenyReason::UnknownDestination)
        );
    }
}
