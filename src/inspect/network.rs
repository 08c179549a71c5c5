//! What would configure the guest's network. A container gets its network from the runtime, so
//! an image may configure none; as a VM it then boots without one. Each finding names what
//! was seen; an empty list means nothing was found (d2v warns, it changes nothing).

use super::{dir_names, is_file};
use crate::tree::Tree;

/// Interfaces other than `lo` declared with `iface NAME …` in an ifupdown file.
fn ifupdown_interfaces(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("iface")).then(|| w.next())?
        })
        .filter(|name| *name != "lo")
        .map(str::to_string)
        .collect()
}

/// What configures the network: `systemd-networkd (…)`, `ifupdown (…)`, `NetworkManager`,
/// `netplan (…)`, `cloud-init`, `ifcfg (…)`, `connman`, `wicked`, `dhcpcd`.
pub fn network_config(tree: &Tree) -> Vec<String> {
    let mut found = Vec::new();
    if is_file(tree, crate::init::config::CONFIG_PATH).is_some() {
        found.push("d2v's init (d2v.network= on the kernel command line)".to_string());
    }
    let networks: Vec<String> = dir_names(tree, "/etc/systemd/network")
        .into_iter()
        .filter(|n| n.ends_with(".network"))
        .collect();
    if !networks.is_empty() {
        found.push(format!(
            "systemd-networkd (/etc/systemd/network/{})",
            networks.join(", ")
        ));
    }
    let mut ifaces = Vec::new();
    let mut files = vec!["/etc/network/interfaces".to_string()];
    files.extend(
        dir_names(tree, "/etc/network/interfaces.d")
            .into_iter()
            .map(|n| format!("/etc/network/interfaces.d/{n}")),
    );
    for f in &files {
        if let Some(t) = tree.read_text(f.as_bytes(), 64 << 10) {
            ifaces.extend(ifupdown_interfaces(&t));
        }
    }
    if !ifaces.is_empty() {
        found.push(format!("ifupdown ({})", ifaces.join(", ")));
    }
    let netplan: Vec<String> = dir_names(tree, "/etc/netplan")
        .into_iter()
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    if !netplan.is_empty() {
        found.push(format!("netplan (/etc/netplan/{})", netplan.join(", ")));
    }
    let ifcfg: Vec<String> = dir_names(tree, "/etc/sysconfig/network-scripts")
        .into_iter()
        .filter(|n| n.starts_with("ifcfg-") && n != "ifcfg-lo")
        .collect();
    if !ifcfg.is_empty() {
        found.push(format!("ifcfg ({})", ifcfg.join(", ")));
    }
    for (name, paths) in [
        ("NetworkManager", &["/usr/sbin/NetworkManager"][..]),
        ("cloud-init", &["/usr/bin/cloud-init"]),
        ("connman", &["/usr/sbin/connmand"]),
        ("wicked", &["/usr/sbin/wicked"]),
        ("dhcpcd", &["/usr/sbin/dhcpcd", "/sbin/dhcpcd"]),
    ] {
        if paths.iter().any(|p| is_file(tree, p).is_some()) {
            found.push(name.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::testing::add_file;

    #[test]
    fn nothing_in_a_bare_tree() {
        let mut t = Tree::in_temp().unwrap();
        add_file(&mut t, "etc/systemd/network/99-default.link", b"[Link]\n");
        add_file(
            &mut t,
            "etc/network/interfaces",
            b"auto lo\niface lo inet loopback\n",
        );
        assert!(network_config(&t).is_empty(), "{:?}", network_config(&t));
    }

    #[test]
    fn each_kind_is_named() {
        let mut t = Tree::in_temp().unwrap();
        add_file(&mut t, "etc/systemd/network/50-dhcp.network", b"[Match]\n");
        add_file(&mut t, "etc/network/interfaces", b"source interfaces.d/*\n");
        add_file(
            &mut t,
            "etc/network/interfaces.d/eth0",
            b"allow-hotplug eth0\niface eth0 inet dhcp\n  # iface x\n",
        );
        add_file(&mut t, "etc/netplan/50-cloud.yaml", b"network: {}\n");
        add_file(&mut t, "etc/sysconfig/network-scripts/ifcfg-lo", b"");
        add_file(&mut t, "etc/sysconfig/network-scripts/ifcfg-eth0", b"");
        add_file(&mut t, "usr/sbin/NetworkManager", b"");
        add_file(&mut t, "usr/bin/cloud-init", b"");
        assert_eq!(
            network_config(&t),
            [
                "systemd-networkd (/etc/systemd/network/50-dhcp.network)",
                "ifupdown (eth0)",
                "netplan (/etc/netplan/50-cloud.yaml)",
                "ifcfg (ifcfg-eth0)",
                "NetworkManager",
                "cloud-init",
            ]
        );
    }
}
