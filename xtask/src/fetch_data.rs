//! `cargo xtask fetch-data`: download, verify and unpack CIFAR-10/100 in the official binary layout.
//!
//! The pipeline, each step skipped when its result is already there:
//! 1. download `URL` to `DIR/<archive>.part`, resuming a partial file with an HTTP `Range`
//!    request (a server that answers `200` instead of `206` gets a fresh download);
//! 2. verify the finished file (SHA-256 and the authors' MD5), then rename it to `DIR/<archive>`
//!    (a wrong checksum deletes the `.part` and stops with expected vs got);
//! 3. unpack the tar.gz into a staging folder, check every data file's exact size and rename the
//!    folder to `DIR/cifar-10-batches-bin/` or `DIR/cifar-100-binary/`.
//!
//! Other commands call [`ensure_dataset`] to get the extracted directory.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use md5::Md5;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// The environment variable that sets the default data directory.
pub(crate) const DATA_DIR_ENV: &str = "MINW_DATA_DIR";

/// The long help (set on the subcommand in `main.rs`, where the variant's doc comment would
/// otherwise replace it).
pub(crate) const LONG_ABOUT: &str = "\
Download CIFAR-10 or CIFAR-100 in the official binary layout, verify it and unpack it into the
data directory. Prints the extracted directory on stdout; progress and logs go to stderr.

Steps (each skipped when its result is already there, unless --force):
  1. download the archive to DIR/<archive>.part; an interrupted download resumes where it stopped
     the next time the command runs (HTTP Range; a server that ignores Range gets a fresh download)
  2. verify the archive's SHA-256 and MD5, then rename it to DIR/<archive>; a wrong checksum
     deletes the .part file and stops with the expected and actual values
  3. unpack it to DIR/cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin: 30730000 bytes
     each) or DIR/cifar-100-binary/ (train.bin: 153700000 bytes, test.bin: 30740000 bytes) and
     check that every data file is there with exactly that size

Sources: https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and
https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz (the authors' page), or --url, or --from.

Checksums: both must match.
  cifar-10-binary.tar.gz   170052171 bytes
    SHA-256 c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd
    MD5     c32a1d4ab5d03f1284b67883e8d87530
  cifar-100-binary.tar.gz  168513733 bytes
    SHA-256 58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec
    MD5     03b5dce01913d631647c71ecec9e9cb8
The MD5 sums are the ones the authors publish next to the archives. The authors publish no
SHA-256; ours are the ones TensorFlow Datasets records for the same URLs (url_checksums/cifar10.txt
and cifar100.txt, with the same byte sizes), which other projects' downloaders use as well.

Offline: where the host cannot be reached the command stops and prints the command to run instead:
get the archive by other means (another machine, a mirror), then pass it with --from.";

const AFTER_LONG_HELP: &str = "\
Examples:
  cargo xtask fetch-data cifar10
  cargo xtask fetch-data cifar100 --data-dir /srv/data
  MINW_DATA_DIR=/srv/data cargo xtask fetch-data cifar10
  cargo xtask fetch-data cifar10 --from ~/Downloads/cifar-10-binary.tar.gz
  cargo xtask fetch-data cifar10 --from /mnt/usb/cifar-10-batches-bin
  cargo xtask fetch-data cifar10 --url https://mirror.example.org/cifar-10-binary.tar.gz
  cargo xtask fetch-data cifar10 --force

See docs/data.md for the data layout, Fashion-MNIST and offline use.";

/// Arguments of `cargo xtask fetch-data`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub(crate) struct Args {
    /// The dataset to fetch.
    dataset: Dataset,
    /// Where the archive and the extracted folder go [default: $MINW_DATA_DIR, else ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Use a local copy instead of downloading: the .tar.gz archive (verified by its checksums)
    /// or an already extracted folder (verified by its file sizes).
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    from: Option<PathBuf>,
    /// Download from this URL instead of the official one (a mirror serving the same archive).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Redo everything: delete the extracted folder, the archive and any partial download first.
    #[arg(long)]
    force: bool,
    /// Expected SHA-256 of the archive in place of the official one (for tests; giving --sha256
    /// or --md5 replaces both official sums with the ones given).
    #[arg(long, hide = true, value_name = "HEX")]
    sha256: Option<String>,
    /// Expected MD5 of the archive in place of the official one (for tests).
    #[arg(long, hide = true, value_name = "HEX")]
    md5: Option<String>,
    /// Records per 10000-record batch of the real layout (for tests with small archives).
    #[arg(long, hide = true, value_name = "N", default_value_t = Layout::OFFICIAL.records_per_batch)]
    records: u64,
}

