//! Real network partitions for the chaos suite: every node runs in a network namespace of its
//! own, joined to the host by a veth pair whose host end is a port of one bridge per run. The
//! private PostgreSQL and etcd listen on the bridge's address (besides loopback), so that is the
//! only way a node reaches them, and a fault can cut or slow exactly one node's path to one of
//! them, in one direction or both.
//!
//! Why a bridge and not one address per veth: PostgreSQL reads `listen_addresses` at start only,
//! and nodes are added during a run; with a bridge there is one address for every node, ever.
//!
//! Faults are nftables rules and traffic-control queues inside the node's namespace (and on the
//! host end of its veth), so deleting the namespace deletes them: a run that dies leaves nothing
//! that touches another run. Names carry the harness's pid (`rchaos-<pid>-<node>`, `rc<hex
//! pid>br`, `rc<hex pid>v<k>`), so parallel runs never collide, and a run first removes what a
//! dead earlier run (its pid gone) left behind. [`Net`]'s Drop removes this run's.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). `tc netem` gives the "slow" fault its fixed
//! delay where the kernel has it; where it does not (`CONFIG_NET_SCH_NETEM` unset), the link is
//! slowed by a token-bucket rate limit (`tbf`) instead, and loss is nftables' random drop either way.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// Which way packets are dropped, seen from the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dir {
    Both,
    /// The node's packets to the server are dropped; the server's still arrive.
    Out,
    /// The server's packets to the node are dropped; the node's still arrive.
    In,
}

/// One impairment of one node's network.
#[derive(Debug, Clone, PartialEq)]
pub enum Impair {
    /// Drop packets between the node and etcd and/or PostgreSQL.
    Cut { etcd: bool, pg: bool, dir: Dir },
    /// Both ways, to both servers: a fixed delay (netem) or a rate limit (tbf), and random loss.
    Slow { delay_ms: u32, rate_kbit: u32, loss_pct: u32 },
}

/// The servers' ports on the bridge address.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub etcd: u16,
    pub pg: u16,
}

/// The nftables ruleset (for `nft -f`, inside the node's namespace) of an impairment, `host`
/// being the servers' address. Pure, so its self-check can read it.
pub fn ruleset(host: &str, ports: Ports, imp: &Impair) -> String {
    let (out, inn): (Vec<String>, Vec<String>) = match imp {
        Impair::Cut { etcd, pg, dir } => {
            let ps: Vec<String> = [(*etcd, ports.etcd), (*pg, ports.pg)]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, p)| p.to_string())
                .collect();
            let set = format!("{{ {} }}", ps.join(", "));
            let out = format!("ip daddr {host} tcp dport {set} drop");
            let inn = format!("ip saddr {host} tcp sport {set} drop");
            match dir {
                Dir::Both => (vec![out], vec![inn]),
                Dir::Out => (vec![out], vec![]),
                Dir::In => (vec![], vec![inn]),
            }
        }
        Impair::Slow { loss_pct, .. } => {
            let set = format!("{{ {}, {} }}", ports.etcd, ports.pg);
            (
                vec![format!("ip daddr {host} tcp dport {set} numgen random mod 100 < {loss_pct} drop")],
                vec![format!("ip saddr {host} tcp sport {set} numgen random mod 100 < {loss_pct} drop")],
            )
        }
    };
    let chain = |name: &str, hook: &str, rules: &[String]| {
        let body: String = rules.iter().map(|r| format!("    {r}\n")).collect();
        format!("  chain {name} {{\n    type filter hook {hook} priority 0; policy accept;\n{body}  }}\n")
    };
    format!("table inet chaos {{\n{}{}}}\n", chain("out", "output", &out), chain("in", "input", &inn))
}

/// One node's place in the network.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub ns: String,
    pub ip: String,
    veth: String,
}

pub struct Net {
    tag: String,
    prefix: String,
    /// The bridge's address: where PostgreSQL and etcd listen for the nodes.
    pub host: String,
    bridge: String,
    nodes: BTreeMap<String, NodeNet>,
    next: u32,
    /// Whether this kernel has netem (probed at the first slow fault).
    netem: Option<bool>,
}

/// Run a command; its stderr (and stdout) on failure.
fn cmd(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut c = Command::new(program);
    c.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child =
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes()).map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    cmd("ip", args, None)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove the namespaces and bridges of chaos runs whose harness process is gone.
fn sweep_dead_runs() {
    for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let pid = name.strip_prefix("rchaos-").and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in ip(&["-o", "link", "show", "type", "bridge"]).unwrap_or_default().lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        let pid =
            name.strip_prefix("rc").and_then(|r| r.strip_suffix("br")).and_then(|h| u32::from_str_radix(h, 16).ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = ip(&["link", "del", name]);
        }
    }
}

impl Net {
    /// Set up this run's bridge; Err (why) when this machine cannot (not root, no `ip` or `nft`).
    pub fn new() -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        cmd("nft", &["--version"], None).map_err(|e| format!("{e} (install nftables: scripts/prereqs.sh test)"))?;
        ip(&["netns", "list"])?;
        sweep_dead_runs();
        let pid = std::process::id();
        let tag = format!("{pid:x}");
        // A /24 of 10.64.0.0/10 nobody on this machine uses, starting from one the pid picks.
        let used = ip(&["-4", "-o", "addr", "show"])? + &ip(&["-4", "route", "show"])?;
        let start = pid as usize;
        let prefix = (0..16384)
            .map(|i| {
                let n = (start + i) % 16384;
                format!("10.{}.{}", 64 + n / 256, n % 256)
            })
            .find(|p| !used.contains(&format!("{p}.")))
            .ok_or("no free 10.64.0.0/10 subnet")?;
        let host = format!("{prefix}.1");
        let bridge = format!("rc{tag}br");
        let net = Net {
            tag,
            prefix,
            host: host.clone(),
            bridge: bridge.clone(),
            nodes: BTreeMap::new(),
            next: 1,
            netem: None,
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{host}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(net)
    }

