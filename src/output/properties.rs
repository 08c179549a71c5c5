//! Deploy-time configuration: the user-configurable `ovf:Property`s of the OVF's
//! `ProductSection` (`--property KEY=VALUE`, `--cloud-init`). vSphere's deploy wizard shows
//! each with its label and description and lets the user change its value; the powered-on VM
//! gets the values as the OVF environment (DSP0243 `Environment`, `ovf-env.xml`) through the
//! transports the descriptor declares: a CD-ROM (`iso`) and the VMware guestinfo variable
//! `guestinfo.ovfEnv` (`com.vmware.guestInfo`).

use crate::output::ovf::xml_escape;
use std::fmt::Write as _;

/// The transports the descriptor declares when it has properties: the two vSphere offers.
pub const TRANSPORTS: &str = "iso com.vmware.guestInfo";

/// One `ovf:Property`: a string the user may set at deployment, `value` its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// `ovf:key`: the name the guest reads (see [`check_key`]).
    pub key: String,
    /// `ovf:value`: the default value.
    pub value: String,
    /// `Label`: what the deploy wizard shows as the field's name.
    pub label: Option<String>,
    /// `Description`: the help text under it.
    pub description: Option<String>,
    /// `ovf:password`: the wizard hides what is typed.
    pub password: bool,
}

impl Property {
    /// A property without label or description.
    pub fn new(key: &str, value: &str) -> Property {
        Property {
            key: key.to_string(),
            value: value.to_string(),
            label: None,
            description: None,
            password: false,
        }
    }

    fn labelled(key: &str, value: &str, label: &str, description: &str) -> Property {
        Property {
            label: Some(label.to_string()),
            description: Some(description.to_string()),
            ..Property::new(key, value)
        }
    }
}

/// A property the command line cannot have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// Not `KEY=VALUE`.
    #[error("--{option} {arg:?}: expected KEY=VALUE, e.g. --{option} hostname=web01")]
    NotKeyValue {
        /// `property`, `property-label` or `property-description`.
        option: &'static str,
        /// The argument as given.
        arg: String,
    },
    /// An empty key.
    #[error("--{option} {arg:?}: the key is empty")]
    EmptyKey {
        /// The option.
        option: &'static str,
        /// The argument as given.
        arg: String,
    },
    /// A key with characters OVF or the guest's readers do not take.
    #[error(
        "property key {key:?}: use ASCII letters, digits, '-' and '_', starting with a letter \
         or '_' (OVF keys may not hold '.' or ':')"
    )]
    InvalidKey {
        /// The key.
        key: String,
    },
    /// The same key given twice with `--property`.
    #[error("property {key:?} is given twice: give each --property once")]
    Duplicate {
        /// The key.
        key: String,
    },
    /// A label or description for a key that is no property.
    #[error("--{option} {key}=…: there is no property {key:?} (add --property {key}=VALUE or --cloud-init)")]
    UnknownKey {
        /// `property-label` or `property-description`.
        option: &'static str,
        /// The key.
        key: String,
    },
}

/// Checks a key: DSP0243 forbids `.` and `:` (they join class, key and instance); d2v also
/// keeps to letters, digits, `-` and `_` so that the key reads the same in the descriptor, in
/// the guest's `ovf-env.xml` and in scripts. `instance-id` and `user_data` pass.
pub fn check_key(key: &str) -> Result<(), PropertyError> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(())
    } else {
        Err(PropertyError::InvalidKey {
            key: key.to_string(),
        })
    }
}

/// Splits `KEY=VALUE` (the value may hold `=`; it may be empty).
fn key_value<'a>(option: &'static str, arg: &'a str) -> Result<(&'a str, &'a str), PropertyError> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| PropertyError::NotKeyValue {
            option,
            arg: arg.to_string(),
        })?;
    if k.is_empty() {
        return Err(PropertyError::EmptyKey {
            option,
            arg: arg.to_string(),
        });
    }
    check_key(k)?;
    Ok((k, v))
}