/// Runs `cargo xtask fetch-data`.
pub(crate) fn run(args: Args) -> Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let source = match (args.from, args.url) {
        (Some(path), _) => Source::Local(path),
        (None, Some(url)) => Source::Url(url),
        (None, None) => Source::Official,
    };
    let checksums = if args.sha256.is_some() || args.md5.is_some() {
        Checksums {
            sha256: args
                .sha256
                .map(|h| parse_hex(&h, 32, "--sha256"))
                .transpose()?,
            md5: args.md5.map(|h| parse_hex(&h, 16, "--md5")).transpose()?,
        }
    } else {
        args.dataset.official_checksums()
    };
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let request = Request {
        dataset: args.dataset,
        data_dir,
        source,
        checksums,
        layout: Layout {
            records_per_batch: args.records,
        },
        if_present: if args.force {
            IfPresent::Refetch
        } else {
            IfPresent::Keep
        },
    };
    // A failed download is an expected outcome: `main` prints the message and its causes
    // (never a backtrace) and exits with status 1.
    let dir = fetch(&request)?;
    println!("{}", dir.display());
    Ok(())
}

/// The data directory used when none is given: `$MINW_DATA_DIR`, else `data` under the current
/// directory.
pub(crate) fn default_data_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("data"), PathBuf::from)
}

/// Makes sure `dataset` is extracted and verified under `data_dir`, fetching it from `source`
/// (official checksums and sizes) when it is not, and returns the extracted directory.
///
/// Where the host cannot be reached the error is an [`Unreachable`] whose message holds the
/// command to run instead; callers can `downcast_ref` it.
pub(crate) fn ensure_dataset(
    dataset: Dataset,
    data_dir: &Path,
    source: &Source,
) -> Result<PathBuf> {
    fetch(&Request {
        dataset,
        data_dir: data_dir.to_path_buf(),
        source: source.clone(),
        checksums: dataset.official_checksums(),
        layout: Layout::OFFICIAL,
        if_present: IfPresent::Keep,
    })
}

/// A dataset `fetch-data` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Dataset {
    /// CIFAR-10, binary version (10 classes, 50000 train + 10000 test images).
    #[value(name = "cifar10")]
    Cifar10,
    /// CIFAR-100, binary version (100 fine / 20 coarse classes, 50000 train + 10000 test images).
    #[value(name = "cifar100")]
    Cifar100,
}

impl Dataset {
    /// The name on the command line.
    pub(crate) fn cli_name(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
        }
    }

    /// The human name.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::Cifar10 => "CIFAR-10",
            Self::Cifar100 => "CIFAR-100",
        }
    }

    /// The archive's file name.
    pub(crate) fn archive_name(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar-10-binary.tar.gz",
            Self::Cifar100 => "cifar-100-binary.tar.gz",
        }
    }

    /// The folder the archive unpacks to (under the data directory).
    pub(crate) fn dir_name(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar-10-batches-bin",
            Self::Cifar100 => "cifar-100-binary",
        }
    }

    /// The authors' download URL.
    pub(crate) fn official_url(self) -> &'static str {
        match self {
            Self::Cifar10 => "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            Self::Cifar100 => "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        }
    }

    /// The official archive's size in bytes.
    pub(crate) fn official_archive_size(self) -> u64 {
        match self {
            Self::Cifar10 => 170_052_171,
            Self::Cifar100 => 168_513_733,
        }
    }

    /// The official archive's checksums (see the command's help for where they come from).
    pub(crate) fn official_checksums(self) -> Checksums {
        let (sha256, md5) = match self {
            Self::Cifar10 => (
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                "c32a1d4ab5d03f1284b67883e8d87530",
            ),
            Self::Cifar100 => (
                "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                "03b5dce01913d631647c71ecec9e9cb8",
            ),
        };
        Checksums {
            sha256: Some(sha256.to_owned()),
            md5: Some(md5.to_owned()),
        }
    }

    /// Bytes per record: label byte(s) then 32x32x3 pixels (CIFAR-100 has a coarse and a fine
    /// label).
    pub(crate) fn record_bytes(self) -> u64 {
        match self {
            Self::Cifar10 => 1 + 3072,
            Self::Cifar100 => 2 + 3072,
        }
    }

    /// The data files of the extracted folder and their exact sizes in bytes.
    pub(crate) fn expected_files(self, layout: Layout) -> Vec<(&'static str, u64)> {
        let batch = layout.records_per_batch * self.record_bytes();
        match self {
            Self::Cifar10 => vec![
                ("data_batch_1.bin", batch),
                ("data_batch_2.bin", batch),
                ("data_batch_3.bin", batch),
                ("data_batch_4.bin", batch),
                ("data_batch_5.bin", batch),
                ("test_batch.bin", batch),
            ],
            Self::Cifar100 => vec![("train.bin", 5 * batch), ("test.bin", batch)],
        }
    }
}

