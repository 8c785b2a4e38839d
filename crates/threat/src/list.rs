//! One threat list: its name and networks, parsed from text.

use crate::ThreatError;
use ipnet::IpNet;
use std::net::IpAddr;

/// One named list of IPv4 and IPv6 networks (a single address is a /32 or /128).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreatList {
    name: String,
    networks: Vec<IpNet>,
}

impl ThreatList {
    /// Parses a list: one IP address or CIDR network per line, IPv4 or IPv6.
    ///
    /// Everything from a `#` to the end of its line is a comment; blank lines, surrounding
    /// blanks and a `\r` before the `\n` are ignored. A network with host bits set
    /// (`10.1.2.3/8`) means the network holding it (`10.0.0.0/8`), as routers read it. Any other
    /// line is an error naming its (1-based) number and why.
    ///
    /// ```
    /// use flowspike_threat::ThreatList;
    /// let l = ThreatList::parse("custom", b"10.0.0.0/8 # lab\n\n2001:db8::/32\n").unwrap();
    /// assert_eq!((l.name(), l.len()), ("custom", 2));
    /// let e = ThreatList::parse("custom", b"1.2.3.4\nexample.com\n").unwrap_err();
    /// assert!(e.to_string().contains("line 2"), "{e}");
    /// ```
    pub fn parse(name: &str, text: &[u8]) -> Result<ThreatList, ThreatError> {
        let mut networks = Vec::new();
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = raw.iter().position(|&b| b == b'#').map_or(raw, |end| &raw[..end]);
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let refuse = |reason: &str| ThreatError::Parse {
                list: name.to_owned(),
                line: i + 1,
                text: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
                reason: reason.to_owned(),
            };
            let s = std::str::from_utf8(line).map_err(|_| refuse("not UTF-8"))?;
            networks.push(parse_entry(s).map_err(refuse)?);
        }
        Ok(ThreatList { name: name.to_owned(), networks })
    }

    /// A list of the given networks (as parsed: host bits are cleared).
    pub fn from_networks(name: &str, networks: Vec<IpNet>) -> ThreatList {
        let networks = networks.into_iter().map(|n| n.trunc()).collect();
        ThreatList { name: name.to_owned(), networks }
    }

    /// The list's name (what rows carry in `list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of entries (lines that held a network), duplicates included.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// Whether the list has no entry.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The entries in file order.
    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }
}

/// One entry: a CIDR network (host bits cleared) or a single address.
fn parse_entry(s: &str) -> Result<IpNet, &'static str> {
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| "not a CIDR network (address/prefix length)")?;
        Ok(net.trunc())
    } else {
        let ip: IpAddr = s.parse().map_err(|_| "not an IP address or CIDR network")?;
        Ok(IpNet::from(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` and compares the entries' texts with `expected`.
    fn check(text: &str, expected: &[&str]) {
        let l = ThreatList::parse("t", text.as_bytes()).unwrap();
        let got: Vec<String> = l.networks().iter().map(ToString::to_string).collect();
        assert_eq!(got, expected, "{text:?}");
        assert_eq!(l.len(), expected.len());
    }

    /// Parses `text` and expects an error on `line` whose message contains `reason`.
    fn check_err(text: &[u8], line: usize, reason: &str) {
        match ThreatList::parse("bad", text) {
            Err(ThreatError::Parse { list, line: l, reason: r, .. }) => {
                assert_eq!((list.as_str(), l), ("bad", line), "{text:?}");
                assert!(r.contains(reason), "{r}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn comments_blank_lines_and_blanks_are_ignored() {
        check("", &[]);
        check("# only a comment\n\n   \n\t# indented comment\n", &[]);
        check(
            "1.2.3.4\r\n  10.0.0.0/8  # private\n\n2001:db8::/32\n::1#x\n0.0.0.0/0\n::/0",
            &["1.2.3.4/32", "10.0.0.0/8", "2001:db8::/32", "::1/128", "0.0.0.0/0", "::/0"],
        );
    }

    #[test]
    fn host_bits_are_cleared() {
        check("10.1.2.3/8\n2001:db8::1/32\n", &["10.0.0.0/8", "2001:db8::/32"]);
    }

    #[test]
    fn ipv4_mapped_entry_stays_ipv6() {
        check("::ffff:1.2.3.4\n", &["::ffff:1.2.3.4/128"]);
    }

    #[test]
    fn bad_lines_name_their_number() {
        check_err(b"1.2.3.4\n\n# c\nexample.com\n", 4, "not an IP address");
        check_err(b"1.2.3.4/33\n", 1, "not a CIDR");
        check_err(b"::/129\n", 1, "not a CIDR");
        check_err(b"1.2.3.4 5.6.7.8\n", 1, "not an IP");
        check_err(b"1.2.3.4\n\xff\xfe\n", 2, "UTF-8");
        check_err(b"10.0.0.0/\n", 1, "not a CIDR");
    }
}