/// The properties cloud-init's OVF data source reads, in its order, with the defaults a fresh
/// VM gets. cloud-init's `cloudinit/sources/DataSourceOVF.py` (`read_ovf_environment`) reads
/// from the `PropertySection` of `ovf-env.xml`: `instance-id`, `hostname` (as
/// `local-hostname`), `public-keys` and `seedfrom` into the instance's metadata, `password`
/// into its config, and `user-data` (base64, else taken as it is) as the user data; it finds
/// the file on an ISO 9660 CD-ROM (`transport_iso9660`) or in `guestinfo.ovfEnv` through
/// `vmware-rpctool` (`transport_vmware_guestinfo`).
pub fn cloud_init(hostname: &str, instance_id: &str) -> Vec<Property> {
    let mut password = Property::labelled(
        "password",
        "",
        "Default user's password",
        "cloud-init sets it as the password of the distribution's default user (empty: none).",
    );
    password.password = true;
    vec![
        Property::labelled(
            "instance-id",
            instance_id,
            "Instance ID",
            "cloud-init configures the VM once per instance ID: give each VM its own.",
        ),
        Property::labelled(
            "hostname",
            hostname,
            "Hostname",
            "The guest's hostname, set by cloud-init.",
        ),
        Property::labelled(
            "public-keys",
            "",
            "SSH public keys",
            "An SSH public key (one line) cloud-init authorizes for the default user.",
        ),
        Property::labelled(
            "user-data",
            "",
            "User data (base64)",
            "cloud-init user data, base64-encoded: a #cloud-config document or a script.",
        ),
        Property::labelled(
            "seedfrom",
            "",
            "Seed location",
            "A file:// path or / directory with more meta-data and user-data (empty: none).",
        ),
        password,
    ]
}

/// The command line's property options, as given.
#[derive(Debug, Clone, Default)]
pub struct PropertyArgs<'a> {
    /// `--property KEY=VALUE`, in order.
    pub properties: &'a [String],
    /// `--property-label KEY=LABEL`.
    pub labels: &'a [String],
    /// `--property-description KEY=TEXT`.
    pub descriptions: &'a [String],
}

