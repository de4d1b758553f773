//! `migbench image`: builds, shows or exports the Linux guest image of the
//! `qemu` system (the logic is `scenarios::qemu::image`).

use anyhow::Context;
use clap::{Args, Subcommand};
use scenarios::qemu::image::{self, Step};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `migbench image`.
#[derive(Args, Debug)]
pub struct ImageArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ImageAction,
}

/// `migbench image` subcommands.
#[derive(Subcommand, Debug)]
pub enum ImageAction {
    /// Download the Debian packages (cloud kernel, busybox-static, stress, stress-ng and their libraries) and assemble
    /// the kernel and initramfs; reuses the cached image when the packages' versions are unchanged.
    ///
    /// Needs a Debian or Ubuntu host with apt-get and dpkg-deb (no root, nothing is installed). On other hosts give
    /// QEMU runs `--kernel` and `--initrd` instead; such an initrd must run `migbench image agent`'s binary as init.
    Build {
        /// Cache directory [default: $XDG_CACHE_HOME/migbench/image, else ~/.cache/migbench/image].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Build again even if a cached image matches.
        #[arg(long)]
        force: bool,
        /// Print the manifest (JSON) to stdout when done.
        #[arg(long)]
        json: bool,
    },
    /// Write the static guest agent binary (init of the image) to a file, to build your own initrd.
    Agent {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Builds the image (or finds it cached) in `cache_dir` (default: the
/// per-user cache), reporting each step through `progress`.
pub fn build_cached(
    cache_dir: Option<PathBuf>,
    force: bool,
    progress: &crate::progress::Progress,
) -> anyhow::Result<image::Image> {
    let root = match cache_dir {
        Some(d) => d,
        None => image::default_cache_dir()?,
    };
    let t0 = Instant::now();
    image::build(&root, force, &mut |s| {
        let at = t0.elapsed().as_secs_f64();
        let line = match s {
            Step::Resolving => "resolving packages with apt-cache".to_string(),
            Step::Cached(d) => format!("cached image is current: {}", d.display()),
            Step::Downloading { count } => format!("downloading {count} packages with apt-get download"),
            Step::Extracting { package, index, count } => format!("extracting {index}/{count} {package}"),
            Step::Assembling => "assembling the initramfs".to_string(),
            Step::Compressing { bytes } => {
                format!("writing and compressing {:.1} MiB", bytes as f64 / 1048576.0)
            }
            Step::Done(d) => format!("done: {}", d.display()),
        };
        progress.update(crate::progress::Update::Phase(&format!("image: [{at:5.1}s] {line}")));
    })
    .context("building the Linux guest image")
}

/// Runs `migbench image …`.
pub fn run(a: ImageArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        ImageAction::Build { cache_dir, force, json } => {
            let progress = crate::progress::Progress::new(&[]);
            let built = build_cached(cache_dir, force, &progress);
            progress.finish();
            let img = built?;
            let m = &img.manifest;
            eprintln!("kernel  {} ({})", img.kernel.display(), m.kernel_release);
            eprintln!("initrd  {}", img.initrd.display());
            eprintln!(
                "modules {} (built in: {})",
                m.modules.join(" "),
                if m.builtin_modules.is_empty() { "none".to_string() } else { m.builtin_modules.join(" ") }
            );
            eprintln!(
                "{} files from {} packages, listed in {}",
                m.files.len(),
                m.packages.len(),
                img.dir.join("manifest.json").display()
            );
            if json {
                println!("{}", serde_json::to_string_pretty(m)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageAction::Agent { out } => {
            std::fs::write(&out, image::AGENT).with_context(|| format!("writing {}", out.display()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("making {} executable", out.display()))?;
            }
            eprintln!("wrote the static guest agent ({} bytes) to {}", image::AGENT.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
