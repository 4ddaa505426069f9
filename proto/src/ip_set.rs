//! A set of networks (`ip_allow`, `ip_deny`) looked up in O(log n): the
//! CIDRs as written, and the same as sorted, merged address ranges.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// Networks, each a CIDR or a single address (`/32`, `/128`).
#[derive(Clone, Default)]
pub struct IpSet {
    /// Sorted and without repeats: the canonical text is their list.
    nets: Arc<[IpNet]>,
    /// Inclusive ranges, sorted and merged; IPv4 apart from IPv6.
    v4: Arc<[(u32, u32)]>,
    v6: Arc<[(u128, u128)]>,
}

impl IpSet {
    /// Parses `10.0.0.0/8,192.0.2.7,2001:db8::/32` (spaces allowed); empty
    /// is the empty set. The error names the entry that does not parse.
    pub fn parse(raw: &str) -> Result<IpSet, String> {
        let mut nets = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => entry
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("\"{entry}\" is neither a CIDR nor an address"))?,
            };
            nets.push(net.trunc());
        }
        Ok(IpSet::of(nets))
    }

    pub fn of(mut nets: Vec<IpNet>) -> IpSet {
        nets.sort();
        nets.dedup();
        let mut v4: Vec<(u32, u32)> = Vec::new();
        let mut v6: Vec<(u128, u128)> = Vec::new();
        for net in &nets {
            match net {
                IpNet::V4(n) => v4.push((n.network().into(), n.broadcast().into())),
                IpNet::V6(n) => v6.push((n.network().into(), n.broadcast().into())),
            }
        }
        IpSet {
            nets: nets.into(),
            v4: merged(v4).into(),
            v6: merged(v6).into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether `ip` is in one of the networks; an IPv4-mapped IPv6 address
    /// (`::ffff:192.0.2.7`) is looked up as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => within(&self.v4, u32::from(v4)),
                None => within(&self.v6, u128::from(a)),
            },
        }
    }
}

/// Sorted ranges with the overlapping and adjacent ones joined.
fn merged<T: Copy + Ord + num::One>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if last.1 == T::MAX || lo <= last.1.plus_one() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn within<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x.
    let i = ranges.partition_point(|(lo, _)| *lo <= x);
    i > 0 && x <= ranges[i - 1].1
}

mod num {
    pub trait One {
        const MAX: Self;
        fn plus_one(self) -> Self;
    }
    impl One for u32 {
        const MAX: u32 = u32::MAX;
        fn plus_one(self) -> u32 {
            self + 1
        }
    }
    impl One for u128 {
        const MAX: u128 = u128::MAX;
        fn plus_one(self) -> u128 {
            self + 1
        }
    }
}

impl fmt::Display for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            // A single address is written as one.
            if net.prefix_len() == net.max_prefix_len() {
                write!(f, "{}", net.addr())?;
            } else {
                write!(f, "{net}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpSet({self})")
    }
}

impl PartialEq for IpSet {
    fn eq(&self, other: &IpSet) -> bool {
        self.nets == other.nets
    }
}

impl Eq for IpSet {}

impl std::hash::Hash for IpSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nets.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_addresses_are_found_by_range() {
        let set = IpSet::parse("10.0.0.0/8, 192.0.2.7,192.0.2.8/31,2001:db8::/32,::1").unwrap();
        for inside in [
            "10.1.2.3",
            "192.0.2.7",
            "192.0.2.8",
            "192.0.2.9",
            "2001:db8::5",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(set.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "11.0.0.0",
            "192.0.2.6",
            "192.0.2.10",
            "2001:db9::",
            "::2",
            "9.255.255.255",
        ] {
            assert!(!set.contains(ip(outside)), "{outside}");
        }
        assert_eq!(
            set.to_string(),
            "10.0.0.0/8,192.0.2.7,192.0.2.8/31,::1,2001:db8::/32"
        );
        assert_eq!(IpSet::parse(&set.to_string()).unwrap(), set);
    }

    #[test]
    fn overlaps_and_neighbours_merge_and_the_whole_space_works() {
        let set = IpSet::parse("10.0.0.0/24,10.0.1.0/24,10.0.0.128/25,0.0.0.0/0").unwrap();
        assert_eq!(set.v4.len(), 1);
        assert!(set.contains(ip("255.255.255.255")) && set.contains(ip("0.0.0.0")));
        assert!(!set.contains(ip("::1")));
        let all6 = IpSet::parse("::/0").unwrap();
        assert!(all6.contains(ip("ffff::1")) && !all6.contains(ip("127.0.0.1")));
        // Host bits are dropped: 10.0.0.5/8 is 10.0.0.0/8.
        assert_eq!(
            IpSet::parse("10.0.0.5/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn bad_entries_are_named_and_empty_is_empty() {
        assert_eq!(
            IpSet::parse("10.0.0.0/8,10.0.0.0/33").unwrap_err(),
            "\"10.0.0.0/33\" is neither a CIDR nor an address"
        );
        assert!(IpSet::parse("").unwrap().is_empty());
        assert!(IpSet::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn a_thousand_entries_are_looked_up_by_halving() {
        let raw: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let set = IpSet::parse(&raw.join(",")).unwrap();
        assert_eq!(set.len(), 1000);
        assert!(set.contains(ip("10.3.231.9")) && !set.contains(ip("10.3.232.9")));
    }
}
