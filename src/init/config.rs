//! What the build tells d2v's init in the guest: the files it puts there and the kernel
//! command-line words the init reads. Written once at build time, read at every boot.
//!
//! Files in the guest's root filesystem:
//! - [`INIT_PATH`]: d2v's own static executable; the kernel starts it as PID 1
//!   (`init=/.d2v/init` on the command line).
//! - [`CONFIG_PATH`]: an [`AppConfig`] as JSON: what to run and how.
//! - [`MODULES_PATH`]: the kernel modules to load, in order (dependencies first), one
//!   absolute guest path per line (`/usr/lib/modules/VER/kernel/…/vmxnet3.ko`).
//!
//! In the initramfs d2v writes: `/init` (the same executable), [`MODULES_PATH`] and the
//! module files at the same absolute paths. The early init loads them, mounts the root
//! named by `root=PARTUUID=…` and starts `init=` (else `/sbin/init`) in it.
//!
//! Kernel command line (the network is set there so that an administrator can change it in
//! GRUB's editor or the VM's boot options without rebuilding):
//! - `d2v.network=dhcp|static|none` (absent: `dhcp`),
//! - `d2v.ip=ADDR/PREFIX`, `d2v.gateway=IP`, `d2v.dns=IP[,IP…]` (static),
//! - `root=PARTUUID=GUID` and `init=PATH` as the kernel has them.

use serde::{Deserialize, Serialize};

/// d2v's init in the guest.
pub const INIT_PATH: &str = "/.d2v/init";
/// The [`AppConfig`] in the guest.
pub const CONFIG_PATH: &str = "/.d2v/config.json";
/// The modules to load, in order.
pub const MODULES_PATH: &str = "/.d2v/modules";
/// The `PATH` a container runtime gives a process whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to do when the app exits (`--restart`, as `docker run --restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Power the VM off.
    #[default]
    No,
    /// Start the app again when it exited with a non-zero status or by a signal.
    OnFailure,
    /// Start the app again whenever it exits (unless the VM is being stopped).
    Always,
}

/// What d2v's init runs and how: the image config resolved at build time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConfig {
    /// `Entrypoint` + `Cmd` by the OCI image spec's rules; never empty. A first word without
    /// a `/` is looked up in the `PATH` of [`AppConfig::env`] inside the guest, as runc does.
    pub args: Vec<String>,
    /// The process environment, `KEY=VALUE`: the image's `Env` over [`DEFAULT_PATH`], with
    /// `HOME` from `/etc/passwd` when the image sets none.
    pub env: Vec<String>,
    /// Absolute; `/` when the image sets none.
    pub working_dir: String,
    /// From the image's `User`, resolved in its `/etc/passwd` and `/etc/group`.
    pub uid: u32,
    /// Primary group: from `User` when it names one, else the user's in `/etc/passwd`.
    pub gid: u32,
    /// Supplementary groups (the user's memberships in `/etc/group`), without `gid`.
    pub groups: Vec<u32>,
    /// Set with `sethostname` at boot.
    pub hostname: String,
    /// Sent to the app to stop it (the image's `StopSignal`, else SIGTERM), as a number.
    pub stop_signal: i32,
    /// Seconds between [`AppConfig::stop_signal`] and SIGKILL (`--stop-timeout`).
    pub stop_timeout_secs: u64,
    /// What to do when the app exits.
    pub restart: Restart,
    /// Seconds to wait for the network (DHCP lease or link) before starting the app anyway.
    pub network_timeout_secs: u64,
    /// `ExposedPorts` (`8080/tcp`), reported on the console.
    pub exposed_ports: Vec<String>,
}
