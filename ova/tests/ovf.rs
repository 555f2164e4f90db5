//! The OVF descriptor: the exact text vSphere gets (`tests/expected/custos.ovf`,
//! regenerate with `UPDATE_EXPECT=1 cargo test -p ova`), leftover placeholders,
//! escaping, and a namespace-aware parse of what was rendered.

use expect_test::expect_file;
use ova::{
    DiskController, Error, Firmware, OvfParams, TEMPLATE, VmdkInfo, render_ovf, render_ovf_template,
};

const OVF_NS: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const VMW_NS: &str = "http://www.vmware.com/schema/ovf";
const RASD_NS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const VSSD_NS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";

fn params() -> OvfParams {
    let disk = VmdkInfo {
        capacity_bytes: 2_469_396_480,
        file_size: 291_574_272,
        populated_bytes: 734_003_200,
    };
    OvfParams::custos("Custos Project", "0.1.0", "custos-0.1.0-disk1.vmdk", &disk)
}

#[test]
fn rendered_descriptor_matches_the_snapshot() {
    let ovf = render_ovf(&params()).expect("render");
    expect_file!["expected/custos.ovf"].assert_eq(&ovf);
}

#[test]
fn rendered_descriptor_says_what_the_specification_asks() {
    let ovf = render_ovf(&params()).expect("render");
    assert!(!ovf.contains("{{") && !ovf.contains("}}"));
    let doc = roxmltree::Document::parse(&ovf).expect("well-formed XML");
    let find = |ns: &str, name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name((ns, name)))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let text = |ns: &str, name: &str| find(ns, name).text().unwrap_or_default().to_owned();

    let file = find(OVF_NS, "File");
    assert_eq!(
        file.attribute((OVF_NS, "href")),
        Some("custos-0.1.0-disk1.vmdk")
    );
    assert_eq!(file.attribute((OVF_NS, "size")), Some("291574272"));
    let disk = find(OVF_NS, "Disk");
    assert_eq!(disk.attribute((OVF_NS, "capacity")), Some("2469396480"));
    assert_eq!(
        disk.attribute((OVF_NS, "capacityAllocationUnits")),
        Some("byte")
    );
    assert_eq!(disk.attribute((OVF_NS, "populatedSize")), Some("734003200"));
    assert_eq!(
        disk.attribute((OVF_NS, "format")),
        Some("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized")
    );

    assert_eq!(text(OVF_NS, "Product"), "Custos");
    assert_eq!(text(OVF_NS, "Vendor"), "Custos Project");
    assert_eq!(text(OVF_NS, "Version"), "0.1.0");
    assert_eq!(text(OVF_NS, "FullVersion"), "0.1.0");
    assert_eq!(text(VSSD_NS, "VirtualSystemType"), "vmx-14");
    let os = find(OVF_NS, "OperatingSystemSection");
    assert_eq!(os.attribute((VMW_NS, "osType")), Some("debian12_64Guest"));

    // Hardware items by resource type (CIM): 3 CPU, 4 memory, 6 SCSI, 17 disk, 10 NIC.
    let items: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name((OVF_NS, "Item")))
        .collect();
    let field = |item: &roxmltree::Node, name: &str| {
        item.children()
            .find(|c| c.has_tag_name((RASD_NS, name)))
            .and_then(|c| c.text())
            .map(str::to_owned)
    };
    let of_type = |t: &str| -> Vec<&roxmltree::Node> {
        items
            .iter()
            .filter(|i| field(i, "ResourceType").as_deref() == Some(t))
            .collect()
    };
    assert_eq!(
        field(of_type("3")[0], "VirtualQuantity").as_deref(),
        Some("2")
    );
    assert_eq!(
        field(of_type("4")[0], "VirtualQuantity").as_deref(),
        Some("4096")
    );
    assert_eq!(
        field(of_type("4")[0], "AllocationUnits").as_deref(),
        Some("byte * 2^20")
    );
    assert_eq!(
        field(of_type("6")[0], "ResourceSubType").as_deref(),
        Some("VirtualSCSI")
    );
    let disk_item = of_type("17")[0];
    assert_eq!(
        field(disk_item, "HostResource").as_deref(),
        Some("ovf:/disk/vmdisk1")
    );
    assert_eq!(
        field(disk_item, "Parent"),
        field(of_type("6")[0], "InstanceID")
    );
    let nics = of_type("10");
    assert_eq!(nics.len(), 2);
    assert_eq!(field(nics[0], "Connection").as_deref(), Some("Management"));
    assert_eq!(field(nics[1], "Connection").as_deref(), Some("Backup"));
    assert!(
        nics.iter()
            .all(|n| field(n, "ResourceSubType").as_deref() == Some("VmxNet3"))
    );
    let networks: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name((OVF_NS, "Network")))
        .filter_map(|n| n.attribute((OVF_NS, "name")))
        .collect();
    assert_eq!(networks, ["Management", "Backup"]);

    let firmware = doc
        .descendants()
        .find(|n| {
            n.has_tag_name((VMW_NS, "Config")) && n.attribute((VMW_NS, "key")) == Some("firmware")
        })
        .expect("firmware config");
    assert_eq!(firmware.attribute((VMW_NS, "value")), Some("efi"));
    assert_eq!(firmware.attribute((OVF_NS, "required")), Some("false"));

    // Instance IDs are unique.
    let mut ids: Vec<_> = items
        .iter()
        .filter_map(|i| field(i, "InstanceID"))
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count);
}

#[test]
fn bios_and_lsilogic_are_parameters() {
    let mut p = params();
    p.firmware = Firmware::Bios;
    p.disk_controller = DiskController::LsiLogic;
    p.hardware_version = 19;
    let ovf = render_ovf(&p).expect("render");
    assert!(ovf.contains(r#"vmw:key="firmware" vmw:value="bios""#));
    assert!(ovf.contains("<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>"));
    assert!(ovf.contains("<vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>"));
}

#[test]
fn a_placeholder_without_value_fails_naming_it() {
    let template = TEMPLATE.replace("{{memory_mb}} MB", "{{memory_size}} MB");
    let err = render_ovf_template(&template, &params()).expect_err("must fail");
    assert!(
        matches!(&err, Error::UnknownPlaceholder { name } if name == "memory_size"),
        "{err}"
    );
    assert!(err.to_string().contains("{{memory_size}}"), "{err}");

    let err = render_ovf_template("<a>{{ vm_name }}</a>", &params()).expect_err("must fail");
    assert!(err.to_string().contains("{{ vm_name }}"), "{err}");
}

#[test]
fn values_are_xml_escaped() {
    let mut p = params();
    p.vendor = r#"Smith & Sons <"Keys"> 'Ltd'"#.into();
    p.vm_name = "Custos <test>".into();
    p.full_version = "0.1.0 {{vm_name}}".into();
    let ovf = render_ovf(&p).expect("render");
    assert!(
        ovf.contains("<Vendor>Smith &amp; Sons &lt;&quot;Keys&quot;&gt; &apos;Ltd&apos;</Vendor>")
    );
    assert!(ovf.contains(r#"<VirtualSystem ovf:id="Custos &lt;test&gt;">"#));
    // A value is not a template: its braces pass through as text.
    assert!(ovf.contains("<FullVersion>0.1.0 {{vm_name}}</FullVersion>"));
    let doc = roxmltree::Document::parse(&ovf).expect("well-formed XML");
    let vendor = doc
        .descendants()
        .find(|n| n.has_tag_name((OVF_NS, "Vendor")))
        .and_then(|n| n.text());
    assert_eq!(vendor, Some(r#"Smith & Sons <"Keys"> 'Ltd'"#));
}
