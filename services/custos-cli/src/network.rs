//! `network`: eth0's address and default route (systemd-networkd), DNS
//! (systemd-resolved), and the `ping` and `checkport` probes.

use std::time::Duration;

use appliance::os::{DnsServer, DomainName, Ipv4Interface, MANAGEMENT_INTERFACE, parse_ipv4};

use crate::host::Cmd;
use crate::menu::{Args, Category, Command, Failure, Outcome};
use crate::probe;
use crate::render;
use crate::session::Ctx;

pub const CATEGORY: Category = Category {
    name: "network",
    help: "eth0 address and default route, DNS, ping and port checks",
    commands: &[
        Command {
            words: &["ip", "dhcp", "release"],
            args: "eth0 version 4",
            example: "ip dhcp release eth0 version 4",
            help: "Turn DHCP off on eth0",
            run: dhcp_release,
        },
        Command {
            words: &["ip", "address", "init"],
            args: "ADDRESS/PREFIX dev eth0",
            example: "ip address init 10.1.1.5/24 dev eth0",
            help: "Set eth0's static address (turns DHCP off)",
            run: address_init,
        },
        Command {
            words: &["ip", "address", "show"],
            args: "",
            example: "ip address show",
            help: "Show eth0's configuration and the active addresses",
            run: address_show,
        },
        Command {
            words: &["ip", "route", "add"],
            args: "default table main.table dev eth0 via GATEWAY",
            example: "ip route add default table main.table dev eth0 via 10.1.1.1",
            help: "Set the default gateway",
            run: route_add,
        },
        Command {
            words: &["ip", "route", "show"],
            args: "",
            example: "ip route show",
            help: "Show the default gateway and the active routes",
            run: route_show,
        },
        Command {
            words: &["dns", "dns1"],
            args: "IPADDRESS",
            example: "dns dns1 10.1.1.53",
            help: "Set the first DNS server",
            run: dns1,
        },
        Command {
            words: &["dns", "dns2"],
            args: "IPADDRESS",
            example: "dns dns2 10.1.2.53",
            help: "Set the second DNS server",
            run: dns2,
        },
        Command {
            words: &["dns", "search"],
            args: "DOMAIN",
            example: "dns search example.com",
            help: "Set the DNS search domain",
            run: dns_search,
        },
        Command {
            words: &["dns", "show"],
            args: "",
            example: "dns show",
            help: "Show the DNS settings",
            run: dns_show,
        },
        Command {
            words: &["ping"],
            args: "IPADDRESS [ipv6]",
            example: "ping 10.1.1.1",
            help: "Send four echo requests to an address or host name",
            run: ping,
        },
        Command {
            words: &["checkport"],
            args: "IPADDRESS PORT timeout SECONDS",
            example: "checkport 10.1.1.20 8443 timeout 5",
            help: "Test a TCP connection to a port",
            run: checkport,
        },
    ],
};

const RESTART_HINT: &str = "Restart the server software (system restart) to use the new address.";

/// Renders eth0's unit and has networkd apply it.
fn apply_eth0(ctx: &mut Ctx<'_>, what: &str, eth0: &appliance::os::Eth0) -> Result<(), Failure> {
    ctx.apply(
        what,
        &[render::eth0(eth0)],
        &[
            Cmd::new(&["networkctl", "reload"]),
            Cmd::new(&["networkctl", "reconfigure", MANAGEMENT_INTERFACE]),
        ],
    )
}

fn dhcp_release(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let os = ctx.store.os_settings()?;
    if !os.eth0.dhcp {
        return Ok("DHCP is already off on eth0".into());
    }
    let kept = match os.eth0.address {
        Some(a) => format!("eth0 keeps its static address {a}."),
        None => {
            "eth0 has no static address: it has no IPv4 address until 'ip address init' sets one."
                .into()
        }
    };
    ctx.confirm(&[
        "Turning DHCP off on eth0 can disconnect this session.",
        &kept,
    ])?;
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.eth0.dhcp = false;
        Ok("turned DHCP off on eth0".into())
    })?;
    apply_eth0(ctx, "turning DHCP off on eth0", &os.eth0)?;
    Ok(format!("DHCP is off on eth0. {RESTART_HINT}"))
}

fn address_init(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let net = Ipv4Interface::parse(args.value(0))?;
    let os = ctx.store.os_settings()?;
    let mut warning = vec![
        "Changing eth0's address can disconnect this session.".to_owned(),
        format!("eth0 gets the static address {net}; DHCP is turned off on eth0."),
    ];
    let gateway_dropped = os
        .eth0
        .gateway
        .filter(|g| !net.contains(*g) || *g == net.address());
    if let Some(g) = gateway_dropped {
        warning.push(format!(
            "The default gateway {g} is not in {}/{} and is removed; set a new one with 'ip route add'.",
            net.network(),
            net.prefix()
        ));
    }
    let warning: Vec<&str> = warning.iter().map(String::as_str).collect();
    ctx.confirm(&warning)?;
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.eth0.dhcp = false;
        os.eth0.address = Some(net);
        if gateway_dropped.is_some() {
            os.eth0.gateway = None;
        }
        Ok(format!("set eth0's static address to {net} (DHCP off)"))
    })?;
    apply_eth0(ctx, &format!("eth0's static address {net}"), &os.eth0)?;
    Ok(format!("eth0's static address is {net}"))
}

/// Prints live state read with `argv`, or why it is not shown.
fn live(ctx: &mut Ctx<'_>, title: &str, argv: &[&str]) -> Result<(), Failure> {
    ctx.say(&format!("{title}:"))?;
    match ctx.host.query(argv) {
        Some(Ok(text)) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                ctx.say(&format!("  {}", line.trim_end()))?;
            }
        }
        Some(Err(e)) => ctx.say(&format!("  (not available: {e:#})"))?,
        None => ctx.say(&format!(
            "  (not read: {} is a test root)",
            ctx.host.root().display()
        ))?,
    }
    Ok(())
}