/// The descriptor's properties: `defaults` (e.g. [`cloud_init`]'s) first, each overridden in
/// place by a `--property` with its key, then the other `--property`s in their order; then the
/// labels and descriptions given for any of them.
pub fn assemble(
    defaults: Vec<Property>,
    args: &PropertyArgs,
) -> Result<Vec<Property>, PropertyError> {
    let mut props = defaults;
    let mut given = std::collections::BTreeSet::new();
    for arg in args.properties {
        let (k, v) = key_value("property", arg)?;
        if !given.insert(k) {
            return Err(PropertyError::Duplicate { key: k.to_string() });
        }
        match props.iter_mut().find(|p| p.key == k) {
            Some(p) => p.value = v.to_string(),
            None => props.push(Property::new(k, v)),
        }
    }
    type Slot = fn(&mut Property) -> &mut Option<String>;
    let texts: [(&'static str, &[String], Slot); 2] = [
        ("property-label", args.labels, |p| &mut p.label),
        ("property-description", args.descriptions, |p| {
            &mut p.description
        }),
    ];
    for (option, list, slot) in texts {
        for arg in list {
            let (k, text) = key_value(option, arg)?;
            let unknown = || PropertyError::UnknownKey {
                option,
                key: k.to_string(),
            };
            let p = props.iter_mut().find(|p| p.key == k).ok_or_else(unknown)?;
            *slot(p) = Some(text.to_string());
        }
    }
    Ok(props)
}

/// The VirtualHardwareSection's items for the `iso` transport, which needs a CD-ROM drive to
/// put the environment's ISO in: an IDE controller (instance 6) and a CD-ROM drive on it
/// (instance 7, not connected at power-on), as VMware's own template declares them.
pub const CDROM_ITEMS: &str = r#"
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>IDE Controller 0</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:Description>CD-ROM drive for the OVF environment (iso transport)</rasd:Description>
        <rasd:ElementName>CD-ROM 1</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>6</rasd:Parent>
        <rasd:ResourceSubType>vmware.cdrom.remotepassthrough</rasd:ResourceSubType>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>"#;

/// The `ovf:Property` elements, indented for the `ProductSection` (nothing for none).
pub fn render(props: &[Property]) -> String {
    let e = xml_escape;
    let mut x = String::new();
    for p in props {
        let password = if p.password {
            " ovf:password=\"true\""
        } else {
            ""
        };
        let _ = write!(
            x,
            "\n      <Property ovf:key=\"{}\" ovf:type=\"string\" ovf:userConfigurable=\"true\" ovf:value=\"{}\"{password}",
            e(&p.key),
            e(&p.value)
        );
        if p.label.is_none() && p.description.is_none() {
            x.push_str("/>");
            continue;
        }
        x.push('>');
        if let Some(l) = &p.label {
            let _ = write!(x, "\n        <Label>{}</Label>", e(l));
        }
        if let Some(d) = &p.description {
            let _ = write!(x, "\n        <Description>{}</Description>", e(d));
        }
        x.push_str("\n      </Property>");
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_are_checked() {
        for ok in ["hostname", "instance-id", "user_data", "_x1", "A-b_9"] {
            assert_eq!(check_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1abc", "-x", "a.b", "a:b", "a b", "ключ", "a/b", "a\"b"] {
            assert!(
                matches!(check_key(bad), Err(PropertyError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn command_line_errors_are_typed() {
        let one = |p: &[&str]| {
            let p = args(p);
            assemble(
                Vec::new(),
                &PropertyArgs {
                    properties: &p,
                    ..Default::default()
                },
            )
        };
        assert!(matches!(
            one(&["novalue"]),
            Err(PropertyError::NotKeyValue { .. })
        ));
        assert!(matches!(one(&["=v"]), Err(PropertyError::EmptyKey { .. })));
        assert!(matches!(
            one(&["a.b=v"]),
            Err(PropertyError::InvalidKey { .. })
        ));
        assert_eq!(
            one(&["a=1", "b=2", "a=3"]),
            Err(PropertyError::Duplicate { key: "a".into() })
        );
        let p = args(&["a=1"]);
        let l = args(&["b=Label"]);
        let r = assemble(
            Vec::new(),
            &PropertyArgs {
                properties: &p,
                labels: &l,
                ..Default::default()
            },
        );
        assert!(matches!(
            r,
            Err(PropertyError::UnknownKey {
                option: "property-label",
                ..
            })
        ));
        let msg = one(&["a.b=v"]).unwrap_err().to_string();
        assert!(msg.contains("\"a.b\"") && msg.contains("'.'"), "{msg}");
    }

    #[test]
    fn order_is_kept_and_user_values_override_defaults() {
        let p = args(&["zeta=z", "hostname=web01", "alpha=a=b", "empty="]);
        let l = args(&["zeta=Zeta", "hostname=Name of the host"]);
        let d = args(&["alpha=The first"]);
        let props = assemble(
            cloud_init("d2v-vm", "iid-x"),
            &PropertyArgs {
                properties: &p,
                labels: &l,
                descriptions: &d,
            },
        )
        .unwrap();
        let keys: Vec<&str> = props.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "instance-id",
                "hostname",
                "public-keys",
                "user-data",
                "seedfrom",
                "password",
                "zeta",
                "alpha",
                "empty"
            ]
        );
        let get = |k: &str| props.iter().find(|p| p.key == k).unwrap();
        assert_eq!(get("hostname").value, "web01");
        assert_eq!(get("hostname").label.as_deref(), Some("Name of the host"));
        assert_eq!(get("instance-id").value, "iid-x");
        assert_eq!(get("alpha").value, "a=b");
        assert_eq!(get("alpha").description.as_deref(), Some("The first"));
        assert_eq!(get("empty").value, "");
        assert!(get("password").password);
    }

    #[test]
    fn rendering_escapes_and_is_stable() {
        let mut p = Property::new("k", "<a & \"b\">");
        p.label = Some("L<".into());
        let props = vec![p, Property::new("plain", "")];
        let x = render(&props);
        assert_eq!(x, render(&props));
        assert!(x.contains(
            "<Property ovf:key=\"k\" ovf:type=\"string\" ovf:userConfigurable=\"true\" \
             ovf:value=\"&lt;a &amp; &quot;b&quot;&gt;\">"
        ));
        assert!(x.contains("<Label>L&lt;</Label>"));
        assert!(!x.contains("<Description>"));
        assert!(x.contains("<Property ovf:key=\"plain\" ovf:type=\"string\" ovf:userConfigurable=\"true\" ovf:value=\"\"/>"));
        assert_eq!(render(&[]), "");
    }
}
