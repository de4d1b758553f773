//! The Linux guest image of the `qemu` system: built from Debian packages by
//! `migbench image build`, cached per user, every file recorded with the
//! package and version it came from.
//!
//! Steps (each reported through [`Step`]):
//! 1. **Resolve** with `apt-cache`: the versioned kernel that
//!    `linux-image-cloud-amd64` depends on, and `busybox-static`, `stress`, `gzip`,
//!    `stress-ng` with the closure of their `Depends` (shared libraries);
//!    their candidate versions name the cache entry, together with the
//!    agent's hash and this builder's format.
//! 2. **Download** them with `apt-get download` (no root, nothing installed).
//! 3. **Extract** each with `dpkg-deb -x` into its own directory, so every
//!    file's package is known.
//! 4. **Assemble** the initramfs: `/init` (a busybox shell script: mounts,
//!    `insmod` of the virtio modules in dependency order, then `exec` of the
//!    agent), busybox, `stress`, `stress-ng`, `gzip` and exactly the shared
//!    libraries and loader their ELF `NEEDED` entries reach, the kernel
//!    modules that `virtio_pci` and `virtio_net` need (from each module's
//!    `.modinfo` `depends=`, skipping what `modules.builtin` lists), and the
//!    static agent embedded in this binary.
//! 5. **Compress**: a newc cpio written with the `cpio` crate and gzipped
//!    with `flate2`, both in process: no dependency on the host's `cpio`,
//!    entries with uid/gid 0, mtime 0 and a fixed order (reproducible), and
//!    device nodes (`/dev/console`) without needing root.
//!
//! The `apt-cache` and `dpkg-deb` outputs read here are those tools'
//! documented formats, not a process boundary of ours.

use goblin::elf::Elf;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The static guest agent (`linux-guest`), built by `build.rs`.
pub static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/migbench-agent"));

/// The meta-package whose dependency names the cloud kernel.
pub const KERNEL_META: &str = "linux-image-cloud-amd64";
/// The userland packages.
/// (`gzip` is the build stand-in's compiler, GNU's as natively; busybox's
/// `--install` leaves the real `/bin/gzip` in place.)
pub const USERLAND: [&str; 4] = ["busybox-static", "stress", "stress-ng", "gzip"];
/// The programs taken from them, with their path in the image.
const PROGRAMS: [(&str, &str); 4] = [
    ("busybox-static", "bin/busybox"),
    ("stress", "usr/bin/stress"),
    ("stress-ng", "usr/bin/stress-ng"),
    ("gzip", "bin/gzip"),
];
/// The modules the guest needs for its NIC; their dependencies come along.
const WANTED_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];
/// Bump when the image layout changes, so old cache entries are not reused.
const FORMAT: u32 = 1;
/// Library directories searched inside each extracted package.
const LIB_DIRS: [&str; 3] = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"];
/// Where the image puts every shared library.
const IMAGE_LIB_DIR: &str = "lib/x86_64-linux-gnu";

/// The image's init: pseudo file systems, modules, then the agent.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done < /etc/migbench/modules
exec /bin/migbench-agent
"#;

/// What went wrong while building or loading an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A tool could not be run or failed.
    #[error("`{cmd}` failed: {msg}")]
    Tool {
        /// The command line.
        cmd: String,
        /// Its error output, or why it could not start.
        msg: String,
    },
    /// A file system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Something the image needs is not where Debian puts it.
    #[error("{0}")]
    Missing(String),
    /// An ELF file (program, library or module) could not be read.
    #[error("reading ELF {path}: {msg}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What goblin said.
        msg: String,
    },
    /// A cached manifest is unreadable.
    #[error("image manifest {path}: {msg} (remove the directory and build again)")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// The error.
        msg: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// A Debian package that went into the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its architecture.
    pub architecture: String,
}

/// One file of the image and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// Path inside the initramfs (or `vmlinuz` for the kernel).
    pub path: String,
    /// The Debian package, or `migbench` for the init script and the agent.
    pub package: String,
    /// The package's version.
    pub version: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// `manifest.json` of a cached image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version of the image.
    pub format: u32,
    /// The cache key (directory name).
    pub key: String,
    /// The kernel release (`uname -r` in the guest).
    pub kernel_release: String,
    /// Every package downloaded.
    pub packages: Vec<Package>,
    /// Every file in the image.
    pub files: Vec<ImageFile>,
    /// Kernel modules loaded by init, in order.
    pub modules: Vec<String>,
    /// Modules wanted but built into this kernel.
    pub builtin_modules: Vec<String>,
}

