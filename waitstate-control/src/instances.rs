//! A fleet's instances, a page at a time ([`AppState::instances`](crate::AppState::instances),
//! the dashboard's instance list): each live instance's last pulse, the version of the
//! fleet policy that pulse was answered with, and what is left of that answer's lease.
//!
//! A fleet may hold 10,000 instances: the list is sorted and cut where it is held, and
//! only one page (at most 100 instances) is copied out.

use std::time::Duration;

/// Largest page of instances.
pub(crate) const MAX_PER_PAGE: usize = 100;

/// How a fleet's instances are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceOrder {
    /// By instance id: pages stay put while instances pulse.
    #[default]
    Id,
    /// The longest silent first (then by id): instances about to leave the fleet, or
    /// stuck, on the first page.
    Stalest,
}

/// One instance of a fleet, as its last pulse left it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceView {
    /// Its `instanceId`.
    pub id: String,
    /// Since its last pulse was taken.
    pub last_pulse_ago: Duration,
    /// The version of the fleet policy its last pulse was answered with: a fingerprint of
    /// the policy (equal policies, equal versions), as the dashboard shows it in hex
    /// (`{:08x}`). `None`: not known (recorded by a replica of an older version).
    pub policy_version: Option<u32>,
    /// What is left of the lease of that answer (`[server] lease` from the last pulse);
    /// zero when it has run out.
    pub lease_left: Duration,
}

/// One page of a fleet's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstancePage {
    /// Live instances in the fleet.
    pub total: usize,
    /// This page (from 0).
    pub page: usize,
    /// Instances per page (the size asked for, within 1 and 100).
    pub per_page: usize,
    /// The instances of this page (empty past the last).
    pub items: Vec<InstanceView>,
}

/// The range of page `page` of `per_page` (clamped to 1..=[`MAX_PER_PAGE`]) in `total`
/// items, and the clamped size. Never overflows, never out of bounds.
pub(crate) fn bounds(
    total: usize,
    page: usize,
    per_page: usize,
) -> (std::ops::Range<usize>, usize) {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let start = page.saturating_mul(per_page).min(total);
    let end = start.saturating_add(per_page).min(total);
    (start..end, per_page)
}

/// One page of `rows` (id, since the last pulse, policy version), sorted by `order`.
pub(crate) fn page_of(
    mut rows: Vec<(&str, Duration, Option<u32>)>,
    lease: Duration,
    order: InstanceOrder,
    page: usize,
    per_page: usize,
) -> InstancePage {
    match order {
        InstanceOrder::Stalest => {
            rows.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        }
        _ => rows.sort_unstable_by(|a, b| a.0.cmp(b.0)),
    }
    let total = rows.len();
    let (range, per_page) = bounds(total, page, per_page);
    let items = rows[range]
        .iter()
        .map(|&(id, ago, version)| InstanceView {
            id: id.to_owned(),
            last_pulse_ago: ago,
            policy_version: version,
            lease_left: lease.saturating_sub(ago),
        })
        .collect();
    InstancePage {
        total,
        page,
        per_page,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bounds_hold_at_every_edge() {
        assert_eq!(bounds(45, 0, 20), (0..20, 20));
        assert_eq!(bounds(45, 2, 20), (40..45, 20));
        assert_eq!(bounds(45, 3, 20), (45..45, 20), "past the last page: empty");
        assert_eq!(bounds(0, 0, 20), (0..0, 20));
        assert_eq!(bounds(10, 0, 0), (0..1, 1), "a page holds at least one");
        assert_eq!(bounds(10_000, 1, 1_000_000), (100..200, MAX_PER_PAGE));
        assert_eq!(
            bounds(10_000, usize::MAX, usize::MAX),
            (10_000..10_000, 100)
        );
        assert_eq!(bounds(usize::MAX, usize::MAX / 50, 100).1, 100);
    }

    #[test]
    fn pages_of_ten_thousand_instances_copy_one_page() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("i{i:05}")).collect();
        fn rows(ids: &[String]) -> Vec<(&str, Duration, Option<u32>)> {
            ids.iter()
                .enumerate()
                .map(|(n, id)| (id.as_str(), Duration::from_secs((n % 7) as u64), Some(7)))
                .collect()
        }
        let lease = Duration::from_secs(300);
        let p = page_of(rows(&ids), lease, InstanceOrder::Id, 99, 100);
        assert_eq!(
            (p.total, p.page, p.per_page, p.items.len()),
            (10_000, 99, 100, 100)
        );
        assert_eq!(p.items[0].id, "i09900");
        assert_eq!(p.items[99].id, "i09999");
        assert!(
            page_of(rows(&ids), lease, InstanceOrder::Id, 100, 100)
                .items
                .is_empty()
        );
        // The longest silent first, ties by id; the lease is what is left of it.
        let p = page_of(rows(&ids), lease, InstanceOrder::Stalest, 0, 3);
        let first: Vec<_> = p
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.last_pulse_ago))
            .collect();
        assert_eq!(
            first,
            [
                ("i00006", Duration::from_secs(6)),
                ("i00013", Duration::from_secs(6)),
                ("i00020", Duration::from_secs(6)),
            ]
        );
        assert_eq!(p.items[0].lease_left, Duration::from_secs(294));
        let gone = page_of(
            vec![("old", Duration::from_secs(400), None)],
            lease,
            InstanceOrder::Id,
            0,
            10,
        );
        assert_eq!(gone.items[0].lease_left, Duration::ZERO);
    }
}
