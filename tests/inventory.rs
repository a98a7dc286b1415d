//! The inventory as a library: late eBPF events keep the labels of a namespace that just died
//! (for the grace period), and never take the labels of one born after them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use netsleuth::inventory::{Inventory, GRACE};

#[test]
fn labels_for_late_events_within_the_grace_period() {
    if !privileged("labels_for_late_events_within_the_grace_period") {
        return;
    }
    let before_birth = Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    // Inode numbers held below the namespace and released just before it is deleted: no other
    // namespace on the node takes its inode before the assertions below.
    let shield = InumShield::hold(256);
    let ns = netns_above(&shield, "nsg");
    let inode = ns.inode();
    let inv = Inventory::new("/proc", &["/run/netns".to_string()]);
    inv.refresh();
    let born = Instant::now();
    let labels = inv
        .labels_for(inode, born)
        .expect("a live namespace has labels");
    assert!(
        labels.contains(&format!("name=\"{}\"", ns.name)),
        "{labels}"
    );
    assert!(labels.contains("kind=\"named\""), "{labels}");

    let name = ns.name.clone();
    let event_time = Instant::now();
    drop(shield);
    drop(ns);
    inv.refresh();
    assert!(
        inv.snapshot().by_inode(inode).is_none(),
        "inode {inode} reused by another namespace despite the 256-number shield"
    );
    // An event that happened while it lived still gets its labels after it is gone...
    let late = inv
        .labels_for(inode, event_time)
        .expect("labels within the grace period");
    assert!(late.contains(&format!("name=\"{name}\"")), "{late}");
    // ...but not an event from before it existed (a previous owner of the inode), nor one from
    // after its death.
    assert_eq!(inv.labels_for(inode, before_birth), None);
    assert_eq!(
        inv.labels_for(inode, Instant::now() + Duration::from_millis(1)),
        None
    );
    assert!(GRACE >= Duration::from_secs(10));
}
