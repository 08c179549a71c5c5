//! The VM is x86-64 (until d2v builds arm64 VMs for ESXi on Arm): an image for another
//! machine is refused before anything is written, naming each thing that says so — the
//! config's `architecture`, the ELF machine of the init the kernel would start
//! (`/sbin/init`, symlinks followed in the image), the kernel's header (an arm64 or RISC-V
//! `Image`, an ELF `vmlinux`).
//!
//! GRUB needs no check here: d2v reads only the `i386-pc` and `x86_64-efi` module directories
//! (an arm64 image has `arm64-efi`, which is never used), and the image assembler refuses a
//! `kernel.img` of another ELF machine (`EM_386`, `EM_X86_64`).

use super::Error;
use crate::kernel::{self, bzimage, KernelError};
use crate::source::Image;
use crate::tree::Tree;

/// Fails with [`Error::ForeignArchitecture`] when `image` or its flattened `tree` is for
/// another machine than x86-64.
pub(super) fn check(image: &Image, tree: &Tree) -> Result<(), Error> {
    let found = foreign(image, tree);
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::ForeignArchitecture {
        reference: image.reference.clone(),
        found: found.join(", "),
    })
}

/// What says the image is for another machine, one phrase each.
fn foreign(image: &Image, tree: &Tree) -> Vec<String> {
    let mut found = Vec::new();
    let arch = &image.config.architecture;
    if !arch.is_empty() && arch != "amd64" {
        found.push(format!("its config's architecture is {arch}"));
    }
    if let Some((path, _)) = crate::inspect::init_system(tree).1 {
        let machine = tree
            .read_head(path.as_bytes(), 20)
            .as_deref()
            .and_then(crate::elf::machine);
        if let Some(m) = machine.filter(|m| *m != crate::elf::EM_X86_64) {
            let name = crate::elf::machine_name(m);
            found.push(format!("{path} is an ELF executable for {name}"));
        }
    }
    if let Err(KernelError::NotX86 { path, .. }) = kernel::source::find(tree) {
        if let Some(m) = tree
            .read_head(path.as_bytes(), 0x40)
            .as_deref()
            .and_then(bzimage::foreign_machine)
        {
            found.push(format!("the kernel {path} is for {m}"));
        }
    }
    found
}
