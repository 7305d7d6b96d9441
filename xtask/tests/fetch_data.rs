//! `cargo xtask fetch-data` end to end: the built binary against an HTTP server on 127.0.0.1
//! serving small generated archives in the real CIFAR layout.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};

/// Records per batch in the generated archives (the real ones have 10000).
const RECORDS: u64 = 3;

// ---------------------------------------------------------------------------------------------
// Generated data

/// The data files of a dataset's extracted folder, with generated records.
fn data_files(dataset: &str) -> (&'static str, Vec<(&'static str, Vec<u8>)>) {
    let (dir, record, files): (_, u64, &[(&str, u64)]) = match dataset {
        "cifar10" => (
            "cifar-10-batches-bin",
            3073,
            &[
                ("data_batch_1.bin", 1),
                ("data_batch_2.bin", 1),
                ("data_batch_3.bin", 1),
                ("data_batch_4.bin", 1),
                ("data_batch_5.bin", 1),
                ("test_batch.bin", 1),
            ],
        ),
        "cifar100" => (
            "cifar-100-binary",
            3074,
            &[("train.bin", 5), ("test.bin", 1)],
        ),
        _ => unreachable!(),
    };
    let files = files
        .iter()
        .enumerate()
        .map(|(i, &(name, batches))| {
            let len = (batches * RECORDS * record) as usize;
            // Labels in range at each record start, pixel bytes elsewhere.
            let bytes = (0..len)
                .map(|j| {
                    if (j as u64).is_multiple_of(record) {
                        (j as u64 / record % 10) as u8
                    } else {
                        (j * 31 + i * 7) as u8
                    }
                })
                .collect();
            (name, bytes)
        })
        .collect();
    (dir, files)
}

