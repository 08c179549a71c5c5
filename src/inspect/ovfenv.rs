//! What in the guest reads the OVF environment, where deploy-time properties (`--property`,
//! `--cloud-init`) arrive: cloud-init with its OVF data source (which reads `ovf-env.xml` from
//! the CD-ROM vSphere attaches, or `guestinfo.ovfEnv` through `vmware-rpctool`), and
//! open-vm-tools' `vmware-rpctool` itself (`vmware-rpctool "info-get guestinfo.ovfEnv"` in a
//! script of the image). cloud-init's VMware data source reads other guestinfo variables
//! (`guestinfo.metadata`, `guestinfo.userdata`), not the OVF properties: it is reported, not
//! counted as a reader.

use super::{dir_names, is_file};
use crate::tree::Tree;
use serde::Serialize;

/// The readers of the OVF environment in an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OvfEnvReaders {
    /// cloud-init's executable, if installed.
    pub cloud_init: Option<String>,
    /// The `datasource_list` cloud-init's configuration sets (`/etc/cloud/cloud.cfg`, then
    /// `/etc/cloud/cloud.cfg.d/*.cfg` in name order, the last one setting it wins); `None`:
    /// cloud-init's default list, which has `OVF` and `VMware`.
    pub datasource_list: Option<Vec<String>>,
    /// open-vm-tools' `vmware-rpctool`, if installed.
    pub vmware_rpctool: Option<String>,
}

impl OvfEnvReaders {
    /// Whether cloud-init would run its OVF data source.
    pub fn cloud_init_ovf(&self) -> bool {
        self.cloud_init.is_some() && self.datasource_allowed("OVF")
    }

    /// Whether cloud-init's configuration lets data source `name` run.
    pub fn datasource_allowed(&self, name: &str) -> bool {
        self.datasource_list
            .as_ref()
            .is_none_or(|l| l.iter().any(|d| d == name))
    }

    /// What reads the properties, for messages; empty: nothing does.
    pub fn readers(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.cloud_init_ovf() {
            found.push("cloud-init (OVF data source)".to_string());
        }
        if let Some(p) = &self.vmware_rpctool {
            found.push(format!("vmware-rpctool ({p}, guestinfo.ovfEnv)"));
        }
        found
    }
}

/// Finds cloud-init, its data source list and `vmware-rpctool` in `tree`.
pub fn readers(tree: &Tree) -> OvfEnvReaders {
    let mut files = vec!["/etc/cloud/cloud.cfg".to_string()];
    files.extend(
        dir_names(tree, "/etc/cloud/cloud.cfg.d")
            .into_iter()
            .filter(|n| n.ends_with(".cfg"))
            .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")),
    );
    let datasource_list = files
        .iter()
        .rev()
        .filter_map(|f| tree.read_text(f.as_bytes(), 1 << 20))
        .find_map(|t| datasource_list(&t));
    OvfEnvReaders {
        cloud_init: ["/usr/bin/cloud-init", "/usr/local/bin/cloud-init"]
            .iter()
            .find_map(|p| is_file(tree, p)),
        datasource_list,
        vmware_rpctool: ["/usr/bin/vmware-rpctool", "/usr/sbin/vmware-rpctool"]
            .iter()
            .find_map(|p| is_file(tree, p)),
    }
}

/// The top-level `datasource_list` of a cloud-init YAML file, in the two forms its files use:
/// a flow sequence (`datasource_list: [ NoCloud, OVF ]`, possibly over several lines) or a
/// block sequence (`- OVF` lines below it). `None`: the file does not set it.
pub fn datasource_list(text: &str) -> Option<Vec<String>> {
    let uncomment = |l: &str| l.split('#').next().unwrap_or("").to_string();
    let mut lines = text.lines().map(uncomment);
    let rest = lines.find_map(|l| l.strip_prefix("datasource_list:").map(str::to_string))?;
    let rest = rest.trim();
    let items: Vec<String> = if let Some(flow) = rest.strip_prefix('[') {
        let mut flow = flow.to_string();
        while !flow.contains(']') {
            flow.push_str(&lines.next()?);
        }
        let flow = flow.split(']').next().unwrap_or("");
        flow.split(',').map(str::to_string).collect()
    } else if rest.is_empty() {
        lines
            .map_while(|l| {
                let t = l.trim();
                (t.is_empty() || t.starts_with('-') && l.starts_with([' ', '-']))
                    .then(|| t.trim_start_matches('-').to_string())
            })
            .collect()
    } else {
        vec![rest.to_string()]
    };
    Some(
        items
            .iter()
            .map(|i| i.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .filter(|i| !i.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasource_lists_in_both_yaml_forms() {
        assert_eq!(datasource_list("users: [default]\n"), None);
        assert_eq!(
            datasource_list("a: 1\ndatasource_list: [ NoCloud, 'OVF', \"None\" ] # comment\n"),
            Some(vec!["NoCloud".into(), "OVF".into(), "None".into()])
        );
        assert_eq!(
            datasource_list("datasource_list: [ NoCloud,\n  VMware,\n  None ]\nx: 1\n"),
            Some(vec!["NoCloud".into(), "VMware".into(), "None".into()])
        );
        assert_eq!(
            datasource_list("datasource_list:\n  - Ec2\n  # old\n  - OVF\nother: 2\n- x\n"),
            Some(vec!["Ec2".into(), "OVF".into()])
        );
        assert_eq!(
            datasource_list("# datasource_list: [ OVF ]\n"),
            None,
            "a commented-out list sets nothing"
        );
    }

    #[test]
    fn readers_follow_the_data_source_list() {
        let mut r = OvfEnvReaders {
            cloud_init: Some("/usr/bin/cloud-init".into()),
            ..Default::default()
        };
        assert_eq!(r.readers(), ["cloud-init (OVF data source)"]);
        r.datasource_list = Some(vec!["NoCloud".into(), "VMware".into()]);
        assert!(
            r.readers().is_empty(),
            "VMware's data source does not read OVF properties"
        );
        r.vmware_rpctool = Some("/usr/bin/vmware-rpctool".into());
        assert_eq!(r.readers().len(), 1);
        assert!(OvfEnvReaders::default().readers().is_empty());
    }
}