/// Record counts of the extracted files: the official layout has 10000 records per batch (five
/// train batches and one test batch; CIFAR-100 stores the five train batches as one file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Records per batch.
    pub(crate) records_per_batch: u64,
}

impl Layout {
    /// The official archives' layout.
    pub(crate) const OFFICIAL: Self = Self {
        records_per_batch: 10_000,
    };
}

/// Expected checksums of an archive, lower-case hex; each one given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checksums {
    /// SHA-256.
    pub(crate) sha256: Option<String>,
    /// MD5.
    pub(crate) md5: Option<String>,
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The authors' URL.
    Official,
    /// Another URL serving the same archive.
    Url(String),
    /// A local archive or extracted folder.
    Local(PathBuf),
}

/// What to do when the extracted folder is already there and valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfPresent {
    /// Use it.
    Keep,
    /// Delete it (and the archive and any partial download) and fetch again.
    Refetch,
}

/// Everything [`fetch`] needs.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// Which dataset.
    pub(crate) dataset: Dataset,
    /// Where the archive and the extracted folder go.
    pub(crate) data_dir: PathBuf,
    /// Where the data comes from.
    pub(crate) source: Source,
    /// The archive's expected checksums.
    pub(crate) checksums: Checksums,
    /// The extracted files' expected sizes.
    pub(crate) layout: Layout,
    /// Keep or redo existing work.
    pub(crate) if_present: IfPresent,
}

/// The error when the download host cannot be reached; its message gives the `--from` command
/// to run instead.
#[derive(Debug)]
pub(crate) struct Unreachable {
    url: String,
    cause: String,
    dataset: Dataset,
    data_dir: PathBuf,
}

impl Unreachable {
    /// The command that installs the dataset from a copy of the archive fetched by other means.
    pub(crate) fn command(&self) -> String {
        format!(
            "cargo xtask fetch-data {} --from {} --data-dir {}",
            self.dataset.cli_name(),
            shell_quote(&format!("/path/to/{}", self.dataset.archive_name())),
            shell_quote(&self.data_dir.display().to_string()),
        )
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.dataset;
        let sums = d.official_checksums();
        write!(
            f,
            "cannot reach {url} ({cause}).\n\n\
             This machine has no route to the dataset host. Download {archive} by other means \
             (another machine, a mirror; the official file is {size} bytes, SHA-256 {sha}), copy \
             it here and run:\n\n    {command}\n\n\
             (--from also accepts an already extracted {dir}/ folder.)",
            url = self.url,
            cause = self.cause,
            archive = d.official_url(),
            size = d.official_archive_size(),
            sha = sums.sha256.as_deref().unwrap_or("-"),
            command = self.command(),
            dir = d.dir_name(),
        )
    }
}

impl std::error::Error for Unreachable {}

