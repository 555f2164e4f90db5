//! The OVF descriptor: `ova/template.ovf` with `{{name}}` placeholders.
//!
//! Rendering is one pass over the template: each placeholder is replaced by its
//! XML-escaped value, and one without a value (a typo, or a placeholder added to
//! the template but not here) is an error that names it. Values never pass
//! through the template engine again, so a value cannot inject a placeholder.
//! Every value is checked here first: this is the one place that knows what the
//! descriptor may carry.

use crate::vmdk::VmdkInfo;
use crate::{Error, Result};

/// The OVF template shipped with the crate (`ova/template.ovf`).
pub const TEMPLATE: &str = include_str!("../template.ovf");

/// Boot firmware declared to vSphere (`vmw:Config vmw:key="firmware"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// UEFI (shim and signed GRUB on the ESP).
    #[default]
    Efi,
    /// Legacy BIOS (SYSLINUX behind the protective MBR).
    Bios,
}

impl Firmware {
    fn as_str(self) -> &'static str {
        match self {
            Firmware::Efi => "efi",
            Firmware::Bios => "bios",
        }
    }
}

/// The SCSI controller the disk hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskController {
    /// VMware Paravirtual SCSI (`vmw_pvscsi`): in Debian's cloud kernel, which
    /// has neither the LSI Logic driver nor AHCI.
    #[default]
    Pvscsi,
    /// LSI Logic parallel SCSI (`mptspi`): only with the full `linux-image-amd64`.
    LsiLogic,
}

impl DiskController {
    fn subtype(self) -> &'static str {
        match self {
            DiskController::Pvscsi => "VirtualSCSI",
            DiskController::LsiLogic => "lsilogic",
        }
    }

    fn description(self) -> &'static str {
        match self {
            DiskController::Pvscsi => "VMware Paravirtual SCSI controller",
            DiskController::LsiLogic => "LSI Logic parallel SCSI controller",
        }
    }
}

/// Everything the descriptor says that is not fixed in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfParams {
    /// `ProductSection/Product`, e.g. "Custos".
    pub product: String,
    /// `ProductSection/Vendor`.
    pub vendor: String,
    /// `ProductSection/Version`, e.g. "0.1.0".
    pub version: String,
    /// `ProductSection/FullVersion`, e.g. "0.1.0 (build 1a2b3c4)".
    pub full_version: String,
    /// The virtual machine's name (`VirtualSystem ovf:id`, `Name`), the default
    /// name in vSphere's deploy wizard.
    pub vm_name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB; VMware wants a multiple of 4.
    pub memory_mb: u32,
    /// The VMDK's name inside the OVA (`File ovf:href`).
    pub disk_file: String,
    /// The VMDK's exact size in bytes (`File ovf:size`).
    pub disk_file_size: u64,
    /// Virtual disk size in bytes (`Disk ovf:capacity`); must equal the VMDK's.
    pub disk_capacity_bytes: u64,
    /// Bytes of the disk holding data (`Disk ovf:populatedSize`).
    pub disk_populated_bytes: u64,
    /// Boot firmware.
    pub firmware: Firmware,
    /// Disk controller.
    pub disk_controller: DiskController,
    /// VMware virtual hardware version (`vmx-N`).
    pub hardware_version: u32,
}

impl OvfParams {
    /// The Custos appliance as §17 of the specification describes it: 2 vCPUs,
    /// 4 GiB, UEFI, PVSCSI, hardware version 14 (ESXi 6.7 and later).
    pub fn custos(vendor: &str, version: &str, disk_file: &str, disk: &VmdkInfo) -> Self {
        OvfParams {
            product: "Custos".into(),
            vendor: vendor.into(),
            version: version.into(),
            full_version: version.into(),
            vm_name: format!("Custos-{version}"),
            cpus: 2,
            memory_mb: 4096,
            disk_file: disk_file.into(),
            disk_file_size: disk.file_size,
            disk_capacity_bytes: disk.capacity_bytes,
            disk_populated_bytes: disk.populated_bytes,
            firmware: Firmware::Efi,
            disk_controller: DiskController::Pvscsi,
            hardware_version: 14,
        }
    }

    fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("product", &self.product),
            ("vendor", &self.vendor),
            ("version", &self.version),
            ("full_version", &self.full_version),
            ("vm_name", &self.vm_name),
        ] {
            if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
                return Err(invalid(field, "must be 1 to 256 bytes on one line"));
            }
        }
        if !(1..=128).contains(&self.cpus) {
            return Err(invalid("cpus", "must be between 1 and 128"));
        }
        if self.memory_mb < 256 || !self.memory_mb.is_multiple_of(4) {
            return Err(invalid(
                "memory_mb",
                "must be at least 256 and a multiple of 4",
            ));
        }
        check_member_name("disk_file", &self.disk_file)?;
        if !self.disk_file.ends_with(".vmdk") {
            return Err(invalid("disk_file", "must end with .vmdk"));
        }
        if self.disk_file_size == 0 {
            return Err(invalid("disk_file_size", "must not be zero"));
        }
        if self.disk_capacity_bytes == 0 || !self.disk_capacity_bytes.is_multiple_of(512) {
            return Err(invalid(
                "disk_capacity_bytes",
                "must be a non-zero multiple of 512",
            ));
        }
        if self.disk_populated_bytes > self.disk_capacity_bytes {
            return Err(invalid(
                "disk_populated_bytes",
                "must not exceed the capacity",
            ));
        }
        if !(7..=99).contains(&self.hardware_version) {
            return Err(invalid(
                "hardware_version",
                "must be between 7 (PVSCSI, VMXNET3) and 99",
            ));
        }
        Ok(())
    }

    /// Placeholder name and unescaped value, one per placeholder in the template.
    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("product", self.product.clone()),
            ("vendor", self.vendor.clone()),
            ("version", self.version.clone()),
            ("full_version", self.full_version.clone()),
            ("vm_name", self.vm_name.clone()),
            ("cpus", self.cpus.to_string()),
            ("memory_mb", self.memory_mb.to_string()),
            ("disk_file", self.disk_file.clone()),
            ("disk_file_size", self.disk_file_size.to_string()),
            ("disk_capacity", self.disk_capacity_bytes.to_string()),
            ("disk_populated_size", self.disk_populated_bytes.to_string()),
            ("firmware", self.firmware.as_str().into()),
            ("disk_controller", self.disk_controller.subtype().into()),
            (
                "disk_controller_description",
                self.disk_controller.description().into(),
            ),
            ("hardware_version", format!("vmx-{}", self.hardware_version)),
        ]
    }
}

fn invalid(field: &'static str, reason: &str) -> Error {
    Error::InvalidParam {
        field,
        reason: reason.into(),
    }
}

/// A name that can stand as a ustar member and an OVF `href` as it is:
/// 1 to 100 bytes of `[A-Za-z0-9._+-]`, not starting with a dot.
pub(crate) fn check_member_name(field: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidParam {
            field,
            reason: format!(
                "{name:?} must be 1 to 100 bytes of A-Z a-z 0-9 . _ + - and not start with a dot"
            ),
        })
    }
}

/// Renders the crate's [`TEMPLATE`].
pub fn render_ovf(p: &OvfParams) -> Result<String> {
    render_ovf_template(TEMPLATE, p)
}

/// Renders `template` with the values of `p`; fails naming the first
/// placeholder that has no value.
pub fn render_ovf_template(template: &str, p: &OvfParams) -> Result<String> {
    p.validate()?;
    render(template, &p.values())
}

fn render(template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let inner = &rest[open + 2..];
        let close = inner.find("}}").ok_or(Error::UnterminatedPlaceholder {
            offset: template.len() - rest.len() + open,
        })?;
        let name = &inner[..close];
        let (_, value) = values
            .iter()
            .find(|(key, _)| *key == name)
            .ok_or_else(|| Error::UnknownPlaceholder { name: name.into() })?;
        escape_into(&mut out, value);
        rest = &inner[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// XML-escapes text for both element content and double- or single-quoted attributes.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Undoes [`escape_into`] (plus numeric references) for reading attribute values back.
pub(crate) fn unescape(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';')? + amp;
        let entity = &rest[amp + 1..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> OvfParams {
        let disk = VmdkInfo {
            capacity_bytes: 1 << 30,
            file_size: 1 << 20,
            populated_bytes: 1 << 24,
        };
        OvfParams::custos("Vendor", "1.0", "disk.vmdk", &disk)
    }

    #[test]
    fn every_value_has_a_placeholder_in_the_template() {
        for (name, _) in params().values() {
            assert!(
                TEMPLATE.contains(&format!("{{{{{name}}}}}")),
                "{name} unused"
            );
        }
    }

    #[test]
    fn escaping_round_trips() {
        let mut s = String::new();
        escape_into(&mut s, "a&b<c>d\"e'f");
        assert_eq!(s, "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(unescape(&s).as_deref(), Some("a&b<c>d\"e'f"));
        assert_eq!(unescape("&#65;&#x42;").as_deref(), Some("AB"));
        assert_eq!(unescape("&bogus;"), None);
    }

    #[test]
    fn unterminated_placeholder_is_an_error() {
        let err = render("ab {{vm_name", &params().values()).expect_err("must fail");
        assert!(
            matches!(err, Error::UnterminatedPlaceholder { offset: 3 }),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        let mut p = params();
        p.vm_name = "two\nlines".into();
        assert!(matches!(
            render_ovf(&p),
            Err(Error::InvalidParam {
                field: "vm_name",
                ..
            })
        ));
        let mut p = params();
        p.disk_file = "../disk.vmdk".into();
        assert!(matches!(
            render_ovf(&p),
            Err(Error::InvalidParam {
                field: "disk_file",
                ..
            })
        ));
        let mut p = params();
        p.memory_mb = 4095;
        assert!(matches!(
            render_ovf(&p),
            Err(Error::InvalidParam {
                field: "memory_mb",
                ..
            })
        ));
    }
}