/// A built image on disk.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its cache directory.
    pub dir: PathBuf,
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The gzipped initramfs.
    pub initrd: PathBuf,
    /// What is in it.
    pub manifest: Manifest,
}

/// Progress of [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Asking apt which packages and versions.
    Resolving,
    /// An image with this key is cached already.
    Cached(PathBuf),
    /// Downloading `count` packages.
    Downloading {
        /// Number of packages.
        count: usize,
    },
    /// Extracting package `index` of `count`.
    Extracting {
        /// The package.
        package: String,
        /// 1-based.
        index: usize,
        /// Total.
        count: usize,
    },
    /// Collecting files into the initramfs.
    Assembling,
    /// Writing and compressing `bytes` bytes of initramfs.
    Compressing {
        /// Uncompressed size.
        bytes: u64,
    },
    /// Finished.
    Done(PathBuf),
}

/// The per-user cache: `$XDG_CACHE_HOME/migbench/image`, else
/// `$HOME/.cache/migbench/image`.
pub fn default_cache_dir() -> Result<PathBuf, ImageError> {
    let base =
        match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| {
                ImageError::Missing("neither XDG_CACHE_HOME nor HOME is set: pass --cache-dir".into())
            })?)
            .join(".cache"),
        };
    Ok(base.join("migbench").join("image"))
}