    /// The namespace of node `id`, made (with its veth and address) the first time.
    pub fn node(&mut self, id: &str) -> NodeNet {
        if let Some(n) = self.nodes.get(id) {
            return n.clone();
        }
        let k = self.next;
        self.next += 1;
        assert!(k < 250, "more than 249 node namespaces in one run");
        let n = NodeNet {
            ns: format!("rchaos-{}-{id}", std::process::id()),
            ip: format!("{}.{}", self.prefix, k + 1),
            veth: format!("rc{}v{k}", self.tag),
        };
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &n.ns])?;
            ip(&["link", "add", &n.veth, "type", "veth", "peer", "name", "eth0", "netns", &n.ns])?;
            ip(&["link", "set", &n.veth, "master", &self.bridge, "up"])?;
            ip(&["-n", &n.ns, "addr", "add", &format!("{}/24", n.ip), "dev", "eth0"])?;
            ip(&["-n", &n.ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &n.ns, "link", "set", "lo", "up"])?;
            Ok(())
        };
        setup().unwrap_or_else(|e| panic!("setting up the network namespace of {id}: {e}"));
        self.nodes.insert(id.to_string(), n.clone());
        n
    }

    /// Impair node `id`'s network; returns a note of what was done.
    pub fn impair(&mut self, id: &str, ports: Ports, imp: &Impair) -> String {
        let n = self.node(id);
        let rules = ruleset(&self.host, ports, imp);
        cmd("ip", &["netns", "exec", &n.ns, "nft", "-f", "-"], Some(&rules))
            .unwrap_or_else(|e| panic!("nft in {}: {e}\n{rules}", n.ns));
        let Impair::Slow { delay_ms, rate_kbit, loss_pct } = imp else { return String::new() };
        let netem = ["netem".to_string(), "delay".into(), format!("{delay_ms}ms")];
        let tbf = [
            "tbf".to_string(),
            "rate".into(),
            format!("{rate_kbit}kbit"),
            "burst".into(),
            "4kb".into(),
            "latency".into(),
            "2s".into(),
        ];
        // Both ends: the node's eth0 delays what it sends, the host's veth what it receives.
        let on = |qdisc: &[String]| -> Result<(), String> {
            let q: Vec<&str> = qdisc.iter().map(String::as_str).collect();
            cmd(
                "ip",
                &[&["netns", "exec", &n.ns, "tc", "qdisc", "add", "dev", "eth0", "root"][..], &q].concat(),
                None,
            )?;
            cmd("tc", &[&["qdisc", "add", "dev", &n.veth, "root"][..], &q].concat(), None).map(|_| ())
        };
        if self.netem != Some(false) {
            match on(&netem) {
                Ok(()) => {
                    self.netem = Some(true);
                    return format!("netem delay {delay_ms} ms, loss {loss_pct}% (nftables)");
                }
                Err(e) if self.netem.is_none() => {
                    eprintln!("chaos: no netem here ({e}); the slow fault rate-limits the link instead");
                    self.netem = Some(false);
                }
                Err(e) => panic!("netem on {}: {e}", n.ns),
            }
        }
        on(&tbf).unwrap_or_else(|e| panic!("tbf on {}: {e}", n.ns));
        format!("tbf {rate_kbit} kbit/s, loss {loss_pct}% (nftables)")
    }

    /// Undo every impairment of node `id`.
    pub fn heal(&mut self, id: &str) {
        let n = self.node(id);
        cmd("ip", &["netns", "exec", &n.ns, "nft", "flush", "ruleset"], None)
            .unwrap_or_else(|e| panic!("healing {}: {e}", n.ns));
        // No queue there (a cut, not a slow link) is fine.
        let _ = cmd("ip", &["netns", "exec", &n.ns, "tc", "qdisc", "del", "dev", "eth0", "root"], None);
        let _ = cmd("tc", &["qdisc", "del", "dev", &n.veth, "root"], None);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A namespace's processes keep it alive until they exit; its name, veth and rules go now.
        for n in self.nodes.values() {
            let _ = ip(&["netns", "del", &n.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

#[test]
fn rulesets_drop_what_the_fault_names_and_nothing_else() {
    let ports = Ports { etcd: 2379, pg: 5433 };
    let cut = ruleset("10.64.1.1", ports, &Impair::Cut { etcd: true, pg: false, dir: Dir::Both });
    assert!(cut.contains("ip daddr 10.64.1.1 tcp dport { 2379 } drop"), "{cut}");
    assert!(cut.contains("ip saddr 10.64.1.1 tcp sport { 2379 } drop"), "{cut}");
    assert!(!cut.contains("5433"), "{cut}");
    let out = ruleset("10.64.1.1", ports, &Impair::Cut { etcd: true, pg: true, dir: Dir::Out });
    assert!(out.contains("dport { 2379, 5433 } drop") && !out.contains("sport"), "{out}");
    let inn = ruleset("10.64.1.1", ports, &Impair::Cut { etcd: false, pg: true, dir: Dir::In });
    assert!(inn.contains("sport { 5433 } drop") && !inn.contains("dport"), "{inn}");
    let slow = ruleset("10.64.1.1", ports, &Impair::Slow { delay_ms: 100, rate_kbit: 256, loss_pct: 7 });
    assert!(slow.contains("numgen random mod 100 < 7 drop"), "{slow}");
}
