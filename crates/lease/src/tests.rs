use std::time::{Duration, Instant};

use super::*;

fn table(shards: &[(&str, &[&str])]) -> MemTable {
    let t = MemTable::new();
    for (id, parents) in shards {
        let p: Vec<String> = parents.iter().map(|s| s.to_string()).collect();
        assert!(t.create_lease(id, &p).unwrap());
        assert!(!t.create_lease(id, &p).unwrap(), "a second create is refused");
    }
    t
}

const F: Duration = Duration::from_secs(10);

#[test]
fn fair_share_then_expiry_moves_leases() {
    let t = table(&[("s0", &[]), ("s1", &[]), ("s2", &[]), ("s3", &[])]);
    let t0 = Instant::now();
    let mut ea = Expiry::default();
    let snap = t.snapshot().unwrap();
    ea.observe(&snap, t0);
    // Alone, worker a takes everything (free leases).
    let takes = plan_takes(&snap, "a", &ea, t0, F, 99);
    assert_eq!(takes.len(), 4);
    for tk in &takes {
        assert_eq!(t.take(&tk.shard_id, tk.seen_counter, "a").unwrap(), Some(tk.seen_counter + 1));
    }
    // A stale counter loses the race.
    assert_eq!(t.take("s0", 0, "b").unwrap(), None);
    // Worker b joins: nothing free or expired; a has 4 ≥ 0 + 2, so b steals one.
    let mut eb = Expiry::default();
    let snap = t.snapshot().unwrap();
    eb.observe(&snap, t0);
    let takes = plan_takes(&snap, "b", &eb, t0, F, 99);
    assert_eq!(takes.len(), 1);
    assert_eq!(takes[0].stolen_from.as_deref(), Some("a"));
    assert!(t.take(&takes[0].shard_id, takes[0].seen_counter, "b").unwrap().is_some());
    let snap = t.snapshot().unwrap();
    eb.observe(&snap, t0);
    // 3 vs 1: one more steal; 2 vs 2: balanced, no more.
    let takes = plan_takes(&snap, "b", &eb, t0, F, 99);
    assert_eq!(takes.len(), 1);
    t.take(&takes[0].shard_id, takes[0].seen_counter, "b").unwrap().unwrap();
    let snap = t.snapshot().unwrap();
    assert!(plan_takes(&snap, "b", &eb, t0, F, 99).is_empty());
    assert!(plan_takes(&snap, "a", &ea, t0, F, 99).is_empty());
    // a stops renewing: after the failover time (as seen by b) its leases are expired, and b
    // takes them all; before it, nothing.
    eb.observe(&snap, t0);
    assert!(plan_takes(&snap, "b", &eb, t0 + F / 2, F, 99).is_empty());
    let takes = plan_takes(&snap, "b", &eb, t0 + F, F, 99);
    assert_eq!(takes.len(), 2, "{takes:?}");
    assert!(takes.iter().all(|t| t.stolen_from.is_none()));
    // The lease cap holds.
    assert_eq!(plan_takes(&snap, "c", &Expiry::default(), t0, F, 1).len(), 1);
}

#[test]
fn a_renewal_keeps_a_lease_alive_and_fences_the_old_counter() {
    let t = table(&[("s0", &[])]);
    let c = t.take("s0", 0, "a").unwrap().unwrap();
    let t0 = Instant::now();
    let mut e = Expiry::default();
    e.observe(&t.snapshot().unwrap(), t0);
    let c2 = t.renew("s0", "a", c).unwrap().unwrap();
    assert_eq!(t.renew("s0", "a", c).unwrap(), None, "an old counter is fenced");
    assert_eq!(t.renew("s0", "b", c2).unwrap(), None, "another owner is fenced");
    let snap = t.snapshot().unwrap();
    e.observe(&snap, t0 + F);
    assert!(!e.is_expired(&snap.leases["s0"], t0 + F + F / 2, F));
    assert!(e.is_expired(&snap.leases["s0"], t0 + F + F, F));
    assert!(t.release("s0", "a", c2).unwrap());
    assert!(t.snapshot().unwrap().leases["s0"].owner.is_none());
}

#[test]
fn commit_is_all_or_nothing_and_names_lost_leases() {
    let t = table(&[("s0", &[]), ("s1", &[])]);
    let c0 = t.take("s0", 0, "a").unwrap().unwrap();
    let c1 = t.take("s1", 0, "a").unwrap().unwrap();
    // b steals s1.
    t.take("s1", c1, "b").unwrap().unwrap();
    let commit = |c1| {
        vec![
            ShardCommit {
                shard_id: "s0".into(),
                owner: "a".into(),
                counter: c0,
                checkpoint: Checkpoint::After("10".into()),
                max_start: Some(7200),
                watermark: Some(7000),
            },
            ShardCommit {
                shard_id: "s1".into(),
                owner: "a".into(),
                counter: c1,
                checkpoint: Checkpoint::After("20".into()),
                max_start: Some(7300),
                watermark: Some(7100),
            },
        ]
    };
    let d = Delta { id: delta_key("a", 1), file: "f1".into(), taps_file: None, hours: vec![3600] };
    assert_eq!(t.commit(&commit(c1), Some(&d)).unwrap(), CommitOutcome::Lost(vec!["s1".into()]));
    let snap = t.snapshot().unwrap();
    assert!(snap.deltas.is_empty(), "nothing of a failed commit is visible");
    assert_eq!(snap.leases["s0"].checkpoint, Checkpoint::Initial);
    // Without the lost shard it commits.
    assert_eq!(t.commit(&commit(c1)[..1], Some(&d)).unwrap(), CommitOutcome::Done);
    let snap = t.snapshot().unwrap();
    assert_eq!(snap.leases["s0"].checkpoint, Checkpoint::After("10".into()));
    assert_eq!(snap.leases["s0"].counter, c0 + 1);
    assert_eq!(snap.deltas[&d.id], d);
    // s1 (never committed) holds the global watermark back.
    assert_eq!(global_watermark(&snap), None);
}