/// Fetches, verifies and unpacks as `request` says; returns the extracted directory.
pub(crate) fn fetch(request: &Request) -> Result<PathBuf> {
    let Request {
        dataset,
        ref data_dir,
        ref source,
        ref checksums,
        layout,
        if_present,
    } = *request;
    let target = data_dir.join(dataset.dir_name());
    let archive = data_dir.join(dataset.archive_name());
    let part = part_path(&archive);
    match if_present {
        IfPresent::Keep => {
            if check_layout(&target, dataset, layout).is_ok() {
                info!(
                    "{} is already in {} (all files present with the expected sizes; --force \
                     fetches it again)",
                    dataset.title(),
                    target.display()
                );
                return Ok(target);
            }
        }
        IfPresent::Refetch => match source {
            Source::Local(path) => {
                // `--from` pointing at the data itself: nothing to redo but the checks.
                let canonical = |p: &Path| p.canonicalize().ok();
                let from = canonical(path);
                if from.is_none() || (from != canonical(&target) && from != canonical(data_dir)) {
                    remove_if_exists(&target)?;
                }
            }
            Source::Official | Source::Url(_) => {
                remove_if_exists(&target)?;
                remove_if_exists(&archive)?;
                remove_if_exists(&part)?;
            }
        },
    }
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;

    match source {
        Source::Local(path) if path.is_dir() => {
            copy_extracted(path, &target, dataset, layout)?;
        }
        Source::Local(path) => {
            if !path.exists() {
                bail!(
                    "--from {}: no such file or directory (expected {} or an extracted {}/ folder)",
                    path.display(),
                    dataset.archive_name(),
                    dataset.dir_name()
                );
            }
            verify(path, checksums)?;
            extract(path, &target, dataset, layout)?;
        }
        Source::Official | Source::Url(_) => {
            let url = match source {
                Source::Url(url) => url.as_str(),
                _ => dataset.official_url(),
            };
            if archive.is_file() {
                // A previous run downloaded and verified it but did not finish unpacking.
                if let Err(e) = verify(&archive, checksums) {
                    warn!("{e:#}; downloading it again");
                    fs::remove_file(&archive)
                        .with_context(|| format!("cannot remove {}", archive.display()))?;
                }
            }
            if !archive.is_file() {
                download(url, &part, dataset, data_dir)?;
                if let Err(e) = verify(&part, checksums) {
                    fs::remove_file(&part)
                        .with_context(|| format!("cannot remove {}", part.display()))?;
                    return Err(e.context(format!(
                        "the download from {url} is not the expected file; deleted {}",
                        part.display()
                    )));
                }
                fs::rename(&part, &archive).with_context(|| {
                    format!("cannot rename {} to {}", part.display(), archive.display())
                })?;
            }
            extract(&archive, &target, dataset, layout)?;
        }
    }
    check_layout(&target, dataset, layout)?;
    info!("{} is ready in {}", dataset.title(), target.display());
    Ok(target)
}

/// The partial-download path next to `archive`: `<archive>.part`.
fn part_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    archive.with_file_name(name)
}

/// Checks that `dir` holds every data file of `dataset` with its exact size.
pub(crate) fn check_layout(dir: &Path, dataset: Dataset, layout: Layout) -> Result<()> {
    for (name, size) in dataset.expected_files(layout) {
        let path = dir.join(name);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bail!("{} file {} is missing", dataset.title(), path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if !meta.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        if meta.len() != size {
            bail!(
                "{} file {} has {} bytes, expected {size} ({} records of {} bytes)",
                dataset.title(),
                path.display(),
                meta.len(),
                size / dataset.record_bytes(),
                dataset.record_bytes()
            );
        }
    }
    Ok(())
}

/// The HTTP agent: rustls, the environment's proxy settings, no automatic decompression, and
/// status codes handled by [`download`].
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("minw-xtask/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Downloads `url` into `part`, continuing an existing partial file with a `Range` request.
/// A transfer that stops early keeps what arrived, for the next run to resume.
fn download(url: &str, part: &Path, dataset: Dataset, data_dir: &Path) -> Result<()> {
    let agent = agent();
    // Bounded: a second pass only happens after truncating `part`, which sends no Range.
    for _ in 0..2 {
        let offset = fs::metadata(part).map_or(0, |m| m.len());
        let mut request = agent.get(url);
        if offset > 0 {
            info!(
                "resuming the download of {url} at byte {offset} ({} exists)",
                part.display()
            );
            request = request.header("Range", format!("bytes={offset}-"));
        } else {
            info!("downloading {url}");
        }
        let mut response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::BadUri(e)) => bail!("invalid URL {url}: {e}"),
            Err(ureq::Error::Http(e)) => bail!("invalid request for {url}: {e}"),
            Err(e) => {
                return Err(Unreachable {
                    url: url.to_owned(),
                    cause: e.to_string(),
                    dataset,
                    data_dir: data_dir.to_path_buf(),
                }
                .into());
            }
        };
        let status = response.status().as_u16();
        let length = response.body().content_length();
        let (start, total) = match status {
            206 if offset > 0 => {
                let range = response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((first, total)) if first == offset => {
                        (offset, total.or(length.map(|l| offset + l)))
                    }
                    other => {
                        warn!(
                            "the server answered the request for bytes {offset}- with range \
                             {other:?}; downloading from the start"
                        );
                        truncate(part)?;
                        continue;
                    }
                }
            }
            200 => {
                if offset > 0 {
                    info!("the server ignored the Range request; downloading from the start");
                }
                (0, length)
            }
            416 if offset > 0 => {
                // Nothing after `offset`: the partial file is complete (checked next).
                info!("{} is already complete", part.display());
                return Ok(());
            }
            _ => bail!(
                "{url} answered HTTP {status} {}",
                response.status().canonical_reason().unwrap_or("")
            ),
        };
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(start > 0)
            .truncate(start == 0)
            .open(part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let bar = progress_bar(total, "download", dataset.archive_name());
        bar.set_position(start);
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut have = start;
        let read_error = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    out.write_all(&buf[..n])
                        .with_context(|| format!("cannot write {}", part.display()))?;
                    have += n as u64;
                    bar.set_position(have);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        out.flush()
            .and_then(|()| out.get_ref().sync_all())
            .with_context(|| format!("cannot write {}", part.display()))?;
        bar.finish_and_clear();
        let short = total.is_some_and(|t| have < t);
        if read_error.is_some() || short {
            let of_total = total.map_or(String::new(), |t| format!(" of {t}"));
            let cause = read_error.map_or_else(
                || "the connection closed early".to_owned(),
                |e| e.to_string(),
            );
            bail!(
                "the download of {url} stopped after {have}{of_total} bytes ({cause}). The \
                 partial file {} is kept: run the same command again to resume.",
                part.display()
            );
        }
        info!("downloaded {have} bytes to {}", part.display());
        return Ok(());
    }
    Err(anyhow!("{url} did not honour the Range request; giving up"))
}

