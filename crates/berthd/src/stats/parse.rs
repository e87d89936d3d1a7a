//! Parsers of `/proc/<pid>/net/dev` and `/proc/<pid>/limits` (the cgroup
//! files' parsers are in `berth-cgroup`). Pure functions over the files'
//! content, so the unit tests feed them samples.

/// Counters of one interface in `/proc/<pid>/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// `/proc/<pid>/net/dev`: two header lines, then `name: rx(8) tx(8)`.
/// Unparsable lines are skipped.
pub fn net_dev(text: &str) -> Vec<IfaceCounters> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            if n.len() < 16 {
                return None;
            }
            Some(IfaceCounters {
                name: name.trim().to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (the one
/// ulimit cAdvisor reports); `None` when unlimited or unparsable.
pub fn nofile_soft(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_soft_of_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 1048576              files     \n\
Max processes             62756                62756                processes \n";
        assert_eq!(nofile_soft(limits), Some(1024));
        assert_eq!(
            nofile_soft(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(nofile_soft(""), None);
        assert_eq!(nofile_soft("Max open files\n"), None);
    }

    #[test]
    fn net_dev_parses_interfaces() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
eth0: 1234567    890    1    2    0     0          0         0   765432     321    3    4    0     0       0          0\n";
        let v = net_dev(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "lo");
        let eth0 = &v[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.rx_errors,
                eth0.rx_dropped
            ),
            (1234567, 890, 1, 2)
        );
        assert_eq!(
            (
                eth0.tx_bytes,
                eth0.tx_packets,
                eth0.tx_errors,
                eth0.tx_dropped
            ),
            (765432, 321, 3, 4)
        );
    }
}
