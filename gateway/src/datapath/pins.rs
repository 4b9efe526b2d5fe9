//! What outlives the daemon in the kernel: the fast path's objects pinned in bpffs, so that a
//! restart, a crash or an upgrade never takes the programs off the interfaces.
//!
//! One directory per network namespace (interface names are per namespace, bpffs is not):
//!
//! ```text
//! <root>/net-<netns inode>/
//!     links/<interface>        the XDP link (bpf_link) of each attached interface
//!     instance-<ns>-<pid>/     one loaded fast path: its program arrays (the kernel empties
//!                              an array whose last user reference closes, so a killed
//!                              daemon's tail calls would stop working without these pins)
//! ```
//!
//! A link keeps its program, and the program its maps, while the link is pinned, so a daemon
//! that is killed leaves the fast path forwarding with the tables in force. The next daemon
//! loads its own programs and maps (its build's layout, whatever the previous one had),
//! installs its tables into them, and only then replaces the program in each pinned link
//! with `bpf_link_update`: one atomic switch, no moment without a program. Once the previous
//! programs can no longer be running it removes the previous instance's directory.
//!
//! Removing a link's pin (`mecgw datapath detach`, or a stop without `keep_datapath`) detaches
//! the program once no process holds the link open.

use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};

use super::Attachment;

/// bpffs's `f_type` (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The default pin root; the systemd unit, the image and the Kubernetes manifests use it.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/mecgw";

