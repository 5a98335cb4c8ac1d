//! What the bench reads from Linux's /proc: which process listens on a local port
//! (/proc/net/tcp{,6} gives the LISTEN socket's inode, /proc/<pid>/fd/* links to
//! `socket:[inode]`), a process's CPU time (/proc/<pid>/stat) and resident memory
//! (/proc/<pid>/status). Pure parsers first, then the readers; elsewhere than Linux every
//! reader finds nothing and the report says n/a.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// TCP state LISTEN in /proc/net/tcp (`st` column).
const TCP_LISTEN: &str = "0A";

/// One socket of /proc/net/tcp or tcp6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub listening: bool,
    pub inode: u64,
}

/// The sockets of a /proc/net/tcp or /proc/net/tcp6 table (the header line and any line
/// that does not parse are skipped).
pub fn parse_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(parse_net_tcp_line)
        .collect()
}

/// `  0: 0100007F:C383 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 …`
fn parse_net_tcp_line(line: &str) -> Option<TcpSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    let (ip_hex, port_hex) = local.split_once(':')?;
    Some(TcpSocket {
        local: SocketAddr::new(
            parse_hex_ip(ip_hex)?,
            u16::from_str_radix(port_hex, 16).ok()?,
        ),
        listening: *state == TCP_LISTEN,
        inode: inode.parse().ok()?,
    })
}

/// The kernel prints an address as 32-bit words in host byte order (little endian on the
/// machines this runs on): IPv4 `0100007F` is 127.0.0.1.
fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::swap_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let w = word(hex.get(i * 8..i * 8 + 8)?)?;
                chunk.copy_from_slice(&w.to_be_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(IpAddr::V6(v6))
        }
        _ => None,
    }
}

/// Whether a socket listening on `socket` takes connections to `wanted` (same port, and
/// the same address or a wildcard one).
pub fn serves(socket: SocketAddr, wanted: SocketAddr) -> bool {
    if socket.port() != wanted.port() {
        return false;
    }
    let ip = socket.ip();
    ip == wanted.ip()
        || ip.is_unspecified()
        || matches!((ip, wanted.ip()), (IpAddr::V6(v6), IpAddr::V4(v4)) if v6.to_ipv4_mapped() == Some(v4))
}

/// A process's name and CPU time in clock ticks, from /proc/<pid>/stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    pub ppid: u32,
    /// utime + stime: the process's own CPU time (all its threads).
    pub cpu_ticks: u64,
    /// cutime + cstime: CPU time of its children that exited and were reaped.
    pub children_cpu_ticks: u64,
}

/// Parses /proc/<pid>/stat. The name is in parentheses and may hold spaces and
/// parentheses itself, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After ")": state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        children_cpu_ticks: field(16)?.checked_add(field(17)?)?,
    })
}

/// VmRSS of /proc/<pid>/status, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmRSS:")?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// `socket:[123]` → 123.
fn socket_inode(link: &Path) -> Option<u64> {
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The processes listening on each of `wanted` (local addresses), by address; an address
/// no local process listens on is absent.
pub fn listeners(wanted: &[SocketAddr]) -> BTreeMap<SocketAddr, u32> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            sockets.extend(parse_net_tcp(&text));
        }
    }
    let mut inode_of = BTreeMap::new();
    for &w in wanted {
        if let Some(s) = sockets.iter().find(|s| s.listening && serves(s.local, w)) {
            inode_of.insert(s.inode, w);
        }
    }
    let mut found = BTreeMap::new();
    if inode_of.is_empty() {
        return found;
    }
    for pid in pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let inode = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l));
            if let Some(w) = inode.and_then(|i| inode_of.get(&i)) {
                found.insert(*w, pid);
            }
        }
        if found.len() == inode_of.len() {
            break;
        }
    }
    found
}

/// Every process id under /proc.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn self_stat() -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// CPU ticks of a PostgreSQL server: its postmaster (`postmaster`, found by the port it
/// listens on) with its reaped children's time, and every live child (backends, the
/// checkpointer…). Backends that ended between two readings still count: in the
/// postmaster's children time, which grows when it reaps them.
pub fn server_cpu_ticks(postmaster: u32) -> Option<u64> {
    let own = stat(postmaster)?;
    let mut total = own.cpu_ticks.saturating_add(own.children_cpu_ticks);
    for pid in pids() {
        if let Some(s) = stat(pid).filter(|s| s.ppid == postmaster) {
            total = total.saturating_add(s.cpu_ticks);
        }
    }
    Some(total)
}

/// The SQLite files a process holds open (`*.db`), which tells the engine its services
/// run on.
pub fn open_sqlite_files(pid: u32) -> BTreeSet<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| l.to_str().map(str::to_owned))
        .filter(|l| l.ends_with(".db"))
        .collect()
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux when
/// getconf is missing).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_tcp_tables_give_listening_sockets_and_their_inodes() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:C383 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:C383 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 654321 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:24F8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n\
   garbage\n";
        let sockets = parse_net_tcp(v4);
        assert_eq!(sockets.len(), 3);
        assert_eq!(
            sockets[0],
            TcpSocket {
                local: "127.0.0.1:50051".parse().unwrap(),
                listening: true,
                inode: 123_456
            }
        );
        assert!(!sockets[1].listening);
        assert_eq!(sockets[2].local, "0.0.0.0:9464".parse().unwrap());

        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:C384 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000100007F:C385 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1000 1 0000000000000000 100 0 0 10 0\n";
        let sockets = parse_net_tcp(v6);
        assert_eq!(sockets[0].local, "[::1]:50052".parse().unwrap());
        assert_eq!(sockets[0].inode, 999);
        assert_eq!(
            sockets[1].local,
            "[::ffff:127.0.0.1]:50053".parse().unwrap()
        );
    }

    #[test]
    fn a_listener_serves_its_port_on_its_address_or_any() {
        let want: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        assert!(serves("127.0.0.1:50051".parse().unwrap(), want));
        assert!(serves("0.0.0.0:50051".parse().unwrap(), want));
        assert!(serves("[::]:50051".parse().unwrap(), want));
        assert!(serves("[::ffff:127.0.0.1]:50051".parse().unwrap(), want));
        assert!(!serves("127.0.0.1:50052".parse().unwrap(), want));
        assert!(!serves("10.0.0.1:50051".parse().unwrap(), want));
    }

    #[test]
    fn proc_stat_gives_cpu_ticks_even_with_odd_names() {
        let text = "4242 (ovation (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    1500 250 30 12 20 0 12 0 123456 1000000 2000 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                comm: "ovation (x) y".into(),
                ppid: 1,
                cpu_ticks: 1_750,
                children_cpu_ticks: 42,
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1"), None);
        assert_eq!(parse_stat(""), None);
        // This very process can be read.
        assert!(self_stat().is_some_and(|s| !s.comm.is_empty()));
    }

    #[test]
    fn vm_rss_and_socket_links_are_read() {
        let status = "Name:\tovation-wallet\nVmPeak:\t  100 kB\nVmRSS:\t   21532 kB\nThreads:\t5\n";
        assert_eq!(parse_vm_rss_kib(status), Some(21_532));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
        assert_eq!(socket_inode(Path::new("socket:[123456]")), Some(123_456));
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("pipe:[5]")), None);
    }
}
