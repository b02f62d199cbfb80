//! Debian's headless Chromium, for tests that look at a page the way a reader does: its DOM
//! after scripts and layout (`--dump-dom`), and a screenshot read back as RGBA pixels.
//!
//! Each run gets a fresh profile directory and its own process group, killed whole when it
//! outlives [`TIMEOUT`] (Chromium starts a zygote, a renderer and more under the wrapper).
//! Dark mode: `--blink-settings=preferredColorScheme=0` makes `prefers-color-scheme: dark`
//! match in Chromium 156 (as does `--force-dark-mode`); light runs pass `=1` so the system's
//! preference never leaks in.
use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Debian's package (`cargo xtask setup` installs it).
pub const BINARY: &str = "/usr/bin/chromium";

/// The longest a single run may take before its processes are killed.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// The window, which in headless mode is the viewport, in CSS pixels at a scale of 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub width: u32,
    pub height: u32,
    /// Ask for the dark colour scheme.
    pub dark: bool,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether Chromium is installed.
pub fn available() -> bool {
    Path::new(BINARY).exists()
}

/// A `file://` URL for `path`, which must exist.
fn file_url(path: &Path) -> Result<String, String> {
    let path = path
        .canonicalize()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let text = path
        .to_str()
        .ok_or_else(|| format!("{}: not UTF-8", path.display()))?;
    // Only what a URL path cannot carry as is; test paths are plain.
    let mut url = String::from("file://");
    for c in text.chars() {
        match c {
            ' ' => url.push_str("%20"),
            '#' => url.push_str("%23"),
            '?' => url.push_str("%3F"),
            '%' => url.push_str("%25"),
            c => url.push(c),
        }
    }
    Ok(url)
}

/// Run Chromium on `url` with `flags`, returning what it printed on standard output.
fn run(url: &str, window: Window, flags: &[String]) -> Result<String, String> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let profile: PathBuf =
        std::env::temp_dir().join(format!("xdpguard-chromium-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile)
        .map_err(|error| format!("creating {}: {error}", profile.display()))?;
    let stdout_path = profile.join("stdout");
    let stderr_path = profile.join("stderr");
    let result = run_in(url, window, flags, &profile, &stdout_path, &stderr_path);
    let _ = std::fs::remove_dir_all(&profile);
    result
}

fn run_in(
    url: &str,
    window: Window,
    flags: &[String],
    profile: &Path,
    stdout_path: &Path,
    stderr_path: &Path,
) -> Result<String, String> {
    let create = |path: &Path| {
        File::create(path).map_err(|error| format!("creating {}: {error}", path.display()))
    };
    let scheme = if window.dark { 0 } else { 1 };
    let mut child = Command::new(BINARY)
        .args([
            "--headless",
            // Root in a container: no user namespaces for the sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", window.width, window.height))
        .arg(format!("--blink-settings=preferredColorScheme={scheme}"))
        .args(flags)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(create(stdout_path)?)
        .stderr(create(stderr_path)?)
        // Its own group, so a hung run is killed with every process it started.
        .process_group(0)
        .spawn()
        .map_err(|error| format!("starting {BINARY}: {error}"))?;
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(format!(
                    "chromium did not finish within {TIMEOUT:?}; stderr:\n{}",
                    std::fs::read_to_string(stderr_path).unwrap_or_default()
                ));
            }
            Err(error) => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(format!("waiting for chromium: {error}"));
            }
        }
    };
    // The browser's helpers may outlive it for a moment; they belong to this run only.
    kill_group(child.id());
    if !status.success() {
        return Err(format!(
            "chromium exited with {status}; stderr:\n{}",
            std::fs::read_to_string(stderr_path).unwrap_or_default()
        ));
    }
    std::fs::read_to_string(stdout_path)
        .map_err(|error| format!("reading {}: {error}", stdout_path.display()))
}

/// SIGKILL to the process group led by `leader` (one this module started with its own
/// group).
fn kill_group(leader: u32) {
    if let Ok(group) = libc::pid_t::try_from(leader) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// The page's DOM after its scripts ran, serialised as HTML.
pub fn dump_dom(html: &Path, window: Window) -> Result<String, String> {
    let url = file_url(html)?;
    let dom = run(&url, window, &[String::from("--dump-dom")])?;
    if dom.trim().is_empty() {
        return Err(format!("chromium dumped no DOM for {url}"));
    }
    Ok(dom)
}

/// A screenshot of the window's worth of the page, as PNG at `png_out`.
pub fn screenshot(html: &Path, png_out: &Path, window: Window) -> Result<(), String> {
    let url = file_url(html)?;
    let _ = std::fs::remove_file(png_out);
    run(
        &url,
        window,
        &[format!("--screenshot={}", png_out.display())],
    )?;
    if !png_out.exists() {
        return Err(format!("chromium wrote no screenshot of {url}"));
    }
    Ok(())
}

/// An image as 8-bit RGBA, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgba {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<[u8; 4]>,
}

impl Rgba {
    /// The pixel at (`x`, `y`), if inside.
    pub fn get(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let index = usize::try_from(u64::from(y) * u64::from(self.width) + u64::from(x)).ok()?;
        self.pixels.get(index).copied()
    }
}

/// Read a PNG of any colour type as 8-bit RGBA.
pub fn read_png(path: &Path) -> Result<Rgba, String> {
    let file = File::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let bytes = &buffer[..frame.buffer_size()];
    let row = frame.line_size;
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(format!("{}: palette left unexpanded", path.display()));
        }
    };
    let width = usize::try_from(frame.width).map_err(|error| error.to_string())?;
    let mut pixels = Vec::with_capacity(width * bytes.len() / row.max(1));
    for line in bytes.chunks(row) {
        for pixel in line.chunks(channels).take(width) {
            pixels.push(match *pixel {
                [grey] => [grey, grey, grey, 255],
                [grey, alpha] => [grey, grey, grey, alpha],
                [r, g, b] => [r, g, b, 255],
                [r, g, b, a] => [r, g, b, a],
                _ => return Err(format!("{}: short pixel", path.display())),
            });
        }
    }
    Ok(Rgba {
        width: frame.width,
        height: frame.height,
        pixels,
    })
}
