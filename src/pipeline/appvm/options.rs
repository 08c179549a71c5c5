//! The options of d2v's init as the build records them: the kernel command-line words (the
//! network), the [`AppOptions`] of the resolved config, and the options an image's own init
//! ignores.

use std::net::{IpAddr, Ipv4Addr};

use super::super::Error;
use crate::cli::{AppArgs, NetworkConfig, Restart};
use crate::guest::app::AppOptions;
use crate::init::config::{self, AppConfig};

/// The kernel command-line words for d2v's init: `init=`, and the network
/// ([`crate::init::config`] documents them).
pub(in crate::pipeline) fn init_kernel_args(app: &AppArgs) -> Result<Vec<String>, Error> {
    let mut words = vec![format!("init={}", config::INIT_PATH)];
    words.extend(network_words(app)?);
    Ok(words)
}

/// `d2v.network=…` and the static address words, checked.
fn network_words(app: &AppArgs) -> Result<Vec<String>, Error> {
    let usage = |m: String| Err(Error::Usage(m));
    let mode =
        match (app.network_config, &app.ip) {
            (NetworkConfig::None, Some(_)) => {
                return usage("--ip with --network-config none: give one or the other".into())
            }
            (NetworkConfig::Static, None) => return usage(
                "--network-config static needs --ip ADDR/PREFIX (and usually --gateway and --dns)"
                    .into(),
            ),
            (_, Some(_)) => "static",
            (NetworkConfig::Dhcp, None) => "dhcp",
            (NetworkConfig::None, None) => "none",
        };
    if mode != "static" && (app.gateway.is_some() || !app.dns.is_empty()) {
        return usage("--gateway and --dns go with --ip ADDR/PREFIX (a static address)".into());
    }
    let mut words = vec![format!("d2v.network={mode}")];
    if let Some(ip) = &app.ip {
        let ok = ip.split_once('/').and_then(|(a, p)| {
            Some((
                a.parse::<Ipv4Addr>().ok()?,
                p.parse::<u8>().ok().filter(|p| *p <= 32)?,
            ))
        });
        if ok.is_none() {
            return usage(format!(
                "--ip {ip:?} is not an IPv4 address with a prefix length, e.g. 192.168.10.5/24"
            ));
        }
        words.push(format!("d2v.ip={ip}"));
    }
    if let Some(gw) = &app.gateway {
        if gw.parse::<Ipv4Addr>().is_err() {
            return usage(format!(
                "--gateway {gw:?} is not an IPv4 address, e.g. 192.168.10.1"
            ));
        }
        words.push(format!("d2v.gateway={gw}"));
    }
    if !app.dns.is_empty() {
        if let Some(bad) = app.dns.iter().find(|d| d.parse::<IpAddr>().is_err()) {
            return usage(format!(
                "--dns {bad:?} is not an IP address, e.g. 192.168.10.53"
            ));
        }
        words.push(format!("d2v.dns={}", app.dns.join(",")));
    }
    Ok(words)
}

/// The [`crate::guest::app::AppOptions`] from the command line.
pub(in crate::pipeline) fn app_options(app: &AppArgs, hostname: &str) -> AppOptions {
    AppOptions {
        hostname: hostname.to_string(),
        stop_timeout_secs: app.stop_timeout,
        restart: match app.restart {
            Restart::No => config::Restart::No,
            Restart::OnFailure => config::Restart::OnFailure,
            Restart::Always => config::Restart::Always,
        },
        network_timeout_secs: app.network_timeout,
    }
}

/// Options that only d2v's init reads, given with an image that keeps its own init.
pub(in crate::pipeline) fn ignored_app_options(app: &AppArgs) -> Vec<&'static str> {
    let mut out = Vec::new();
    if app.stop_timeout != 10 {
        out.push("--stop-timeout");
    }
    if app.restart != Restart::No {
        out.push("--restart");
    }
    if app.network_config != NetworkConfig::Dhcp || app.ip.is_some() {
        out.push("--network-config/--ip");
    }
    out
}

/// One line about what d2v's init will run, for the log.
pub(in crate::pipeline) fn describe(app: &AppConfig) -> String {
    format!(
        "d2v's init will run {:?} as {}:{} in {}",
        app.args, app.uid, app.gid, app.working_dir
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn app(extra: &[&str]) -> AppArgs {
        let mut argv = vec!["d2v", "build", "x"];
        argv.extend(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Build(b) => b.app,
            _ => unreachable!(),
        }
    }

    #[test]
    fn network_words_by_option() {
        assert_eq!(network_words(&app(&[])).unwrap(), ["d2v.network=dhcp"]);
        assert_eq!(
            network_words(&app(&["--network-config", "none"])).unwrap(),
            ["d2v.network=none"]
        );
        assert_eq!(
            network_words(&app(&[
                "--ip",
                "10.0.0.5/24",
                "--gateway",
                "10.0.0.1",
                "--dns",
                "10.0.0.53",
                "--dns",
                "1.1.1.1"
            ]))
            .unwrap(),
            [
                "d2v.network=static",
                "d2v.ip=10.0.0.5/24",
                "d2v.gateway=10.0.0.1",
                "d2v.dns=10.0.0.53,1.1.1.1"
            ]
        );
        for bad in [
            &["--ip", "10.0.0.5"][..],
            &["--ip", "10.0.0.5/33"],
            &["--ip", "10.0.0.5/24", "--gateway", "x"],
            &["--ip", "10.0.0.5/24", "--network-config", "none"],
            &["--network-config", "static"],
            &["--gateway", "10.0.0.1"],
        ] {
            assert!(network_words(&app(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn init_words_come_first() {
        let w = init_kernel_args(&app(&[])).unwrap();
        assert_eq!(w[0], "init=/.d2v/init");
    }
}