/// A `.tar.gz` with the official layout: `<dir>/<file>` entries plus a text file.
fn archive(dataset: &str) -> Vec<u8> {
    let (dir, files) = data_files(dataset);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, bytes).unwrap();
    };
    add(format!("{dir}/readme.txt"), b"generated for tests\n");
    for (name, bytes) in &files {
        add(format!("{dir}/{name}"), bytes);
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// Asserts that `data_dir` holds the generated files of `dataset`, byte for byte.
fn assert_extracted(data_dir: &Path, dataset: &str) {
    let (dir, files) = data_files(dataset);
    for (name, bytes) in files {
        let path = data_dir.join(dir).join(name);
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            got == bytes,
            "{} differs from the generated file",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Test server

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers `Range: bytes=N-` with 206 and the remainder.
    HonourRange,
    /// Always answers 200 with the whole file.
    IgnoreRange,
    /// The first response announces the full length but closes after this many body bytes;
    /// later ones honour Range.
    TruncateFirst(usize),
}

/// What the server saw and sent for one request.
#[derive(Debug, Clone)]
struct Served {
    range: Option<String>,
    status: u16,
    body_bytes: usize,
}

/// A one-file HTTP/1.1 server on 127.0.0.1 in a thread; it serves at most `MAX_CONNECTIONS`
/// connections and stops after `LIFETIME` or when dropped.
struct Server {
    url: String,
    log: Arc<Mutex<Vec<Served>>>,
    stop: Arc<AtomicBool>,
}

const MAX_CONNECTIONS: usize = 8;
const LIFETIME: Duration = Duration::from_secs(60);

impl Server {
    fn start(body: Vec<u8>, mode: Mode, file_name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/{file_name}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_log, thread_stop) = (Arc::clone(&log), Arc::clone(&stop));
        thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut served = 0;
            while served < MAX_CONNECTIONS
                && Instant::now() < deadline
                && !thread_stop.load(Ordering::Relaxed)
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let mode = match mode {
                            Mode::TruncateFirst(_) if served > 0 => Mode::HonourRange,
                            m => m,
                        };
                        served += 1;
                        if let Some(s) = handle(stream, &body, mode) {
                            thread_log.lock().unwrap().push(s);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Self { url, log, stop }
    }

    fn requests(&self) -> Vec<Served> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(stream: TcpStream, body: &[u8], mode: Mode) -> Option<Served> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut range = None;
    // The request line and headers, bounded in count.
    for _ in 0..64 {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let len = body.len();
    let (status, headers, slice) = match (mode, start) {
        (Mode::IgnoreRange, _) | (_, None) => (200, String::new(), body),
        (_, Some(s)) if s >= len => (416, format!("Content-Range: bytes */{len}\r\n"), &body[..0]),
        (_, Some(s)) => (
            206,
            format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1),
            &body[s..],
        ),
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        _ => "Range Not Satisfiable",
    };
    let sent = match mode {
        Mode::TruncateFirst(n) => &slice[..n.min(slice.len())],
        _ => slice,
    };
    let mut out = stream;
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-gzip\r\n\
         Content-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        slice.len()
    );
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(sent);
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
    Some(Served {
        range,
        status,
        body_bytes: sent.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// Running the command

struct Fixture {
    dataset: &'static str,
    archive: Vec<u8>,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new(dataset: &'static str) -> Self {
        Self {
            dataset,
            archive: archive(dataset),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn archive_name(&self) -> &'static str {
        match self.dataset {
            "cifar10" => "cifar-10-binary.tar.gz",
            _ => "cifar-100-binary.tar.gz",
        }
    }

    fn archive_path(&self) -> PathBuf {
        self.data_dir().join(self.archive_name())
    }

    fn part_path(&self) -> PathBuf {
        self.data_dir()
            .join(format!("{}.part", self.archive_name()))
    }

    fn serve(&self, mode: Mode) -> Server {
        Server::start(self.archive.clone(), mode, self.archive_name())
    }

    /// Runs `fetch-data` with the fixture's checksums and record count plus `extra`.
    fn run(&self, extra: &[&str]) -> Output {
        self.run_with_sums(&sha256_hex(&self.archive), &md5_hex(&self.archive), extra)
    }

    fn run_with_sums(&self, sha256: &str, md5: &str, extra: &[&str]) -> Output {
        let records = RECORDS.to_string();
        let data_dir = self.data_dir();
        let mut args = vec![
            "fetch-data",
            self.dataset,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--records",
            &records,
            "--sha256",
            sha256,
            "--md5",
            md5,
        ];
        args.extend_from_slice(extra);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(&args)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .env_remove("MINW_DATA_DIR");
        for var in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd.output().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(out.status.success(), "fetch-data failed:\n{}", stderr(out));
}

#[track_caller]
fn assert_friendly_failure(out: &Output) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "fetch-data should fail:\n{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: "), "{err}");
    // RUST_BACKTRACE=1 is set for the run: still no backtrace.
    let lower = err.to_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace"),
        "{err}"
    );
    err
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn downloads_verifies_and_extracts_cifar10() {
    let fx = Fixture::new("cifar10");
    let server = fx.serve(Mode::HonourRange);
    let out = fx.run(&["--url", &server.url]);
    assert_ok(&out);
    assert_extracted(&fx.data_dir(), "cifar10");
    assert_eq!(std::fs::read(fx.archive_path()).unwrap(), fx.archive);
    assert!(!fx.part_path().exists());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        Path::new(printed.trim()),
        fx.data_dir().join("cifar-10-batches-bin")
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].range, None);

    // Done work is skipped: no new request.
    let again = fx.run(&["--url", &server.url]);
    assert_ok(&again);
    assert!(stderr(&again).contains("already"), "{}", stderr(&again));
    assert_eq!(server.requests().len(), 1);

    // --force fetches again.
    let forced = fx.run(&["--url", &server.url, "--force"]);
    assert_ok(&forced);
    assert_eq!(server.requests().len(), 2);
    assert_extracted(&fx.data_dir(), "cifar10");
}

#[test]
fn downloads_cifar100() {
    let fx = Fixture::new("cifar100");
    let server = fx.serve(Mode::HonourRange);
    assert_ok(&fx.run(&["--url", &server.url]));
    assert_extracted(&fx.data_dir(), "cifar100");
}

#[test]
fn resumes_a_partial_download_with_range() {
    let fx = Fixture::new("cifar10");
    let have = fx.archive.len() / 3;
    std::fs::create_dir_all(fx.data_dir()).unwrap();
    std::fs::write(fx.part_path(), &fx.archive[..have]).unwrap();
    let server = fx.serve(Mode::HonourRange);
    assert_ok(&fx.run(&["--url", &server.url]));
    assert_extracted(&fx.data_dir(), "cifar10");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].range.as_deref(),
        Some(&*format!("bytes={have}-"))
    );
    assert_eq!(requests[0].status, 206);
    assert_eq!(requests[0].body_bytes, fx.archive.len() - have);
}

#[test]
fn complete_part_file_is_used() {
    let fx = Fixture::new("cifar10");
    std::fs::create_dir_all(fx.data_dir()).unwrap();
    std::fs::write(fx.part_path(), &fx.archive).unwrap();
    let server = fx.serve(Mode::HonourRange);
    assert_ok(&fx.run(&["--url", &server.url]));
    assert_extracted(&fx.data_dir(), "cifar10");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].status, 416);
}

#[test]
fn server_ignoring_range_gets_a_fresh_download() {
    let fx = Fixture::new("cifar10");
    std::fs::create_dir_all(fx.data_dir()).unwrap();
    // Garbage that would corrupt the file if it were appended to.
    std::fs::write(fx.part_path(), vec![0xAB; 1000]).unwrap();
    let server = fx.serve(Mode::IgnoreRange);
    assert_ok(&fx.run(&["--url", &server.url]));
    assert_extracted(&fx.data_dir(), "cifar10");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].range.as_deref(), Some("bytes=1000-"));
    assert_eq!(requests[0].status, 200);
    assert_eq!(std::fs::read(fx.archive_path()).unwrap(), fx.archive);
}

