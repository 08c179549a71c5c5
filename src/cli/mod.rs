//! The command line: argument definitions (clap derive). The commands themselves live in
//! [`crate::pipeline`] and the modules it drives.

pub(crate) mod size;

pub(crate) use crate::output::hw::HwVersion;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// d2v's command line: a subcommand and the flags every subcommand takes.
#[derive(Debug, Parser)]
#[command(
    name = "d2v",
    version = env!("D2V_LONG_VERSION"),
    about = "Turn a container image into a bootable vSphere VM (OVA/VMDK) — no daemon, no root"
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Print more about what happens, and each stage's wall time (never secrets).
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,

    /// Machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Pull an image from a registry and write a VM (OVA by default).
    Pull(BuildArgs),
    /// Build a VM from any source: REF, docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, dir:DIR.
    Build(BuildArgs),
    /// Show an image's manifest, layers, config and a bootability report.
    Inspect {
        /// The image: REF, docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, dir:DIR.
        source: String,
        /// Report what the VM would run with the kernel of this image (as build's --kernel-from).
        #[arg(long, value_name = "SOURCE")]
        kernel_from: Option<String>,
        #[command(flatten)]
        src: SourceArgs,
    },
    /// Write the flattened filesystem as one deterministic PAX tar.
    Export {
        source: String,
        /// Output tar file, or `-` for stdout.
        #[arg(short, long)]
        output: String,
        #[command(flatten)]
        src: SourceArgs,
    },
    /// Print a shell completion script, e.g. `d2v completion bash > /etc/bash_completion.d/d2v`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Single pipeline stages on their own (benchmarks, debugging).
    #[command(hide = true, subcommand)]
    Debug(DebugCommand),
}

/// `d2v debug …`: single stages of the pipeline on their own (`src/pipeline/debug.rs`).
#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Write the flattened image as a bare ext4 filesystem image (auto size, no guest fixes).
    Ext4 {
        source: String,
        /// Output filesystem image.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        src: SourceArgs,
    },
    /// Assemble GRUB's BIOS core.img or UEFI BOOTX64.EFI from a module directory, as
    /// `grub-mkimage -O PLATFORM -d DIRECTORY -c CONFIG -p (hd0,gpt2)/grub MODULES` does.
    Grub {
        /// i386-pc or x86_64-efi.
        #[arg(short = 'O', long, value_parser = ["i386-pc", "x86_64-efi"])]
        format: String,
        /// GRUB's module directory, e.g. /usr/lib/grub/i386-pc.
        #[arg(short, long)]
        directory: PathBuf,
        /// The early config to embed (default: none).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Output image.
        #[arg(short, long)]
        output: PathBuf,
        /// Modules to build in (default: those d2v builds in, when the directory has them).
        modules: Vec<String>,
    },
    /// Convert a raw disk file into a streamOptimized VMDK.
    Vmdk {
        raw: PathBuf,
        /// Output VMDK.
        #[arg(short, long)]
        output: PathBuf,
        /// Deflate level for VMDK grains (0-9).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
        compression_level: u32,
    },
}

