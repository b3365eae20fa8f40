//! Root, or sudo for the few steps that need it.
//!
//! As root, xtask runs everything itself, as it always did. As a normal user it does every
//! cargo step (fmt, clippy, builds, `cargo install`, `rustup`) as that user, so target/ and
//! ~/.cargo stay theirs, and asks sudo only for apt-get, mounting bpffs and running the
//! privileged binaries: test and bench binaries through a cargo runner (as aya's template
//! does with `sudo -E`), and the demo by re-running this already-built xtask binary.
//!
//! Binaries run as root keep the caller's environment (`sudo -E`: test knobs such as
//! FLOODGATE_DIFF_SEED, RUST_BACKTRACE) except HOME, which points at root's home so nothing
//! run as root writes into the user's, TMPDIR, which is dropped so temporary files go to
//! /tmp, and PATH, which is set to the system directories (sudo's secure_path may reset it
//! anyway, and the tests need `ip`, `nsenter`, `ping`, `setpriv` from there).

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// PATH for everything run as root (Debian's sudo secure_path).
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Name and home directory of a uid, from the password database.
fn passwd(uid: libc::uid_t) -> Option<(String, PathBuf)> {
    // SAFETY: getpwuid returns null or a pointer to a static entry that stays valid until the
    // next getpw* call; we copy both strings out at once and xtask does not call it elsewhere.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return None;
        }
        let name = CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned();
        let home = CStr::from_ptr((*pw).pw_dir).to_string_lossy().into_owned();
        Some((name, PathBuf::from(home)))
    }
}

fn user_name() -> String {
    // SAFETY: no preconditions.
    let uid = unsafe { libc::getuid() };
    passwd(uid)
        .map(|(name, _)| name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::env::split_paths(SYSTEM_PATH))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A program by absolute path, so that no PATH (sudo's, the user's) decides what runs.
fn absolute(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| PathBuf::from(name))
}

/// A terminal sudo could ask a password on.
fn have_terminal() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Why sudo cannot be used.
enum NoSudo {
    Missing,
    NoTerminal(String),
    Refused,
}

/// What a user without working sudo can run instead; `why` says what needs root.
fn remedies(why: &str, no: NoSudo) -> String {
    let user = user_name();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let this = format!("cargo xtask {}", args.join(" "));
    let file = user.replace(['.', '~'], "_");
    let nopasswd = format!(
        "echo '{user} ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/{file} && chmod 0440 /etc/sudoers.d/{file}"
    );
    match no {
        NoSudo::Missing => format!(
            "{why} needs root, and sudo is not installed. Either run `{this}` as root, or \
             install sudo and give {user} sudo rights, as root:\n  apt-get install -y sudo\n  \
             usermod -aG sudo {user}    # then log in again"
        ),
        NoSudo::NoTerminal(said) => format!(
            "{why} needs root, and sudo needs a password but there is no terminal to ask for it \
             (sudo said: {said}). Either run `{this}` from a terminal, or run it as root, or \
             let {user} use sudo without a password, as root:\n  {nopasswd}"
        ),
        NoSudo::Refused => format!(
            "{why} needs root, and `sudo -v` failed. Either run `{this}` as root, or give {user} \
             sudo rights, as root:\n  usermod -aG sudo {user}    # then log in again\n\
             or, without a password:\n  {nopasswd}"
        ),
    }
}

/// The sudo binary, once we know it runs commands for us without further questions.
/// The first call checks (and lets sudo ask for a password if there is a terminal).
pub fn sudo(why: &str) -> Result<&'static Path> {
    static SUDO: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = SUDO.get() {
        return Ok(p);
    }
    let Some(sudo) = find_program("sudo") else {
        bail!(remedies(why, NoSudo::Missing));
    };
    let quiet = Command::new(&sudo)
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", sudo.display()))?;
    if !quiet.status.success() {
        let said = String::from_utf8_lossy(&quiet.stderr).trim().to_string();
        if !have_terminal() {
            bail!(remedies(why, NoSudo::NoTerminal(said)));
        }
        eprintln!("xtask: {why} needs root: asking sudo (it may ask for your password)");
        let asked = Command::new(&sudo).arg("-v").status();
        if !asked.map(|s| s.success()).unwrap_or(false) {
            bail!(remedies(why, NoSudo::Refused));
        }
    }
    Ok(SUDO.get_or_init(|| sudo))
}

/// `program args...` as root: itself when we are root, else through sudo with sudo's own
/// clean environment (for apt-get, mount, chown).
pub fn as_root(why: &str, program: &str) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    let mut cmd = Command::new(sudo(why)?);
    cmd.arg("--").arg(absolute(program));
    Ok(cmd)
}

/// The words that run a privileged binary through sudo, keeping the caller's environment
/// but with root's HOME, no TMPDIR and the system PATH (see the module comment). For a
/// normal user only; root runs binaries directly.
pub fn privileged_prefix(why: &str) -> Result<Vec<String>> {
    let sudo = sudo(why)?;
    let root_home = passwd(0)
        .map(|(_, home)| home)
        .unwrap_or_else(|| PathBuf::from("/root"));
    Ok(vec![
        sudo.to_string_lossy().into_owned(),
        "-E".into(),
        "--".into(),
        absolute("env").to_string_lossy().into_owned(),
        "-u".into(),
        "TMPDIR".into(),
        format!("HOME={}", root_home.display()),
        format!("PATH={SYSTEM_PATH}"),
    ])
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `--config` arguments making cargo run test and bench binaries as root (none for root).
pub fn cargo_runner_args(why: &str) -> Result<Vec<String>> {
    if is_root() {
        return Ok(Vec::new());
    }
    let words: Vec<String> = privileged_prefix(why)?
        .iter()
        .map(|w| toml_string(w))
        .collect();
    Ok(vec![
        "--config".into(),
        format!("target.\"cfg(all())\".runner=[{}]", words.join(",")),
    ])
}

/// Under `sudo cargo xtask ...` cargo runs as root too and leaves root-owned files in the
/// user's target/ and ~/.cargo: it still works (CI runs as root), but say how to avoid it.
pub fn warn_if_sudo_cargo() {
    if is_root() {
        if let Ok(user) = std::env::var("SUDO_USER") {
            if user != "root" {
                eprintln!("xtask: note: running as root through sudo, so cargo leaves files owned by root in target/ (and in ~/.cargo if it installs anything); run `cargo xtask ...` as {user} instead: it asks sudo only for what needs root");
            }
        }
    }
}

/// Give `dir` and everything in it back to the invoking user, after root wrote into it (the
/// bench report). A no-op for root.
pub fn give_back(dir: &Path) -> Result<()> {
    if is_root() || !dir.exists() {
        return Ok(());
    }
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let status = as_root("giving the bench report back to you", "chown")?
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("chown of {} failed ({status})", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_words_are_toml_strings() {
        assert_eq!(toml_string("/usr/bin/sudo"), "\"/usr/bin/sudo\"");
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
