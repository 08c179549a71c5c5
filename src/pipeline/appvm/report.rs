//! What the VM runs, as `inspect` and `build --json` report it, and the drivers of the VM's
//! devices in its kernel.

use super::{controller_driver, VmPlan};
use crate::cli::Controller;
use crate::init::config;
use crate::kernel::modules::ModuleIndex;
use crate::kernel::source::Shape;

/// A driver the VM needs and where the kernel has it.
#[derive(Debug, Clone, serde::Serialize)]
pub(in crate::pipeline) struct Driver {
    /// What it drives: `disk controller`, `root filesystem`, `network adapter`, `power button`.
    pub(super) role: &'static str,
    /// The module name.
    pub(super) name: &'static str,
    /// `built-in`, `module` or `missing`.
    pub(super) status: &'static str,
}

/// The drivers of the VM's devices (the OVF's controller, ext4, VMXNET3, the ACPI power
/// button) and where kernel `ix` has them.
pub(super) fn drivers(ix: &ModuleIndex, controller: Controller) -> Vec<Driver> {
    [
        ("disk controller", controller_driver(controller)),
        ("disk", "sd_mod"),
        ("root filesystem", "ext4"),
        ("network adapter", "vmxnet3"),
        ("power button", "button"),
    ]
    .into_iter()
    .map(|(role, name)| Driver {
        role,
        name,
        status: if ix.is_builtin(name) {
            "built-in"
        } else if ix.has(name) {
            "module"
        } else {
            "missing"
        },
    })
    .collect()
}

impl VmPlan {
    /// What the VM will run, for `inspect --json` and `build --json`.
    pub(in crate::pipeline) fn json(&self, init_system: &str) -> serde_json::Value {
        serde_json::json!({
            "kernel": self.kernel.as_ref().map(|k| serde_json::json!({
                "version": k.version,
                "version_string": k.version_string,
                "from": k.source,
                "shape": match k.shape { Shape::Distribution => "distribution", Shape::LinuxKit => "linuxkit" },
                "initramfs": if k.own_initramfs { "d2v" } else { "kernel image" },
                "replaced": k.graft.replaced,
            })),
            "init": if self.app.is_some() { "d2v" } else { init_system },
            "app": self.app,
            "kernel_args": self.kernel_args,
            "drivers": self.drivers,
            "notes": self.lines,
        })
    }

    /// The same as text lines.
    pub(in crate::pipeline) fn text(&self, init_system: &str) -> String {
        let mut out = String::from("VM:\n");
        if let Some(k) = &self.kernel {
            let initramfs = if k.own_initramfs {
                "d2v writes the initramfs"
            } else {
                "its initramfs"
            };
            out += &format!(
                "  kernel:      {} (from {}; {initramfs})\n",
                k.version, k.source
            );
        }
        match &self.app {
            Some(a) => {
                out += &format!("  init:        d2v's init ({})\n", config::INIT_PATH);
                out += &format!("  command:     {:?}\n", a.args);
                let groups: Vec<String> = a.groups.iter().map(u32::to_string).collect();
                out += &format!(
                    "  user:        uid {} gid {} groups [{}]\n",
                    a.uid,
                    a.gid,
                    groups.join(",")
                );
                out += &format!("  working dir: {}\n", a.working_dir);
                out += &format!("  environment: {}\n", a.env.join(" "));
                out += &format!("  ports:       {}\n", a.exposed_ports.join(", "));
                out += &format!("  kernel args: {}\n", self.kernel_args.join(" "));
            }
            None => out += &format!("  init:        the image's own ({init_system})\n"),
        }
        for d in &self.drivers {
            out += &format!("  driver:      {} {} ({})\n", d.role, d.name, d.status);
        }
        out
    }
}