/// An error about the pinned objects, with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {error}")]
pub struct PinError {
    pub action: &'static str,
    pub path: PathBuf,
    /// Shown in the message (not as a separate cause, which would repeat it): an I/O error,
    /// or aya's for a pin, link or map operation.
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

fn pin_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError + use<> {
    let path = path.to_path_buf();
    move |source| PinError {
        action,
        path,
        error: source.into(),
    }
}

/// This network namespace's directory under a pin root.
#[derive(Clone, Debug)]
pub struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// The directory for the calling thread's network namespace under `root` (not created).
    pub fn for_this_netns(root: &Path) -> Result<PinDir, PinError> {
        let ns = Path::new("/proc/thread-self/ns/net");
        let inode = std::fs::metadata(ns)
            .map_err(pin_err("reading the network namespace of", ns))?
            .ino();
        Ok(PinDir {
            dir: root.join(format!("net-{inode}")),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the directories (the root too), after checking that the root's parent is a
    /// mounted bpffs: anywhere else a pin fails with a less helpful error.
    pub fn create(&self) -> Result<(), PinError> {
        let links = self.links_dir();
        let not_bpffs = |path: &Path| PinError {
            action: "pinning BPF objects in",
            path: path.to_path_buf(),
            error: "not on a BPF filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`; a \
                     container needs the host's /sys/fs/bpf mounted; `ip netns exec` hides it \
                     under a fresh /sys) or set [xdp] pin_dir to a directory on one"
                .into(),
        };
        // The nearest existing ancestor decides: a directory made anywhere else would not
        // hold pins.
        let existing = links.ancestors().find(|p| p.exists()).unwrap_or(&links);
        if !is_bpffs(existing) && existing.starts_with("/sys") {
            return Err(not_bpffs(existing));
        }
        std::fs::create_dir_all(&links).map_err(pin_err("creating the pin directory", &links))?;
        if !is_bpffs(&links) {
            return Err(not_bpffs(&links));
        }
        Ok(())
    }

    fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    /// Where the link of `iface` is pinned.
    pub fn link_path(&self, iface: &str) -> PathBuf {
        self.links_dir().join(iface)
    }

    /// A new, empty directory for the fast path this process loads.
    pub fn new_instance(&self) -> Result<PathBuf, PinError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = self
            .dir
            .join(format!("instance-{nanos}-{}", std::process::id()));
        std::fs::create_dir(&path).map_err(pin_err("creating the instance directory", &path))?;
        Ok(path)
    }

    /// The instance directories present, oldest first.
    pub fn instances(&self) -> Result<Vec<PathBuf>, PinError> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(pin_err("listing", &self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(pin_err("listing", &self.dir))?;
            if entry.file_name().to_string_lossy().starts_with("instance-") {
                found.push(entry.path());
            }
        }
        found.sort();
        Ok(found)
    }

    /// The interfaces with a pinned link.
    pub fn linked_interfaces(&self) -> Result<Vec<String>, PinError> {
        let links = self.links_dir();
        let entries = match std::fs::read_dir(&links) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(pin_err("listing", &links)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(pin_err("listing", &links))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Removes every instance directory but `keep`: their program arrays are released, and
    /// with them the programs no link runs any more.
    pub fn remove_instances_except(&self, keep: Option<&Path>) -> Result<usize, PinError> {
        let mut removed = 0;
        for dir in self.instances()? {
            if Some(dir.as_path()) != keep {
                std::fs::remove_dir_all(&dir).map_err(pin_err("removing", &dir))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Unpins `iface`'s link (the program detaches once no process holds the link open).
    pub fn unpin_link(&self, iface: &str) -> Result<bool, PinError> {
        let path = self.link_path(iface);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(pin_err("unpinning", &path)(e)),
        }
    }

    /// The pinned links: interface, and the kernel's view of the link (`None`: unreadable).
    pub fn links(&self) -> Result<Vec<(String, Option<PinnedLinkInfo>)>, PinError> {
        let mut out = Vec::new();
        for iface in self.linked_interfaces()? {
            let info = open_link(&self.link_path(&iface))
                .ok()
                .flatten()
                .map(|(_, s)| PinnedLinkInfo {
                    link_id: s.link_id,
                    ifindex: s.ifindex,
                    program_id: s.prog_id,
                });
            out.push((iface, info));
        }
        Ok(out)
    }

    /// Removes everything: links (the programs detach) and instances. What was removed.
    pub fn detach_all(&self) -> Result<Detached, PinError> {
        let mut detached = Detached::default();
        for iface in self.linked_interfaces()? {
            if self.unpin_link(&iface)? {
                detached.links.push(iface);
            }
        }
        detached.instances = self.remove_instances_except(None)?;
        for dir in [self.links_dir(), self.dir.clone()] {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(pin_err("removing", &dir)(e)),
            }
        }
        Ok(detached)
    }
}

/// What [`PinDir::detach_all`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detached {
    /// Interfaces whose link was unpinned.
    pub links: Vec<String>,
    /// Instance directories removed.
    pub instances: usize,
}

/// The pins of one daemon's fast path, and what becomes of them when it stops.
///
/// Made before the fast path is loaded (its instance directory holds the program arrays);
/// each interface's [`Attachment`] is recorded as it is made. Until [`InstancePins::started`],
/// dropping it undoes a failed start: links this daemon attached are unpinned (detached) and
/// its instance directory is removed, unless a previous instance's link already runs this
/// daemon's programs, which then stay (with their tables) rather than leave the interface
/// without a program.
#[derive(Debug)]
pub struct InstancePins {
    dir: PinDir,
    instance: PathBuf,
    attached: Vec<String>,
    replaced: Vec<String>,
    settled: bool,
}

impl InstancePins {
    /// Creates this namespace's pin directory under `root` and a new instance directory.
    pub fn create(root: &Path) -> Result<InstancePins, PinError> {
        let dir = PinDir::for_this_netns(root)?;
        dir.create()?;
        let instance = dir.new_instance()?;
        Ok(InstancePins {
            dir,
            instance,
            attached: Vec::new(),
            replaced: Vec::new(),
            settled: false,
        })
    }

    /// Where the loaded fast path pins its program arrays.
    pub fn instance(&self) -> &Path {
        &self.instance
    }

    pub fn dir(&self) -> &PinDir {
        &self.dir
    }

    /// Records how `iface` got this daemon's program.
    pub fn record(&mut self, iface: &str, attachment: Attachment) {
        match attachment {
            Attachment::Attached => self.attached.push(iface.to_string()),
            Attachment::Replaced { .. } => self.replaced.push(iface.to_string()),
        }
    }

    /// Every interface runs this daemon's programs: waits until no packet can still be in a
    /// previous instance's program (an RCU grace period), and returns the previous
    /// instances' directories, oldest first, for what is to be taken from them
    /// ([`super::FastPath::adopt_flows`]) before [`InstancePins::remove_previous`].
    pub fn started(&mut self) -> Result<Vec<PathBuf>, PinError> {
        self.settled = true;
        let mut previous = self.dir.instances()?;
        previous.retain(|p| p != &self.instance);
        if !previous.is_empty() {
            super::writer::wait_for_readers();
        }
        Ok(previous)
    }

    /// Removes the previous instances' directories: their program arrays and maps are
    /// released. How many were removed.
    pub fn remove_previous(&self) -> Result<usize, PinError> {
        self.dir.remove_instances_except(Some(&self.instance))
    }

    /// At stop: `keep` leaves everything (the programs keep forwarding with the tables in
    /// force, and the next daemon adopts the links); otherwise the links are unpinned (the
    /// programs detach when this process closes them) and the instance directory removed.
    pub fn release(mut self, keep: bool) -> Result<(), PinError> {
        self.settled = true;
        if keep {
            return Ok(());
        }
        for iface in self.attached.iter().chain(&self.replaced) {
            self.dir.unpin_link(iface)?;
        }
        std::fs::remove_dir_all(&self.instance).map_err(pin_err("removing", &self.instance))?;
        // Empty now unless another daemon's (in this namespace) pins are there too.
        let _ = std::fs::remove_dir(self.dir.links_dir());
        let _ = std::fs::remove_dir(&self.dir.dir);
        Ok(())
    }
}

impl Drop for InstancePins {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // A failed start: what cannot be undone is said, with the way to remove it.
        for iface in &self.attached {
            if let Err(e) = self.dir.unpin_link(iface) {
                tracing::warn!(error = %e, "the program stays on {iface}: run `mecgw datapath detach`");
            }
        }
        if self.replaced.is_empty()
            && let Err(e) = std::fs::remove_dir_all(&self.instance)
        {
            tracing::warn!(
                instance = %self.instance.display(),
                error = %e,
                "the failed start's pins stay: run `mecgw datapath detach`"
            );
        }
    }
}

/// A pinned link as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedLinkInfo {
    pub link_id: u32,
    /// 0: the interface is gone, the link no longer attached (defunct).
    pub ifindex: u32,
    pub program_id: u32,
}

/// What the kernel says about a pinned XDP link (from /proc/self/fdinfo).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub link_id: u32,
    /// The interface it is attached to; 0 once the interface is gone (the link is defunct).
    pub ifindex: u32,
    /// The program it runs.
    pub prog_id: u32,
}

/// Opens the link pinned at `path`, if there is one.
pub(crate) fn open_link(path: &Path) -> Result<Option<(FdLink, LinkState)>, PinError> {
    if !path.exists() {
        return Ok(None);
    }
    let pinned = PinnedLink::from_pin(path).map_err(|e| PinError {
        action: "opening the pinned link",
        path: path.to_path_buf(),
        error: e.into(),
    })?;
    let link = FdLink::from(pinned);
    let state = link_state(&link).map_err(pin_err("reading the state of the link", path))?;
    Ok(Some((link, state)))
}

fn link_state(link: &FdLink) -> io::Result<LinkState> {
    // aya's `LinkInfo` gives the link's id but not its interface, and `FdLink` keeps its
    // descriptor private: the kernel's fdinfo of the descriptor with that link id has both.
    let id = link.info().map_err(io::Error::other)?.id();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile
        };
        if let Some(state) = parse_fdinfo(&text).filter(|s| s.link_id == id) {
            return Ok(state);
        }
    }
    Err(io::Error::other(format!(
        "link {id} is not an XDP link held by this process"
    )))
}