#[test]
fn interrupted_transfer_keeps_the_part_and_the_next_run_resumes() {
    let fx = Fixture::new("cifar10");
    let cut = fx.archive.len() / 2;
    let server = fx.serve(Mode::TruncateFirst(cut));
    let first = fx.run(&["--url", &server.url]);
    let err = assert_friendly_failure(&first);
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(fx.part_path()).unwrap().len(), cut as u64);
    assert!(!fx.archive_path().exists());
    assert!(!fx.data_dir().join("cifar-10-batches-bin").exists());

    assert_ok(&fx.run(&["--url", &server.url]));
    assert_extracted(&fx.data_dir(), "cifar10");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[1].range.as_deref(),
        Some(&*format!("bytes={cut}-"))
    );
    assert_eq!(requests[1].body_bytes, fx.archive.len() - cut);
}

#[test]
fn wrong_checksum_deletes_the_part_and_reports_expected_and_got() {
    let fx = Fixture::new("cifar10");
    let server = fx.serve(Mode::HonourRange);
    let wrong = "0".repeat(64);
    let out = fx.run_with_sums(&wrong, &md5_hex(&fx.archive), &["--url", &server.url]);
    let err = assert_friendly_failure(&out);
    assert!(err.contains(&format!("expected SHA-256 {wrong}")), "{err}");
    assert!(
        err.contains(&format!("got {}", sha256_hex(&fx.archive))),
        "{err}"
    );
    assert!(!fx.part_path().exists());
    assert!(!fx.archive_path().exists());
    assert!(!fx.data_dir().join("cifar-10-batches-bin").exists());

    // The MD5 is checked too.
    let out = fx.run_with_sums(
        &sha256_hex(&fx.archive),
        &"f".repeat(32),
        &["--url", &server.url],
    );
    let err = assert_friendly_failure(&out);
    assert!(err.contains("expected MD5"), "{err}");
    assert!(!fx.archive_path().exists());
}

#[test]
fn from_a_local_archive() {
    let fx = Fixture::new("cifar100");
    let local = fx.tmp.path().join("elsewhere.tar.gz");
    std::fs::write(&local, &fx.archive).unwrap();
    assert_ok(&fx.run(&["--from", local.to_str().unwrap()]));
    assert_extracted(&fx.data_dir(), "cifar100");
    assert!(local.exists(), "the user's archive is left alone");

    // A corrupt local archive is refused and left alone.
    let other = Fixture::new("cifar100");
    let bad = other.tmp.path().join("bad.tar.gz");
    std::fs::write(&bad, &other.archive[..other.archive.len() - 10]).unwrap();
    let err = assert_friendly_failure(&other.run(&["--from", bad.to_str().unwrap()]));
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(bad.exists());
}

#[test]
fn from_an_extracted_directory() {
    let fx = Fixture::new("cifar10");
    let (dir, files) = data_files("cifar10");
    let src = fx.tmp.path().join("usb").join(dir);
    std::fs::create_dir_all(&src).unwrap();
    for (name, bytes) in &files {
        std::fs::write(src.join(name), bytes).unwrap();
    }
    // Both the folder itself and its parent are accepted.
    assert_ok(&fx.run(&["--from", src.to_str().unwrap()]));
    assert_extracted(&fx.data_dir(), "cifar10");
    let parent = src.parent().unwrap();
    assert_ok(&fx.run(&["--from", parent.to_str().unwrap(), "--force"]));
    assert_extracted(&fx.data_dir(), "cifar10");

    // --from the data directory's own folder, even with --force, keeps it.
    let own = fx.data_dir().join(dir);
    assert_ok(&fx.run(&["--from", own.to_str().unwrap(), "--force"]));
    assert_extracted(&fx.data_dir(), "cifar10");

    // A file of the wrong size is named.
    std::fs::write(src.join("data_batch_4.bin"), [1u8; 10]).unwrap();
    let other = Fixture::new("cifar10");
    let err = assert_friendly_failure(&other.run(&["--from", src.to_str().unwrap()]));
    assert!(err.contains("data_batch_4.bin has 10 bytes"), "{err}");
    assert!(!other.data_dir().join(dir).exists());
}

#[test]
fn unreachable_host_gives_the_from_command() {
    let fx = Fixture::new("cifar10");
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let err = assert_friendly_failure(&fx.run(&["--url", &url]));
    assert!(err.contains("cannot reach"), "{err}");
    assert!(
        err.contains("cargo xtask fetch-data cifar10 --from /path/to/cifar-10-binary.tar.gz"),
        "{err}"
    );
    assert!(err.contains(fx.data_dir().to_str().unwrap()), "{err}");
}

#[test]
fn help_documents_checksums_and_offline_use() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["fetch-data", "--help"])
        .output()
        .unwrap();
    assert_ok(&out);
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--from",
        "--url",
        "--force",
        "--data-dir",
        "MINW_DATA_DIR",
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        "c32a1d4ab5d03f1284b67883e8d87530",
        "Examples:",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    assert!(!help.contains("--records"), "test-only flags stay hidden");
}