/// Where and how to read the image.
#[derive(Debug, Args, Clone)]
pub(crate) struct SourceArgs {
    /// Platform to pick from a multi-platform image (os/arch[/variant]); never the host's by default.
    #[arg(long, default_value = "linux/amd64")]
    pub(crate) platform: String,
    /// Blob cache directory for registry pulls; local images are read in place (default:
    /// $XDG_CACHE_HOME/d2v or ~/.cache/d2v; where that cannot be written, $TMPDIR/d2v-cache-UID).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Registry credentials USER:PASS.
    #[arg(long, value_name = "USER:PASS")]
    pub(crate) creds: Option<String>,
    /// Auth file in the containers/Docker config.json format (default: $REGISTRY_AUTH_FILE, ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub(crate) authfile: Option<PathBuf>,
    /// Directory of extra CA certificates (*.crt) for the registry's TLS.
    #[arg(long, value_name = "DIR")]
    pub(crate) cert_dir: Option<PathBuf>,
    /// Verify TLS certificates (plain HTTP is used only for loopback registries unless this is false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) tls_verify: bool,
    /// containers-registries.conf file with mirrors, rewritten, insecure or blocked
    /// registries (default: $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf
    /// or /etc/containers/registries.conf, plus their registries.conf.d drop-ins).
    #[arg(long, value_name = "FILE")]
    pub(crate) registries_conf: Option<PathBuf>,
    /// Give up on a registry that does not answer, or sends less than 1 KiB, in this many
    /// seconds (a stalled download is kept: the next run resumes it).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub(crate) registry_timeout: u64,
    /// The most a layer may decompress to, as a multiple of its compressed size (a layer of
    /// up to 1 MiB always passes); a layer past it is refused as a decompression bomb.
    #[arg(long, value_name = "RATIO", default_value_t = crate::source::DEFAULT_MAX_EXPANSION,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_expansion: u64,
    /// The most all layers together may decompress to, e.g. 20G (default: no limit; the
    /// --max-expansion ratio bounds each layer).
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub(crate) max_image_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Ova,
    Ovf,
    Vmdk,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Firmware {
    Efi,
    Bios,
}

/// `--secure-boot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SecureBoot {
    /// On when the image has a complete signed chain (shim, GRUB, kernels) and --firmware efi.
    Auto,
    /// On; an error when the chain is incomplete or the firmware is BIOS.
    On,
    /// d2v's own (unsigned) GRUB, Secure Boot off.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Controller {
    Pvscsi,
    Lsilogic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GrubConfig {
    /// Keep the image's own /boot/grub/grub.cfg if it has one, else generate.
    Auto,
    /// Always generate grub.cfg.
    Generate,
}

/// `--restart`: what d2v's init does when the app exits (as `docker run --restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Restart {
    /// Power the VM off.
    No,
    /// Start the app again when it fails (non-zero status or a signal).
    OnFailure,
    /// Start the app again whenever it exits.
    Always,
}

/// `--network-config`: how d2v's init configures the first Ethernet interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum NetworkConfig {
    /// DHCPv4, the lease's DNS servers in /etc/resolv.conf.
    Dhcp,
    /// --ip, --gateway, --dns (implied by --ip).
    Static,
    /// Only the loopback interface.
    None,
}

fn size_arg(s: &str) -> Result<u64, String> {
    size::parse_size(s)
}

/// `--os-type`: a guest ID as vSphere spells them (`debian11_64Guest`, `other5xLinux64Guest`).
fn os_type_arg(s: &str) -> Result<String, String> {
    let word = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if word && s.ends_with("Guest") {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a vSphere guest ID (VirtualMachineGuestOsIdentifier) such as \
             debian11_64Guest, ubuntu64Guest or other5xLinux64Guest"
        ))
    }
}

/// `--hw-version`: the versions vSphere has, each with the ESXi release it needs in `--help`.
impl ValueEnum for HwVersion {
    fn value_variants<'a>() -> &'a [Self] {
        HwVersion::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.arg()).help(self.esxi_and_later()))
    }
}

#[derive(Debug, Args, Clone)]
pub(crate) struct BuildArgs {
    /// The image to convert.
    pub(crate) source: String,
    /// Output path (default: NAME.ova, NAME.vmdk, NAME.raw or the directory NAME for ovf).
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Ova)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) src: SourceArgs,

    /// VM name (default: from the image name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Guest hostname written to /etc/hostname (default: the VM name).
    #[arg(long)]
    pub(crate) hostname: Option<String>,

    /// Total disk size (default: automatic).
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub(crate) disk_size: Option<u64>,
    /// EFI System Partition size, mounted at /boot.
    #[arg(long, value_parser = size_arg, value_name = "SIZE", default_value = "256M")]
    pub(crate) boot_size: u64,
    /// Root filesystem size (default: content plus --root-free).
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub(crate) root_size: Option<u64>,
    /// Free space to leave on an automatically sized root filesystem.
    #[arg(long, value_parser = size_arg, value_name = "SIZE", default_value = "1G")]
    pub(crate) root_free: u64,
    /// Root filesystem UUID (default: derived from the image digest).
    #[arg(long)]
    pub(crate) fs_uuid: Option<String>,

    /// Extra kernel command-line argument (repeatable).
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub(crate) kernel_args: Vec<String>,
    /// Keep the image's grub.cfg (auto) or always generate one.
    #[arg(long, value_enum, default_value_t = GrubConfig::Auto)]
    pub(crate) grub_config: GrubConfig,

    /// Firmware the VM boots with (the disk boots with both).
    #[arg(long, value_enum, default_value_t = Firmware::Efi)]
    pub(crate) firmware: Firmware,
    /// UEFI Secure Boot with the image's signed boot chain (shim, signed GRUB and kernel).
    #[arg(long, value_enum, default_value_t = SecureBoot::Auto)]
    pub(crate) secure_boot: SecureBoot,
    /// Virtual hardware version (vmx-NN): the oldest ESXi the VM runs on, and which guest IDs
    /// it may declare.
    #[arg(long, value_enum, value_name = "N", default_value = "13")]
    pub(crate) hw_version: HwVersion,
    #[arg(long, default_value_t = 2)]
    pub(crate) cpus: u32,
    /// Memory (e.g. 2G, 512M).
    #[arg(long, value_parser = size_arg, value_name = "SIZE", default_value = "2G")]
    pub(crate) memory: u64,
    #[arg(long, value_enum, default_value_t = Controller::Pvscsi)]
    pub(crate) controller: Controller,
    /// Network the NIC connects to.
    #[arg(long, default_value = "VM Network")]
    pub(crate) network: String,
    /// vSphere guest ID (default: from the image's /etc/os-release and kernel, the newest
    /// that --hw-version knows, e.g. debian11_64Guest for 17 to 20, debian12_64Guest for 21).
    #[arg(long, value_parser = os_type_arg, value_name = "GUEST_ID")]
    pub(crate) os_type: Option<String>,
    /// Deflate level for VMDK grains (0-9).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub(crate) compression_level: u32,

    #[command(flatten)]
    pub(crate) deploy: DeployArgs,

    #[command(flatten)]
    pub(crate) app: AppArgs,
}