fn parse_fdinfo(text: &str) -> Option<LinkState> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    if field("link_type")? != "xdp" {
        return None;
    }
    Some(LinkState {
        link_id: field("link_id")?.parse().ok()?,
        ifindex: field("ifindex")?.parse().ok()?,
        prog_id: field("prog_id")?.parse().ok()?,
    })
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` is plain old data, all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is a valid out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    let magic = st.f_type as i64;
    rc == 0 && magic == BPF_FS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_an_xdp_link_gives_interface_and_program() {
        let text = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\nlink_type:\txdp\n\
                    link_id:\t7\nprog_tag:\t0123456789abcdef\nprog_id:\t42\nifindex:\t3\n";
        assert_eq!(
            parse_fdinfo(text),
            Some(LinkState {
                link_id: 7,
                ifindex: 3,
                prog_id: 42
            })
        );
    }

    #[test]
    fn a_pin_error_says_its_cause_once_in_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let e = PinDir::for_this_netns(dir.path())
            .and_then(|d| d.create())
            .expect_err("a tmpfs is not bpffs");
        let text = format!("{:#}", anyhow::Error::from(e).context("[xdp] pin_dir"));
        assert_eq!(text.matches("not on a BPF filesystem").count(), 1, "{text}");
    }

    #[test]
    fn fdinfo_of_another_link_type_is_not_ours() {
        let text = "link_type:\ttracing\nlink_id:\t7\nprog_id:\t42\n";
        assert_eq!(parse_fdinfo(text), None);
    }

    #[test]
    fn instances_are_listed_oldest_first_and_removed_but_the_kept_one() {
        // A plain directory stands in for bpffs: listing and removal are file operations.
        let root = tempfile::tempdir().unwrap();
        let pins = PinDir {
            dir: root.path().join("net-1"),
        };
        std::fs::create_dir_all(pins.links_dir()).unwrap();
        let a = pins.dir.join("instance-100-1");
        let b = pins.dir.join("instance-200-2");
        std::fs::create_dir(&b).unwrap();
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("map"), b"").unwrap();
        assert_eq!(pins.instances().unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(pins.remove_instances_except(Some(&b)).unwrap(), 1);
        assert_eq!(pins.instances().unwrap(), vec![b]);
        std::fs::write(pins.link_path("n3"), b"").unwrap();
        let d = pins.detach_all().unwrap();
        assert_eq!(
            d,
            Detached {
                links: vec!["n3".into()],
                instances: 1
            }
        );
        assert!(!pins.dir.exists());
    }
}
