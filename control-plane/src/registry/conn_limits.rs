//! Registry connections counted in total and per client address, so one
//! client cannot take every connection; a slot is given back on drop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Default)]
pub struct ConnCounter {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection's place in the counts.
pub struct Slot {
    counter: Arc<ConnCounter>,
    ip: IpAddr,
}

impl ConnCounter {
    /// A slot for a connection from `ip`, unless that would pass `total`
    /// connections or `per_ip` from that address.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, total: usize, per_ip: usize) -> Option<Slot> {
        let mut open = self.open.lock();
        let (all, by_ip) = &mut *open;
        let mine = by_ip.get(&ip).copied().unwrap_or(0);
        if *all >= total || mine >= per_ip {
            return None;
        }
        *all += 1;
        by_ip.insert(ip, mine + 1);
        Some(Slot {
            counter: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.open.lock().0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock();
        let (all, by_ip) = &mut *open;
        *all -= 1;
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_address_and_in_total_and_slots_come_back() {
        let c = Arc::new(ConnCounter::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<Slot> = (0..2).map(|_| c.acquire(a, 3, 2).unwrap()).collect();
        assert!(c.acquire(a, 3, 2).is_none(), "per address");
        let third = c.acquire(b, 3, 2).unwrap();
        assert!(c.acquire(b, 3, 2).is_none(), "in total");
        drop(third);
        assert_eq!(c.open(), 2);
        drop(held);
        assert_eq!(c.open(), 0);
        assert!(c.open.lock().1.is_empty(), "no address left behind");
    }
}