fn eth0_summary(eth0: &appliance::os::Eth0) -> String {
    match (eth0.dhcp, eth0.address) {
        (true, None) => "DHCP".into(),
        (true, Some(a)) => format!("DHCP and static {a}"),
        (false, Some(a)) => format!("static {a}"),
        (false, None) => "no address (DHCP off, no static address)".into(),
    }
}

fn address_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let os = ctx.store.os_settings()?;
    ctx.say(&format!("eth0 configuration: {}", eth0_summary(&os.eth0)))?;
    ctx.say("eth1: backup network, not managed by the CLI")?;
    live(
        ctx,
        "Active addresses",
        &["ip", "-brief", "address", "show"],
    )?;
    Ok("ip address show".into())
}

fn route_add(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let gw = parse_ipv4("gateway", args.value(0))?;
    let os = ctx.store.os_settings()?;
    os.eth0.check_gateway(gw)?;
    ctx.confirm(&["Changing the default gateway can disconnect this session."])?;
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.eth0.check_gateway(gw)?;
        os.eth0.gateway = Some(gw);
        Ok(format!("set the default gateway to {gw} via eth0"))
    })?;
    apply_eth0(ctx, &format!("the default gateway {gw}"), &os.eth0)?;
    Ok(format!("the default gateway is {gw} via eth0"))
}

fn route_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let os = ctx.store.os_settings()?;
    let gw = match (os.eth0.gateway, os.eth0.dhcp) {
        (Some(g), _) => format!("{g} via eth0"),
        (None, true) => "from DHCP".into(),
        (None, false) => "none".into(),
    };
    ctx.say(&format!("Default gateway: {gw}"))?;
    live(
        ctx,
        "Active routes",
        &["ip", "route", "show", "table", "main"],
    )?;
    Ok("ip route show".into())
}

fn apply_dns(ctx: &mut Ctx<'_>, what: &str, dns: &appliance::os::Dns) -> Result<(), Failure> {
    ctx.apply(
        what,
        &[render::resolved(dns)],
        &[Cmd::new(&["systemctl", "restart", "systemd-resolved"])],
    )
}

fn set_dns_server(ctx: &mut Ctx<'_>, args: &Args, n: u8) -> Outcome {
    let field = if n == 1 { "dns1" } else { "dns2" };
    let server = DnsServer::parse(field, args.value(0))?;
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        let other = if n == 1 { os.dns.dns2 } else { os.dns.dns1 };
        if other == Some(server) {
            return Err(appliance::Error::conflict(
                field,
                format!("{server} is already the other DNS server"),
            ));
        }
        if n == 1 {
            os.dns.dns1 = Some(server);
        } else {
            os.dns.dns2 = Some(server);
        }
        Ok(format!("set DNS server {n} to {server}"))
    })?;
    apply_dns(ctx, &format!("DNS server {n} {server}"), &os.dns)?;
    Ok(format!("DNS server {n} is {server}"))
}

fn dns1(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    set_dns_server(ctx, args, 1)
}

fn dns2(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    set_dns_server(ctx, args, 2)
}

fn dns_search(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let domain = DomainName::parse("search", args.value(0))?;
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.dns.search = Some(domain.clone());
        Ok(format!("set the DNS search domain to {domain}"))
    })?;
    apply_dns(ctx, &format!("the DNS search domain {domain}"), &os.dns)?;
    Ok(format!("the DNS search domain is {domain}"))
}

fn dns_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let os = ctx.store.os_settings()?;
    let show = |v: Option<String>| v.unwrap_or_else(|| "not set".into());
    ctx.say(&format!(
        "DNS server 1: {}",
        show(os.dns.dns1.map(|s| s.to_string()))
    ))?;
    ctx.say(&format!(
        "DNS server 2: {}",
        show(os.dns.dns2.map(|s| s.to_string()))
    ))?;
    ctx.say(&format!(
        "Search domain: {}",
        show(os.dns.search.map(|s| s.to_string()))
    ))?;
    live(ctx, "Active DNS servers", &["resolvectl", "dns"])?;
    Ok("dns show".into())
}

fn ping(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let ipv6 = args.get(1).is_some();
    let target = probe::resolve(args.value(0), ipv6)?;
    let report = probe::ping(target, |line| ctx.term.say(line))?;
    if report.received == 0 {
        return Err(Failure::Error(anyhow::anyhow!(
            "{} did not answer ({} echo requests sent, none answered)",
            target,
            report.sent
        )));
    }
    ctx.say("ping SUCCESS")?;
    Ok(format!(
        "{target} answered {} of {} echo requests",
        report.received, report.sent
    ))
}

fn checkport(_: &mut Ctx<'_>, args: &Args) -> Outcome {
    let port: u16 = args
        .value(1)
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "port: '{}' must be a number between 1 and 65535",
                appliance::os::shown(args.value(1))
            )
        })?;
    let seconds: u64 = args
        .value(2)
        .parse()
        .ok()
        .filter(|s| (1..=60).contains(s))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "timeout: '{}' must be a number of seconds between 1 and 60",
                appliance::os::shown(args.value(2))
            )
        })?;
    let addrs = probe::resolve_all(args.value(0), port)?;
    let took = probe::connect(&addrs, Duration::from_secs(seconds))?;
    Ok(format!(
        "connected to {} port {port} in {} ms",
        args.value(0),
        took.as_millis()
    ))
}
