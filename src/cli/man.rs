//! The man pages: clap's title, NAME and OPTIONS of every command, the
//! SYNOPSIS with the names of values, and the hand-written rest
//! (DESCRIPTION with the tree, EXAMPLES, EXIT STATUS, ENVIRONMENT, SIGNALS,
//! FILES, SEE ALSO, in `sections`), rendered as roff.

mod sections;

use clap::{ArgAction, CommandFactory};

use super::Cli;
use sections::{Block, Item, Para, Text, Verbatim, hand_written};

/// `text` as roff: backslashes and dashes escaped, and no line taken for a
/// request.
fn roff(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.replace('\\', "\\e").replace('-', "\\-");
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn render_blocks(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Para(t) => out.push_str(&format!(".PP\n{}", roff(t))),
            Text(t) => out.push_str(&format!(".PP\n{}", roff(t))),
            Verbatim(t) => out.push_str(&format!(".PP\n.RS 4\n.nf\n{}.fi\n.RE\n", roff(t))),
            Item(term, t) => out.push_str(&format!(
                ".TP\n\\fB{}\\fR\n{}",
                roff(term).trim_end(),
                roff(t)
            )),
        }
    }
    out
}

/// The SYNOPSIS of `cmd`, run as `run`, every option with its value's name.
fn synopsis(run: &str, cmd: &clap::Command) -> String {
    let mut line = format!("\\fB{}\\fR", roff(run).trim_end());
    for a in cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
    {
        if matches!(a.get_long(), Some("help" | "version")) {
            continue;
        }
        let flag = match (a.get_short(), a.get_long()) {
            (Some(s), _) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => continue,
        };
        let value = match a.get_action() {
            ArgAction::Set | ArgAction::Append => {
                let names = a
                    .get_value_names()
                    .map(|v| {
                        v.iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
                format!(" \\fI{}\\fR", roff(&names).trim_end())
            }
            _ => String::new(),
        };
        let more = if matches!(a.get_action(), ArgAction::Count) {
            "..."
        } else {
            ""
        };
        line.push_str(&format!(
            " [\\fB{}\\fR{value}]{more}",
            roff(&flag).trim_end()
        ));
    }
    if cmd.has_subcommands() {
        line.push_str(" \\fICOMMAND\\fR [\\fIARGS\\fR]");
    }
    for a in cmd.get_positionals() {
        let name = a
            .get_value_names()
            .and_then(|v| v.first().map(|s| s.to_string()))
            .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
        line.push_str(&format!(" \\fI{}\\fR", roff(&name).trim_end()));
    }
    format!(".SH SYNOPSIS\n{line}\n")
}

/// The COMMANDS section of the main page: one entry per subcommand, each
/// pointing at its own page.
fn commands_section(cmd: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&format!(
            ".TP\n\\fBqcow2fs {}\\fR\n{}See qcow2fs\\-{}(1).\n",
            sub.get_name(),
            roff(&about),
            sub.get_name()
        ));
    }
    out
}

/// One man page: clap's title, NAME and OPTIONS, and the rest written here.
fn page(cmd: clap::Command, name: &'static str, run: &str) -> Vec<u8> {
    let version = env!("CARGO_PKG_VERSION");
    let man = clap_mangen::Man::new(cmd.clone().name(name).bin_name(name))
        .section("1")
        .source(format!("qcow2fs {version}"))
        .manual("qcow2fs manual");
    let (description, sections) = hand_written(name);
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    out.extend(synopsis(run, &cmd).into_bytes());
    out.extend(format!(".SH DESCRIPTION\n{}", render_blocks(&description)).into_bytes());
    let _ = man.render_options_section(&mut out);
    if cmd.has_subcommands() {
        out.extend(commands_section(&cmd).into_bytes());
    }
    for (title, blocks) in &sections {
        out.extend(format!(".SH \"{title}\"\n{}", render_blocks(blocks)).into_bytes());
    }
    out
}

/// The man pages, in roff, from the command-line definitions and the
/// hand-written sections: `qcow2fs.1` and one `qcow2fs-<subcommand>.1` each, as (file
/// name, bytes).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut pages = vec![(
        "qcow2fs.1".to_string(),
        page(cmd.clone(), "qcow2fs", "qcow2fs"),
    )];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        // clap names commands with &'static str; a page is made once per run.
        let name: &'static str = format!("qcow2fs-{}", sub.get_name()).leak();
        let run = format!("qcow2fs {}", sub.get_name());
        pages.push((format!("{name}.1"), page(sub.clone(), name, &run)));
    }
    pages
}