fn run(cmd: &mut Command) -> Result<String, ImageError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| ImageError::Tool {
        cmd: line.clone(),
        msg: format!("{e} (is it installed? it comes with apt/dpkg on Debian)"),
    })?;
    if !out.status.success() {
        return Err(ImageError::Tool { cmd: line, msg: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    String::from_utf8(out.stdout).map_err(|e| ImageError::Tool { cmd: line, msg: format!("output is not UTF-8: {e}") })
}

/// The versioned kernel package that the meta-package depends on.
fn kernel_package() -> Result<String, ImageError> {
    let out = run(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
        .ok_or_else(|| {
            ImageError::Missing(format!("{KERNEL_META} depends on no linux-image-* package (apt-get update?)"))
        })
}

/// `roots` and the closure of their Depends (no Recommends/Suggests).
fn depends_closure(roots: &[&str]) -> Result<BTreeSet<String>, ImageError> {
    let mut cmd = Command::new("apt-cache");
    cmd.args(["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks"])
        .args(["--no-replaces", "--no-enhances"])
        .args(roots);
    let out = run(&mut cmd)?;
    // Top-level lines name packages; indented ones are their relations,
    // `<name>` a virtual package (provided by a real one listed too).
    Ok(out
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Candidate versions of `names` from `apt-cache show`.
fn candidates(names: &BTreeSet<String>) -> Result<Vec<Package>, ImageError> {
    let out = run(Command::new("apt-cache").arg("show").arg("--no-all-versions").args(names))?;
    let mut pkgs = Vec::new();
    for stanza in out.split("\n\n") {
        let field = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()));
        if let (Some(name), Some(version), Some(architecture)) =
            (field("Package:"), field("Version:"), field("Architecture:"))
        {
            pkgs.push(Package { name, version, architecture });
        }
    }
    pkgs.sort();
    pkgs.dedup_by(|a, b| a.name == b.name);
    for n in names {
        if !pkgs.iter().any(|p| &p.name == n) {
            return Err(ImageError::Missing(format!("apt knows no candidate version of {n} (apt-get update?)")));
        }
    }
    Ok(pkgs)
}

fn cache_key(pkgs: &[Package]) -> String {
    let mut h = served_file::fnv1a(served_file::FNV64_OFFSET, &FORMAT.to_le_bytes());
    for p in pkgs {
        h = served_file::fnv1a(h, format!("{}={}:{};", p.name, p.version, p.architecture).as_bytes());
    }
    h = served_file::fnv1a(h, AGENT);
    h = served_file::fnv1a(h, INIT.as_bytes());
    for m in WANTED_MODULES {
        h = served_file::fnv1a(h, m.as_bytes());
    }
    format!("{h:016x}")
}

/// Loads the image cached in `dir`.
pub fn load(dir: &Path) -> Result<Image, ImageError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| ImageError::Manifest { path: path.clone(), msg: e.to_string() })?;
    let image = Image { dir: dir.to_path_buf(), kernel: dir.join("vmlinuz"), initrd: dir.join("initrd.img"), manifest };
    for f in [&image.kernel, &image.initrd] {
        if !f.is_file() {
            return Err(ImageError::Manifest { path, msg: format!("{} is missing", f.display()) });
        }
    }
    Ok(image)
}

/// Builds the image in `cache_root` (or returns the cached one unless
/// `force`).
pub fn build(cache_root: &Path, force: bool, progress: &mut dyn FnMut(Step)) -> Result<Image, ImageError> {
    progress(Step::Resolving);
    let kernel = kernel_package()?;
    let mut names = depends_closure(&USERLAND)?;
    names.insert(kernel.clone());
    let pkgs = candidates(&names)?;
    let key = cache_key(&pkgs);
    let dir = cache_root.join(&key);
    if !force && dir.join("manifest.json").is_file() {
        if let Ok(img) = load(&dir) {
            progress(Step::Cached(dir));
            return Ok(img);
        }
    }
    std::fs::create_dir_all(cache_root).map_err(io_err(format!("creating {}", cache_root.display())))?;
    let tmp = cache_root.join(format!(".build-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = build_in(&tmp, &key, &kernel, &pkgs, progress);
    let finish = result.and_then(|()| {
        let _ = std::fs::remove_dir_all(tmp.join("debs"));
        let _ = std::fs::remove_dir_all(tmp.join("staging"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(io_err(format!("moving the image to {}", dir.display())))
    });
    if let Err(e) = finish {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    progress(Step::Done(dir.clone()));
    load(&dir)
}

/// One file to put into the initramfs.
struct Entry {
    data: Vec<u8>,
    mode: u32,
    package: String,
    version: String,
}

fn build_in(
    tmp: &Path,
    key: &str,
    kernel_pkg: &str,
    pkgs: &[Package],
    progress: &mut dyn FnMut(Step),
) -> Result<(), ImageError> {
    let debs = tmp.join("debs");
    let staging = tmp.join("staging");
    std::fs::create_dir_all(&debs).map_err(io_err(format!("creating {}", debs.display())))?;
    progress(Step::Downloading { count: pkgs.len() });
    let specs: Vec<String> = pkgs.iter().map(|p| format!("{}={}", p.name, p.version)).collect();
    run(Command::new("apt-get").arg("download").arg("-q").args(&specs).current_dir(&debs))?;

    let mut files: Vec<PathBuf> = std::fs::read_dir(&debs)
        .map_err(io_err("listing the downloaded packages"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    files.sort();
    let mut roots: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    for (i, deb) in files.iter().enumerate() {
        let fields = run(Command::new("dpkg-deb").arg("-f").arg(deb).args(["Package", "Version"]))?;
        let field = |k: &str| fields.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()));
        let (Some(name), Some(version)) = (field("Package:"), field("Version:")) else {
            return Err(ImageError::Missing(format!("{} has no Package/Version fields", deb.display())));
        };
        progress(Step::Extracting { package: name.clone(), index: i + 1, count: files.len() });
        let root = staging.join(&name);
        std::fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
        roots.insert(name, (root, version));
    }
    for p in pkgs {
        if !roots.contains_key(&p.name) {
            return Err(ImageError::Missing(format!("apt-get download did not fetch {}", p.name)));
        }
    }

    progress(Step::Assembling);
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let (kroot, kver) = &roots[kernel_pkg];
    let (vmlinuz, krel) = find_kernel(kroot)?;
    let mut manifest_files = vec![ImageFile {
        path: "vmlinuz".into(),
        package: kernel_pkg.into(),
        version: kver.clone(),
        bytes: std::fs::metadata(&vmlinuz).map_err(io_err("reading the kernel"))?.len(),
    }];
    std::fs::copy(&vmlinuz, tmp.join("vmlinuz")).map_err(io_err("copying the kernel"))?;

    let (modules, builtin) = resolve_modules(&kroot.join("lib/modules").join(&krel))?;
    for (name, path) in &modules {
        let data = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
        entries.insert(
            format!("lib/modules/{name}.ko"),
            Entry { data, mode: 0o644, package: kernel_pkg.into(), version: kver.clone() },
        );
    }
    let list: String = modules.iter().map(|(n, _)| format!("{n}\n")).collect();
    let ours = |data: Vec<u8>, mode| Entry {
        data,
        mode,
        package: "migbench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    entries.insert("etc/migbench/modules".into(), ours(list.into_bytes(), 0o644));
    entries.insert("init".into(), ours(INIT.as_bytes().to_vec(), 0o755));
    entries.insert("bin/migbench-agent".into(), ours(AGENT.to_vec(), 0o755));

    let mut pending: Vec<(String, PathBuf, String)> = Vec::new();
    for (pkg, path) in PROGRAMS {
        let (root, _) = &roots[pkg];
        pending.push((path.to_string(), root.join(path), pkg.to_string()));
    }
    while let Some((dest, src, pkg)) = pending.pop() {
        if entries.contains_key(&dest) {
            continue;
        }
        let data = std::fs::read(&src).map_err(io_err(format!("reading {}", src.display())))?;
        let elf = Elf::parse(&data).map_err(|e| ImageError::Elf { path: src.clone(), msg: e.to_string() })?;
        let mut needs: Vec<(String, String)> =
            elf.libraries.iter().map(|l| (format!("{IMAGE_LIB_DIR}/{l}"), l.to_string())).collect();
        if let Some(interp) = elf.interpreter {
            let rel = interp.trim_start_matches('/').to_string();
            needs.push((rel.clone(), rel));
        }
        for (d, what) in needs {
            if entries.contains_key(&d) || pending.iter().any(|(p, _, _)| p == &d) {
                continue;
            }
            let (p, s) = find_lib(&roots, &what)?;
            pending.push((d, s, p));
        }
        let version = roots[&pkg].1.clone();
        entries.insert(dest, Entry { data, mode: 0o755, package: pkg, version });
    }

    for (path, e) in &entries {
        manifest_files.push(ImageFile {
            path: path.clone(),
            package: e.package.clone(),
            version: e.version.clone(),
            bytes: e.data.len() as u64,
        });
    }
    let total: u64 = entries.values().map(|e| e.data.len() as u64).sum();
    progress(Step::Compressing { bytes: total });
    write_initramfs(&tmp.join("initrd.img"), &entries)?;

    let manifest = Manifest {
        format: FORMAT,
        key: key.into(),
        kernel_release: krel,
        packages: pkgs.to_vec(),
        files: manifest_files,
        modules: modules.into_iter().map(|(n, _)| n).collect(),
        builtin_modules: builtin,
    };
    let json = serde_json::to_string_pretty(&manifest)
        .map_err(|e| ImageError::Missing(format!("encoding the manifest: {e}")))?;
    std::fs::write(tmp.join("manifest.json"), json).map_err(io_err("writing manifest.json"))
}

/// `boot/vmlinuz-<release>` of the kernel package.
fn find_kernel(root: &Path) -> Result<(PathBuf, String), ImageError> {
    let boot = root.join("boot");
    let rd = std::fs::read_dir(&boot).map_err(io_err(format!("listing {}", boot.display())))?;
    rd.flatten()
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("vmlinuz-").map(|rel| (e.path(), rel.to_string()))
        })
        .ok_or_else(|| ImageError::Missing(format!("no vmlinuz-* in {}", boot.display())))
}

/// Module names use `_` and `-` interchangeably; `_` is canonical.
fn mod_name(s: &str) -> String {
    s.replace('-', "_")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            walk(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

/// The `depends=` of a module's `.modinfo`.
fn module_depends(path: &Path) -> Result<Vec<String>, ImageError> {
    let data = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    let elf = Elf::parse(&data).map_err(|e| ImageError::Elf { path: path.into(), msg: e.to_string() })?;
    let sec = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".modinfo"))
        .and_then(|s| s.file_range())
        .and_then(|r| data.get(r))
        .ok_or_else(|| ImageError::Elf { path: path.into(), msg: "no .modinfo section".into() })?;
    Ok(sec
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.strip_prefix("depends="))
        .flat_map(|d| d.split(',').filter(|s| !s.is_empty()).map(mod_name).collect::<Vec<_>>())
        .collect())
}

/// A kernel module: its name and file.
type Module = (String, PathBuf);

/// The modules to load, dependencies first, and the wanted ones that are
/// built into the kernel.
fn resolve_modules(moddir: &Path) -> Result<(Vec<Module>, Vec<String>), ImageError> {
    let builtin_txt = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> =
        builtin_txt.lines().filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko")).map(mod_name).collect();
    let mut all = Vec::new();
    walk(&moddir.join("kernel"), &mut all).map_err(io_err(format!("listing {}", moddir.display())))?;
    let mut by_name = BTreeMap::new();
    for p in all {
        let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(stem) = n.strip_suffix(".ko") {
            by_name.insert(mod_name(stem), p);
        } else if n.contains(".ko.") {
            return Err(ImageError::Missing(format!("compressed kernel modules ({n}) are not supported yet")));
        }
    }
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    let mut skipped = Vec::new();
    // Depth-first, dependencies before dependants; `visiting` catches cycles.
    fn visit(
        n: &str,
        by_name: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<(), ImageError> {
        if order.iter().any(|(m, _)| m == n) || builtin.contains(n) {
            return Ok(());
        }
        if !visiting.insert(n.to_string()) {
            return Err(ImageError::Missing(format!("kernel module dependency cycle at {n}")));
        }
        let path = by_name
            .get(n)
            .ok_or_else(|| ImageError::Missing(format!("kernel module {n} is neither built in nor shipped")))?;
        for d in module_depends(path)? {
            visit(&d, by_name, builtin, order, visiting)?;
        }
        order.push((n.to_string(), path.clone()));
        Ok(())
    }
    for w in WANTED_MODULES {
        if builtin.contains(w) {
            skipped.push(w.to_string());
        }
        visit(w, &by_name, &builtin, &mut order, &mut BTreeSet::new())?;
    }
    Ok((order, skipped))
}

/// Resolves `path` inside package root `root`, following symlinks
/// (absolute ones relative to `root`).
fn resolve_in(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut p = root.join(rel);
    for _ in 0..16 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(&p).ok()?;
                p = if t.is_absolute() { root.join(t.strip_prefix("/").ok()?) } else { p.parent()?.join(t) };
            }
            Ok(m) if m.is_file() => return Some(p),
            _ => return None,
        }
    }
    None
}

/// Finds library `what` (a soname, or the loader's path) in the extracted
/// packages: which package, and the real file.
fn find_lib(roots: &BTreeMap<String, (PathBuf, String)>, what: &str) -> Result<(String, PathBuf), ImageError> {
    for (pkg, (root, _)) in roots {
        let found = if what.contains('/') {
            resolve_in(root, Path::new(what))
        } else {
            LIB_DIRS.iter().find_map(|d| resolve_in(root, &Path::new(d).join(what)))
        };
        if let Some(f) = found {
            return Ok((pkg.clone(), f));
        }
    }
    Err(ImageError::Missing(format!("no downloaded package has {what}")))
}

/// Writes `entries` (plus their directories and `/dev/console`) as a
/// gzipped newc cpio archive.
fn write_initramfs(path: &Path, entries: &BTreeMap<String, Entry>) -> Result<(), ImageError> {
    let f = std::fs::File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    let mut gz = flate2::write::GzEncoder::new(io::BufWriter::new(f), flate2::Compression::default());
    let mut dirs: BTreeSet<String> =
        ["dev", "proc", "sys", "tmp", "bin", "usr/bin"].iter().map(|s| s.to_string()).collect();
    for p in entries.keys() {
        let mut d = Path::new(p).parent();
        while let Some(x) = d.filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(x.to_string_lossy().into_owned());
            d = x.parent();
        }
    }
    let err = io_err(format!("writing {}", path.display()));
    let mut ino = 1u32;
    let mut w = |gz: &mut flate2::write::GzEncoder<io::BufWriter<std::fs::File>>,
                 b: cpio::NewcBuilder,
                 data: &[u8]|
     -> io::Result<()> {
        ino += 1;
        let size = u32::try_from(data.len()).map_err(|_| io::Error::other("file over 4 GiB"))?;
        let mut wr = b.ino(ino).uid(0).gid(0).mtime(0).write(&mut *gz, size);
        wr.write_all(data)?;
        wr.finish()?;
        Ok(())
    };
    let res = (|| -> io::Result<()> {
        // BTreeSet order puts a parent before its children.
        for d in &dirs {
            w(&mut gz, cpio::NewcBuilder::new(d).mode(0o040755).nlink(2), &[])?;
        }
        w(&mut gz, cpio::NewcBuilder::new("dev/console").mode(0o020600).nlink(1).rdev_major(5).rdev_minor(1), &[])?;
        for (p, e) in entries {
            w(&mut gz, cpio::NewcBuilder::new(p).mode(0o100000 | e.mode).nlink(1), &e.data)?;
        }
        cpio::newc::trailer(&mut gz)?;
        gz.finish()?.flush()
    })();
    res.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_a_static_executable() {
        let elf = Elf::parse(AGENT).expect("the embedded agent is an ELF");
        assert!(elf.interpreter.is_none(), "the agent must not need a dynamic loader");
        assert!(elf.libraries.is_empty(), "the agent must need no shared library: {:?}", elf.libraries);
    }

    #[test]
    fn the_cache_key_depends_on_versions() {
        let p = |v: &str| vec![Package { name: "stress".into(), version: v.into(), architecture: "amd64".into() }];
        assert_eq!(cache_key(&p("1")), cache_key(&p("1")));
        assert_ne!(cache_key(&p("1")), cache_key(&p("2")));
    }
}