#[test]
fn children_wait_for_parents_and_the_watermark_is_the_minimum() {
    let t = table(&[("p", &[]), ("q", &[]), ("c", &["p", "q"])]);
    let active = |t: &MemTable| -> Vec<String> {
        active_leases(&t.snapshot().unwrap()).map(|l| l.shard_id.clone()).collect()
    };
    assert_eq!(active(&t), ["p", "q"]);
    let cp = t.take("p", 0, "a").unwrap().unwrap();
    let cq = t.take("q", 0, "a").unwrap().unwrap();
    let end = |id: &str, c, wm| ShardCommit {
        shard_id: id.into(),
        owner: "a".into(),
        counter: c,
        checkpoint: Checkpoint::ShardEnd,
        max_start: None,
        watermark: Some(wm),
    };
    t.commit(&[end("p", cp, 100)], None).unwrap();
    assert_eq!(active(&t), ["q"], "c waits for q");
    assert_eq!(global_watermark(&t.snapshot().unwrap()), None);
    t.commit(
        &[ShardCommit { checkpoint: Checkpoint::After("5".into()), ..end("q", cq, 50) }],
        None,
    )
    .unwrap();
    assert_eq!(global_watermark(&t.snapshot().unwrap()), Some(50));
    t.commit(&[end("q", cq + 1, 60)], None).unwrap();
    assert_eq!(active(&t), ["c"]);
    // A parent removed from the table (cleaned up) does not block.
    t.delete("p").unwrap();
    assert_eq!(active(&t), ["c"]);
}

#[test]
fn hour_claims_are_exclusive_and_delta_hours_drain() {
    let t = table(&[]);
    let claim = HourClaim {
        hour: 3600,
        owner: "a".into(),
        parts: vec!["delta#a#1".into()],
        state: HourState::Claimed,
        claimed_at: 100,
    };
    assert!(t.claim_hour(&claim).unwrap());
    assert!(!t.claim_hour(&HourClaim { owner: "b".into(), ..claim.clone() }).unwrap());
    assert!(!t.take_over_hour(3600, "a", 99, "b", 200).unwrap(), "a stale view fails");
    assert!(t.take_over_hour(3600, "a", 100, "b", 200).unwrap());
    t.hour_done(3600).unwrap();
    assert!(!t.take_over_hour(3600, "b", 200, "c", 300).unwrap(), "a done hour is not taken over");
    let d = Delta {
        id: "delta#a#1".into(),
        file: "f".into(),
        taps_file: Some("t".into()),
        hours: vec![3600, 7200],
    };
    t.commit(&[], Some(&d)).unwrap();
    assert_eq!(t.snapshot().unwrap().deltas[&d.id], d, "the taps file is registered with it");
    assert!(!t.remove_delta_hour(&d.id, 3600).unwrap());
    assert!(t.remove_delta_hour(&d.id, 7200).unwrap());
    assert!(checkpoint_round_trip());
}

fn checkpoint_round_trip() -> bool {
    [Checkpoint::Initial, Checkpoint::ShardEnd, Checkpoint::After("4955".into())]
        .iter()
        .all(|c| Checkpoint::parse(c.as_str()) == *c)
        && Checkpoint::parse("LATEST") == Checkpoint::Initial
}

/// An early alert is claimed once: another worker is refused; its owner gets an unsent claim
/// back (a lost answer or a failed emission) but not a sent one; the claim is deleted with its hour.
#[test]
fn alert_claims_are_exclusive_until_sent() {
    let t = table(&[("s0", &[])]);
    let a = AlertClaim { id: "x1".into(), hour: 3600, owner: "a".into(), sent: false };
    assert!(t.claim_alert(&a).unwrap());
    assert!(!t.claim_alert(&AlertClaim { owner: "b".into(), ..a.clone() }).unwrap());
    assert!(t.claim_alert(&a).unwrap(), "the owner's own unsent claim");
    t.alert_sent("x1").unwrap();
    assert!(!t.claim_alert(&a).unwrap(), "sent: not again");
    let snap = t.snapshot().unwrap();
    assert_eq!(snap.alerts["x1"], AlertClaim { sent: true, ..a });
    assert_eq!(snap.leases.len(), 1, "an alert is not a lease");
    t.delete(&alert_key("x1")).unwrap();
    assert!(t.snapshot().unwrap().alerts.is_empty());
}
