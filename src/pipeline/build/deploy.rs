//! `--property`, `--property-label`, `--property-description`, `--cloud-init`: the OVF's
//! deploy-time properties, checked before the image is read, and whether the guest reads them.

use super::Error;
use crate::cli::{BuildArgs, DeployArgs};
use crate::inspect::ovfenv::OvfEnvReaders;
use crate::output::properties::{self, Property, PropertyArgs};

/// The properties of the descriptor: cloud-init's (with `hostname` as their default hostname
/// and instance ID) when asked for, then the user's.
pub(super) fn deploy_properties(d: &DeployArgs, hostname: &str) -> Result<Vec<Property>, Error> {
    let defaults = if d.cloud_init {
        properties::cloud_init(hostname, &format!("iid-{hostname}"))
    } else {
        Vec::new()
    };
    let args = PropertyArgs {
        properties: &d.properties,
        labels: &d.property_labels,
        descriptions: &d.property_descriptions,
    };
    Ok(properties::assemble(defaults, &args)?)
}

/// Before anything is read: the properties are well-formed, and there is an OVF to hold them.
pub(super) fn check_deploy_args(args: &BuildArgs) -> Result<(), Error> {
    // A label or description without its property is refused here already.
    let props = deploy_properties(&args.deploy, "d2v")?;
    let format = super::output_format(args.format);
    if !props.is_empty() && !format.has_descriptor() {
        return Err(Error::Usage(format!(
            "--property and --cloud-init describe the VM in its OVF descriptor, which --format {} \
             does not write: use --format ova or ovf",
            format.name()
        )));
    }
    Ok(())
}

/// The warning for properties nothing in the guest reads (`None`: no properties, or a reader).
pub(super) fn reader_warning(props: &[Property], env: &OvfEnvReaders) -> Option<String> {
    if props.is_empty() || !env.readers().is_empty() {
        return None;
    }
    let why = match &env.cloud_init {
        Some(_) => "cloud-init's datasource_list leaves out its OVF data source",
        None => "the image has neither cloud-init nor open-vm-tools' vmware-rpctool",
    };
    Some(format!(
        "OVF properties are set (--property/--cloud-init) but nothing in the guest reads them: \
         {why}; install cloud-init (with OVF in its data sources) or read guestinfo.ovfEnv with \
         vmware-rpctool"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_only_when_set_and_unread() {
        let p = vec![Property::new("k", "v")];
        let none = OvfEnvReaders::default();
        assert!(reader_warning(&[], &none).is_none());
        let w = reader_warning(&p, &none).unwrap();
        assert!(w.contains("neither cloud-init"), "{w}");
        let ci = OvfEnvReaders {
            cloud_init: Some("/usr/bin/cloud-init".into()),
            ..Default::default()
        };
        assert!(reader_warning(&p, &ci).is_none());
        let no_ovf = OvfEnvReaders {
            datasource_list: Some(vec!["NoCloud".into()]),
            ..ci
        };
        assert!(reader_warning(&p, &no_ovf)
            .unwrap()
            .contains("datasource_list"));
    }
}