/// Deploy-time configuration: OVF properties vSphere's deploy wizard asks for and the guest
/// reads from its OVF environment (`src/output/properties.rs`).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct DeployArgs {
    /// A property the deploy wizard shows, VALUE its default (repeatable, kept in order); the
    /// guest reads it from the OVF environment (an ISO's ovf-env.xml or guestinfo.ovfEnv).
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub(crate) properties: Vec<String>,
    /// The label the deploy wizard shows for property KEY (repeatable).
    #[arg(long = "property-label", value_name = "KEY=LABEL")]
    pub(crate) property_labels: Vec<String>,
    /// The description the deploy wizard shows under property KEY (repeatable).
    #[arg(long = "property-description", value_name = "KEY=TEXT")]
    pub(crate) property_descriptions: Vec<String>,
    /// Add the properties cloud-init's OVF data source reads: instance-id, hostname,
    /// public-keys, user-data (base64), seedfrom, password (a --property overrides a default).
    #[arg(long)]
    pub(crate) cloud_init: bool,
}

impl AppArgs {
    /// The defaults, with `--kernel-from` (for `inspect`, which reports what `build` would do).
    pub(crate) fn defaults(kernel_from: Option<&str>) -> AppArgs {
        let mut argv = vec!["d2v", "build", "x"];
        if let Some(k) = kernel_from {
            argv.extend(["--kernel-from", k]);
        }
        match Cli::parse_from(argv).command {
            Command::Build(b) => b.app,
            _ => unreachable!("parsed a build command"),
        }
    }
}

/// How an app image (one without an init system) becomes a VM: the kernel's source and what
/// d2v's init does in the guest.
#[derive(Debug, Args, Clone)]
pub(crate) struct AppArgs {
    /// Take the kernel, its modules and GRUB's modules from this image (any source d2v reads:
    /// a Debian image with linux-image-cloud-amd64, or a LinuxKit kernel image).
    #[arg(long, value_name = "SOURCE")]
    pub(crate) kernel_from: Option<String>,
    /// App images: seconds between the stop signal (SIGTERM, or the image's StopSignal) and
    /// SIGKILL when the VM is shut down.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub(crate) stop_timeout: u64,
    /// App images: what d2v's init does when the app exits.
    #[arg(long, value_enum, default_value_t = Restart::No)]
    pub(crate) restart: Restart,
    /// App images: the network d2v's init configures (recorded on the kernel command line).
    #[arg(long, value_enum, default_value_t = NetworkConfig::Dhcp)]
    pub(crate) network_config: NetworkConfig,
    /// App images: static address of the first Ethernet interface (implies --network-config static).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub(crate) ip: Option<String>,
    /// App images: default gateway with --ip.
    #[arg(long, value_name = "IP")]
    pub(crate) gateway: Option<String>,
    /// App images: DNS server with --ip (repeatable).
    #[arg(long, value_name = "IP")]
    pub(crate) dns: Vec<String>,
    /// App images: seconds to wait for the network before starting the app anyway.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub(crate) network_timeout: u64,
}
