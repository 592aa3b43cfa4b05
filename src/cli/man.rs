//! `hili man`: the manual page hili(1) as roff, made from the same clap definitions as `--help`
//! (so it cannot drift from the command line): the synopsis and global options, a subsection
//! per command with its own options, then exit status, environment and files, which clap
//! does not know.

use std::io;

use clap::CommandFactory;
use clap_mangen::Man;

use super::Cli;

/// The whole page.
pub(super) fn page() -> io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let man = Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(sub, &mut out)?;
    }
    out.extend_from_slice(TAIL.as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// One command as a subsection: its synopsis, description and options (clap_mangen renders
/// each as a section of a page of its own; here their headings give way to the subsection's,
/// and the apostrophe string the page's start defines is not defined again).
fn command(sub: &clap::Command, out: &mut Vec<u8>) -> io::Result<()> {
    let name = format!("hili {}", sub.get_name());
    let man = Man::new(sub.clone().bin_name(&name));
    let mut part = Vec::new();
    man.render_synopsis_section(&mut part)?;
    man.render_description_section(&mut part)?;
    man.render_options_section(&mut part)?;
    out.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
    for line in String::from_utf8_lossy(&part).lines() {
        match line.strip_prefix(".SH ") {
            Some("OPTIONS") => out.extend_from_slice(b".PP\nOptions:\n"),
            Some(_) => out.extend_from_slice(b".PP\n"),
            None if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") => {}
            None => {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
    }
    Ok(())
}

/// What the README says about exit codes, the environment and files, for `man hili`.
const TAIL: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success; for \fBrun \-\-once\fR, every job of the run is done (or skipped).
.TP
\fB1\fR
An error that is not about a job: I/O, the database, the service unreachable; for
\fBdoctor\fR, a check failed.
.TP
\fB2\fR
hili cannot run as configured and waiting will not help: a configuration error, another
\fBhili run\fR driving the same queue, or the service refusing the account. The systemd unit
does not restart on this code.
.TP
\fB3\fR
Some job ended failed or held, or work was left unfinished (\fBrun \-\-once\fR); a result or
manifest changed or went missing (\fBverify\fR).
.SH ENVIRONMENT
.TP
\fBHILI_CONFIG\fR
The configuration file, when \fB\-\-config\fR is not given.
.TP
\fBHILI_SECRET_KEY\fR
The secret key; it comes before \fBapi.secret_key_file\fR,
\fB$CREDENTIALS_DIRECTORY/hili\-secret\fR (systemd \fBLoadCredential=\fR) and an inline
\fBapi.secret_key\fR.
.TP
\fBSTATE_DIRECTORY\fR
Under systemd (\fBStateDirectory=\fR), the folder of the default queue database.
.TP
\fBHILI_LOG\fR, \fBRUST_LOG\fR
The log level, e.g. \fBHILI_LOG=debug\fR.
.SH FILES
.TP
\fI/etc/hili/hili.toml\fR
The configuration, after \fB\-\-config\fR, \fB$HILI_CONFIG\fR, \fI./hili.toml\fR and
\fI$XDG_CONFIG_HOME/hili/hili.toml\fR. Every key with its default:
\fI/usr/share/doc/hili/hili.example.toml\fR.
.TP
\fI/etc/credstore/hili\-secret\fR
The secret key the service (\fBhili.service\fR) loads as a systemd credential.
.TP
\fI/var/lib/hili/hili.db\fR
The service's queue; run by hand, \fI$XDG_STATE_HOME/hili/hili.db\fR
(\fI~/.local/state/hili/hili.db\fR) unless \fBqueue.database\fR says otherwise.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5); the README in
\fI/usr/share/doc/hili/\fR.
"#;