/// Parses `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`) into `(FIRST, TOTAL)`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

fn truncate(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("cannot truncate {}", path.display()))?;
    Ok(())
}

/// Hashes `path` and checks it against `checksums`; logs the SHA-256 it computed.
fn verify(path: &Path, checksums: &Checksums) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let bar = progress_bar(
        len,
        "verify",
        &path.file_name().unwrap_or_default().to_string_lossy(),
    );
    let mut reader = bar.wrap_read(BufReader::with_capacity(1 << 20, file));
    let mut sha256 = Sha256::new();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        sha256.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    bar.finish_and_clear();
    let got_sha256 = format!("{:x}", sha256.finalize());
    let got_md5 = format!("{:x}", md5.finalize());
    info!("{}: SHA-256 {got_sha256}, MD5 {got_md5}", path.display());
    for (algo, expected, got) in [
        ("SHA-256", &checksums.sha256, &got_sha256),
        ("MD5", &checksums.md5, &got_md5),
    ] {
        if let Some(expected) = expected
            && !expected.eq_ignore_ascii_case(got)
        {
            bail!(
                "checksum mismatch for {}: expected {algo} {expected}, got {got}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Unpacks `archive` into a staging folder beside `target`, checks the files and renames the
/// folder to `target`.
fn extract(archive: &Path, target: &Path, dataset: Dataset, layout: Layout) -> Result<()> {
    let staging = staging_path(target, "unpacking");
    remove_if_exists(&staging)?;
    fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    info!("unpacking {} into {}", archive.display(), target.display());
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let bar = progress_bar(len, "unpack", dataset.archive_name());
    let gz = flate2::read::GzDecoder::new(bar.wrap_read(BufReader::new(file)));
    let mut tar = tar::Archive::new(gz);
    tar.set_overwrite(true);
    tar.set_preserve_permissions(false);
    // `unpack` refuses entries that would land outside `staging` (absolute paths, `..`).
    tar.unpack(&staging)
        .with_context(|| format!("cannot unpack {} (corrupt archive?)", archive.display()))?;
    bar.finish_and_clear();
    // The official archives hold one top folder; accept the files at the root too.
    let inner = staging.join(dataset.dir_name());
    let unpacked = if inner.is_dir() {
        inner
    } else {
        staging.clone()
    };
    check_layout(&unpacked, dataset, layout)
        .with_context(|| format!("{} does not hold the expected files", archive.display()))?;
    install(&unpacked, target)?;
    remove_if_exists(&staging)
}

/// Copies an extracted folder (`dir` itself or `dir/<dataset folder>`) into `target` after
/// checking its files.
fn copy_extracted(dir: &Path, target: &Path, dataset: Dataset, layout: Layout) -> Result<()> {
    let nested = dir.join(dataset.dir_name());
    let src = if check_layout(dir, dataset, layout).is_err() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    };
    check_layout(&src, dataset, layout).with_context(|| {
        format!(
            "--from {} is not a usable {} folder",
            dir.display(),
            dataset.title()
        )
    })?;
    if let (Ok(a), Ok(b)) = (src.canonicalize(), target.canonicalize())
        && a == b
    {
        return Ok(());
    }
    let staging = staging_path(target, "copying");
    remove_if_exists(&staging)?;
    fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    info!("copying {} into {}", src.display(), target.display());
    for entry in fs::read_dir(&src).with_context(|| format!("cannot list {}", src.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() || entry.path().is_file() {
            let to = staging.join(entry.file_name());
            fs::copy(entry.path(), &to).with_context(|| {
                format!("cannot copy {} to {}", entry.path().display(), to.display())
            })?;
        }
    }
    check_layout(&staging, dataset, layout)?;
    install(&staging, target)
}

/// A hidden working folder beside `target`: `.<name>.<what>`.
fn staging_path(target: &Path, what: &str) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.{what}"))
}

/// Moves the finished folder `from` to `target`, replacing what was there.
fn install(from: &Path, target: &Path) -> Result<()> {
    remove_if_exists(target)?;
    fs::rename(from, target)
        .with_context(|| format!("cannot rename {} to {}", from.display(), target.display()))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.with_context(|| format!("cannot remove {}", path.display()))
}

/// A byte progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: Option<u64>, step: &str, name: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (
            ProgressBar::new(len),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{msg} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(format!("{step} {name}"));
    bar
}

/// Lower-cases and checks a hex digest of `bytes` bytes given on the command line.
fn parse_hex(hex: &str, bytes: usize, flag: &str) -> Result<String> {
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != 2 * bytes || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{flag} wants {} hex digits, got {hex:?}", 2 * bytes);
    }
    Ok(hex)
}

