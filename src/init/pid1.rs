//! Mode 2: d2v's init as PID 1 in the guest's root (started as [`super::config::INIT_PATH`]
//! by the early init, by Debian's initramfs, or by the kernel itself): the file systems, the
//! modules, the hostname and the network, then the app under [`super::supervise`].

use std::time::Duration;

use super::cmdline::{Cmdline, Network};
use super::config::{AppConfig, CONFIG_PATH, MODULES_PATH};
use super::console::say;
use super::{modules, mount, net, power, supervise};

/// The configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {CONFIG_PATH}: {0}")]
    Read(#[source] std::io::Error),
    /// It is not an [`AppConfig`].
    #[error("{CONFIG_PATH} is not a valid configuration: {0}")]
    Parse(#[source] serde_json::Error),
    /// `args` is empty.
    #[error("{CONFIG_PATH}: args is empty")]
    NoArgs,
}

/// Reads and checks [`CONFIG_PATH`].
pub fn read_config(text: Result<String, std::io::Error>) -> Result<AppConfig, ConfigError> {
    let cfg: AppConfig =
        serde_json::from_str(&text.map_err(ConfigError::Read)?).map_err(ConfigError::Parse)?;
    if cfg.args.is_empty() {
        return Err(ConfigError::NoArgs);
    }
    Ok(cfg)
}

/// Runs init; never returns.
pub fn run() -> ! {
    power::block_signals();
    mount::mount_basics();
    super::ensure_stdio();
    if let Err(e) = mount::remount_root(false) {
        say(format_args!("remounting / read-write: {e}"));
    }
    mount::mount_container_fs();
    power::ctrl_alt_del_to_sigint();
    modules::load_listed(MODULES_PATH);
    let cfg = match read_config(std::fs::read_to_string(CONFIG_PATH)) {
        Ok(cfg) => cfg,
        Err(e) => {
            say(e);
            power::fatal()
        }
    };
    set_hostname(&cfg.hostname);
    net::loopback_up();
    let network = Cmdline::read().network().unwrap_or_else(|e| {
        say(format_args!("{e}; using dhcp"));
        Network::Dhcp
    });
    net::setup(
        &network,
        Duration::from_secs(cfg.network_timeout_secs),
        &cfg.hostname,
    );
    supervise::run(&cfg)
}

fn set_hostname(name: &str) {
    if name.is_empty() {
        return;
    }
    // SAFETY: a pointer and length of a live string.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
        say(format_args!(
            "sethostname {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_say_what_is_wrong() {
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = read_config(Err(missing)).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read /.d2v/config.json: "),
            "{e}"
        );
        let e = read_config(Ok("{}".into())).unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e}");
        let ok = r#"{"args":[],"env":[],"working_dir":"/","uid":0,"gid":0,"groups":[],
            "hostname":"h","stop_signal":15,"stop_timeout_secs":10,"restart":"no",
            "network_timeout_secs":30,"exposed_ports":[]}"#;
        assert!(matches!(
            read_config(Ok(ok.into())),
            Err(ConfigError::NoArgs)
        ));
    }
}
