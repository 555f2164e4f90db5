//! `ha` (§3, §11): the appliance's place in its high-availability group.
//! `show` prints the role, the peers and the last synchronisation, from
//! the group's table and the replication's own views.

use appliance::store::HaRole;

use crate::menu::{Args, Category, Command, Outcome};
use crate::session::Ctx;

pub const CATEGORY: Category = Category {
    name: "ha",
    help: "High availability: this appliance's role, its peers, the last synchronisation",
    commands: &[Command {
        words: &["show"],
        args: "",
        example: "show",
        help: "Show the role, the peers and the last synchronisation",
        run: show,
    }],
};

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let status = ctx.store.ha_status_unchecked()?;
    ctx.say(&format!("Role: {}", status.role.summary()))?;
    if status.nodes.is_empty() {
        ctx.say("Peers: none")?;
    } else {
        ctx.say("Peers:")?;
        for n in &status.nodes {
            let replication = status
                .replication
                .iter()
                .find(|l| l.name == n.name)
                .map(|l| {
                    format!(
                        "; replication {} ({}), last reply {}, {} bytes behind",
                        l.state,
                        l.sync_state,
                        l.last_reply.as_deref().unwrap_or("never"),
                        l.lag_bytes
                    )
                })
                .unwrap_or_default();
            ctx.say(&format!(
                "  {} ({}): registered {}, configured {}{replication}",
                n.name,
                n.role,
                yes_no(n.registered),
                yes_no(n.configured),
            ))?;
        }
    }
    if let HaRole::Failover { .. } = status.role {
        ctx.say(&format!(
            "Last synchronisation: {}",
            status.last_synchronised.as_deref().unwrap_or("none yet")
        ))?;
    }
    Ok("ha show".into())
}