/// Quotes `s` for a POSIX shell where needed.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@~".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 5-9/10"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
    }

    #[test]
    fn official_layout_sizes() {
        let sizes = Dataset::Cifar10.expected_files(Layout::OFFICIAL);
        assert_eq!(sizes.len(), 6);
        assert!(sizes.iter().all(|&(_, s)| s == 30_730_000));
        let sizes = Dataset::Cifar100.expected_files(Layout::OFFICIAL);
        assert_eq!(
            sizes,
            vec![("train.bin", 50_000 * 3074), ("test.bin", 10_000 * 3074)]
        );
    }

    #[test]
    fn hex_flags_are_checked() {
        assert_eq!(parse_hex("ABcd", 2, "--x").unwrap(), "abcd");
        assert!(parse_hex("abc", 2, "--x").is_err());
        assert!(parse_hex("zzzz", 2, "--x").is_err());
    }

    #[test]
    fn unreachable_message_names_the_command() {
        let e = Unreachable {
            url: "http://127.0.0.1:9/x".into(),
            cause: "refused".into(),
            dataset: Dataset::Cifar100,
            data_dir: PathBuf::from("my data"),
        };
        assert_eq!(
            e.command(),
            "cargo xtask fetch-data cifar100 --from /path/to/cifar-100-binary.tar.gz \
             --data-dir 'my data'"
        );
        assert!(e.to_string().contains(&e.command()));
    }

    #[test]
    fn part_and_staging_paths() {
        let archive = Path::new("d/cifar-10-binary.tar.gz");
        assert_eq!(
            part_path(archive),
            Path::new("d/cifar-10-binary.tar.gz.part")
        );
        let target = Path::new("d/cifar-10-batches-bin");
        assert_eq!(
            staging_path(target, "unpacking"),
            Path::new("d/.cifar-10-batches-bin.unpacking")
        );
    }

    #[test]
    fn layout_check_names_the_file() {
        let dir = std::env::temp_dir().join(format!("fetch-data-layout-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let layout = Layout {
            records_per_batch: 1,
        };
        fs::write(dir.join("train.bin"), vec![0u8; 5 * 3074]).unwrap();
        let err = check_layout(&dir, Dataset::Cifar100, layout).unwrap_err();
        assert!(err.to_string().contains("test.bin is missing"), "{err}");
        fs::write(dir.join("test.bin"), vec![0u8; 3]).unwrap();
        let err = check_layout(&dir, Dataset::Cifar100, layout).unwrap_err();
        assert!(
            err.to_string().contains("has 3 bytes, expected 3074"),
            "{err}"
        );
        fs::write(dir.join("test.bin"), vec![0u8; 3074]).unwrap();
        check_layout(&dir, Dataset::Cifar100, layout).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
