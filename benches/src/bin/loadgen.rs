//! A closed-loop HTTP/1.1 load generator for `POST /v1/verify` (and the bare axum server it
//! is compared with).
//!
//! ```text
//! loadgen verify --addr 127.0.0.1:8080 --auth <bearer> --token <token> --duration 15
//! loadgen bare   --addr 127.0.0.1:9090 --auth <bearer> --token <token> --duration 15
//! loadgen mixed  --addr 127.0.0.1:8080 --auth <root> --token <token> --app <app id>
//! loadgen soak   --addr ... --app <app id> --rss-pid <server pid> --duration 60
//! loadgen warm   --addr ... --auth <root> --tokens-file tokens.txt
//! ```
//!
//! Each of `--connections` keep-alive connections sends one request, reads the whole
//! response, and sends the next (no pipelining), for `--warmup` seconds unrecorded and then
//! `--duration` seconds recorded. Every response is checked (status, and `"valid":true` for
//! verifications); a wrong one counts as an error. Latency is the time from writing the
//! request to reading the last byte of the response, in an HDR histogram (3 significant
//! digits). The result is one JSON line on stdout.
//!
//! The client is raw tokio TCP plus `httparse`: the least work per request a correct
//! client can do, so that on a small machine the generator takes as little CPU as possible
//! from the server it measures. It needs `Content-Length` on every response (hyper sends
//! it for these bodies) and fails loudly on anything else.
//!
//! Modes: `verify` and `bare` send the same verification (`bare` only labels the run);
//! `mixed` replaces `--manage-percent` (10) of requests by management calls, alternately
//! creating a token in `--app` and revoking the token it created; `soak` is `mixed` that
//! also samples the server's RSS (`--rss-pid`); `warm` verifies each token of
//! `--tokens-file` exactly once (to fill the server's verified-key cache) and stops.

use std::error::Error;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::TcpStream;

type BoxResult<T> = Result<T, Box<dyn Error>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `POST /v1/verify` with one cached key (or round robin over `--tokens-file`).
    Verify,
    /// The same requests, against the bare axum server.
    Bare,
    /// Verifications plus token creation and revocation.
    Mixed,
    /// `mixed`, sampling the server's RSS.
    Soak,
    /// Verify every token of `--tokens-file` once, then stop.
    Warm,
}

/// A closed-loop HTTP/1.1 load generator for kms's `POST /v1/verify`.
#[derive(Debug, Parser)]
struct Args {
    /// What to send.
    #[arg(value_enum)]
    mode: Mode,
    /// Server address, IP:PORT.
    #[arg(long)]
    addr: SocketAddr,
    /// Bearer token of the caller (needs `token.verify`; `mixed` also `token.create` and
    /// `token.revoke` on `--app`).
    #[arg(long)]
    auth: String,
    /// The token to verify.
    #[arg(long, required_unless_present = "tokens_file")]
    token: Option<String>,
    /// Tokens to verify, one a line: round robin (`verify`, `bare`) or each once (`warm`).
    #[arg(long)]
    tokens_file: Option<PathBuf>,
    /// The permission query sent with each verification.
    #[arg(long, default_value = "app.read")]
    permissions: String,
    /// Application that `mixed` and `soak` create tokens in.
    #[arg(long)]
    app: Option<String>,
    /// Percentage of management calls in `mixed` and `soak`.
    #[arg(long, default_value_t = 10)]
    manage_percent: u32,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Recorded seconds.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Unrecorded seconds before recording starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Generator threads, each a single-threaded tokio runtime with its share of the
    /// connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The server's process: its CPU time over the recorded window is reported (per request
    /// and in cores), and its RSS sampled at the start, every `--rss-interval` seconds and
    /// at the end (`soak` needs it).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 10.0)]
    rss_interval: f64,
    /// Free text copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
}

/// What one kind of request measured.
struct Series {
    latency: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Series {
    fn new() -> BoxResult<Self> {
        Ok(Series {
            // 1 ns to 60 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
            errors: 0,
            first_error: None,
        })
    }

    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                let nanos = started.elapsed().as_nanos().clamp(1, 60_000_000_000) as u64;
                self.latency.saturating_record(nanos);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: &Series) -> BoxResult<()> {
        self.latency.add(&other.latency)?;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        Ok(())
    }

    fn summary(&self, seconds: f64) -> Value {
        let us = |q: f64| round1(self.latency.value_at_quantile(q) as f64 / 1000.0);
        json!({
            "requests": self.latency.len(),
            "errors": self.errors,
            "first_error": self.first_error,
            "throughput_rps": round1(self.latency.len() as f64 / seconds),
            "latency_us": {
                "p50": us(0.50),
                "p99": us(0.99),
                "p99.9": us(0.999),
                "max": round1(self.latency.max() as f64 / 1000.0),
                "mean": round1(self.latency.mean() / 1000.0),
            },
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Per-connection results: verifications, creations, revocations.
struct Tally {
    verify: Series,
    create: Series,
    revoke: Series,
}

impl Tally {
    fn new() -> BoxResult<Self> {
        Ok(Tally {
            verify: Series::new()?,
            create: Series::new()?,
            revoke: Series::new()?,
        })
    }

    fn merge(&mut self, other: &Tally) -> BoxResult<()> {
        self.verify.merge(&other.verify)?;
        self.create.merge(&other.create)?;
        self.revoke.merge(&other.revoke)
    }
}

/// A parsed response: status and the body's range in the connection buffer.
struct Response<'a> {
    status: u16,
    body: &'a [u8],
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the previous response (dropped before the next read).
    consumed: usize,
}

impl Connection {
    fn new(addr: SocketAddr) -> Self {
        Connection {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            consumed: 0,
        }
    }

    /// Sends `request` and reads the whole response; reconnects first if needed. On an
    /// error the connection is dropped, and the next call reconnects.
    async fn roundtrip(&mut self, request: &[u8]) -> Result<Response<'_>, String> {
        match self.try_roundtrip(request).await {
            Ok((status, start, end, close)) => {
                if close {
                    self.stream = None;
                }
                Ok(Response {
                    status,
                    body: self.buf.get(start..end).unwrap_or_default(),
                })
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn try_roundtrip(&mut self, request: &[u8]) -> Result<(u16, usize, usize, bool), String> {
        self.buf.drain(..self.consumed.min(self.buf.len()));
        self.consumed = 0;
        if self.stream.is_none() {
            self.buf.clear();
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_ref() else {
            return Err("no connection".to_owned());
        };
        write_all(stream, request).await?;
        loop {
            if let Some(parsed) = parse_response(&self.buf)? {
                let (status, header_len, body_len, close) = parsed;
                let end = header_len + body_len;
                if self.buf.len() >= end {
                    self.consumed = end;
                    return Ok((status, header_len, end, close));
                }
            }
            read_some(stream, &mut self.buf).await?;
        }
    }
}

/// Parses the response head in `buf`: `(status, head length, body length, close)` once the
/// head is complete.
fn parse_response(buf: &[u8]) -> Result<Option<(u16, usize, usize, bool)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let mut body_len = None;
    let mut close = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).map_err(|e| e.to_string())?;
            body_len = Some(value.trim().parse::<usize>().map_err(|e| e.to_string())?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".to_owned());
        } else if h.name.eq_ignore_ascii_case("connection")
            && h.value.eq_ignore_ascii_case(b"close")
        {
            close = true;
        }
    }
    let body_len = body_len.ok_or("a response without content-length")?;
    Ok(Some((status, head_len, body_len, close)))
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> Result<(), String> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(0) => return Err("the server closed the connection".to_owned()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stream.writable().await.map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 8192];
    loop {
        match stream.try_read(&mut chunk) {
            Ok(0) => return Err("the server closed the connection".to_owned()),
            Ok(n) => {
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stream.readable().await.map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Builds HTTP/1.1 POST requests.
struct Requests {
    host: String,
    auth: String,
    permissions: String,
}

impl Requests {
    fn post(&self, path: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.auth,
            body.len()
        )
        .into_bytes()
    }

    fn verify(&self, token: &str) -> Vec<u8> {
        let body = json!({"token": token, "permissions": self.permissions}).to_string();
        self.post("/v1/verify", &body)
    }
}

/// Sends one verification and checks the verdict.
async fn verify_once(conn: &mut Connection, request: &[u8]) -> Result<(), String> {
    let response = conn.roundtrip(request).await?;
    if response.status != 200 {
        return Err(format!(
            "verify: status {}: {}",
            response.status,
            String::from_utf8_lossy(response.body)
        ));
    }
    if !contains(response.body, b"\"valid\":true") {
        return Err(format!(
            "verify: not valid: {}",
            String::from_utf8_lossy(response.body)
        ));
    }
    Ok(())
}

/// Creates a token in `app`; returns its id.
async fn create_token(
    conn: &mut Connection,
    requests: &Requests,
    app: &str,
    name: &str,
) -> Result<String, String> {
    let body = json!({"name": name, "scopes": ["app.read"]}).to_string();
    let request = requests.post(&format!("/v1/apps/{app}/tokens"), &body);
    let response = conn.roundtrip(&request).await?;
    if response.status != 201 {
        return Err(format!(
            "create: status {}: {}",
            response.status,
            String::from_utf8_lossy(response.body)
        ));
    }
    let created: Value = serde_json::from_slice(response.body).map_err(|e| e.to_string())?;
    created
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "create: no id in the response".to_owned())
}

async fn revoke_token(conn: &mut Connection, requests: &Requests, id: &str) -> Result<(), String> {
    let request = requests.post(&format!("/v1/tokens/{id}/revoke"), "");
    let response = conn.roundtrip(&request).await?;
    if response.status != 200 {
        return Err(format!(
            "revoke: status {}: {}",
            response.status,
            String::from_utf8_lossy(response.body)
        ));
    }
    Ok(())
}

/// What every connection shares.
struct Plan {
    mode: Mode,
    addr: SocketAddr,
    requests: Requests,
    /// Prebuilt verification requests: one per token (round robin).
    verify_requests: Vec<Vec<u8>>,
    app: Option<String>,
    manage_percent: u32,
    record_from: Instant,
    stop_at: Instant,
}

/// A small xorshift generator: which requests of `mixed` are management calls.
struct XorShift(u64);

impl XorShift {
    fn next_percent(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 100) as u32
    }
}

/// One connection's closed loop until `plan.stop_at`.
async fn drive(plan: Arc<Plan>, index: usize, connections: usize) -> BoxResult<Tally> {
    let mut tally = Tally::new()?;
    let mut conn = Connection::new(plan.addr);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0x2545_F491));
    let mut next = index;
    let mut created: Option<String> = None;
    let mut serial = 0u64;
    let managing = matches!(plan.mode, Mode::Mixed | Mode::Soak);
    loop {
        let started = Instant::now();
        if started >= plan.stop_at {
            break;
        }
        let record = started >= plan.record_from;
        if managing && rng.next_percent() < plan.manage_percent {
            let app = plan.app.as_deref().ok_or("mixed needs --app")?;
            match created.take() {
                None => {
                    serial += 1;
                    let name = format!("load-{index}-{serial}");
                    let outcome = create_token(&mut conn, &plan.requests, app, &name).await;
                    let outcome = outcome.map(|id| created = Some(id));
                    if record {
                        tally.create.record(started, outcome);
                    }
                }
                Some(id) => {
                    let outcome = revoke_token(&mut conn, &plan.requests, &id).await;
                    if record {
                        tally.revoke.record(started, outcome);
                    }
                }
            }
            continue;
        }
        let request = plan
            .verify_requests
            .get(next % plan.verify_requests.len().max(1))
            .ok_or("no token to verify")?;
        next = next.wrapping_add(connections);
        let outcome = verify_once(&mut conn, request).await;
        if record {
            tally.verify.record(started, outcome);
        }
    }
    Ok(tally)
}

/// Verifies tokens `index, index + connections, ...` once each.
async fn warm(plan: Arc<Plan>, index: usize, connections: usize) -> BoxResult<Tally> {
    let mut tally = Tally::new()?;
    let mut conn = Connection::new(plan.addr);
    for request in plan.verify_requests.iter().skip(index).step_by(connections) {
        let started = Instant::now();
        let outcome = verify_once(&mut conn, request).await;
        tally.verify.record(started, outcome);
    }
    Ok(tally)
}

/// Runs `connections` connections on one single-threaded runtime.
fn run_thread(plan: Arc<Plan>, first: usize, count: usize, total: usize) -> BoxResult<Tally> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for index in first..first + count {
            let plan = plan.clone();
            if plan.mode == Mode::Warm {
                tasks.spawn(
                    async move { warm(plan, index, total).await.map_err(|e| e.to_string()) },
                );
            } else {
                tasks.spawn(
                    async move { drive(plan, index, total).await.map_err(|e| e.to_string()) },
                );
            }
        }
        let mut tally = Tally::new()?;
        while let Some(joined) = tasks.join_next().await {
            tally.merge(&joined??)?;
        }
        Ok(tally)
    })
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> BoxResult<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or("a malformed VmRSS line")?
        .parse()?;
    Ok(kib)
}

/// User plus system CPU time of `pid` (all threads) from `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(pid: &str) -> BoxResult<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').ok_or("a malformed stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> BoxResult<f64> {
        Ok(fields.get(i).ok_or("a short stat line")?.parse::<f64>()?)
    };
    // Field 14 is the 12th after the name; USER_HZ is 100 on Linux (`getconf CLK_TCK`).
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU seconds of the server (if known) and of this process.
fn cpu_now(server: Option<u32>) -> (Option<f64>, Option<f64>) {
    (
        server.and_then(|pid| cpu_seconds(&pid.to_string()).ok()),
        cpu_seconds("self").ok(),
    )
}

/// Samples RSS every `interval` until `stop`; returns `(seconds since start, KiB)` pairs.
fn sample_rss(pid: u32, interval: Duration, stop: Arc<AtomicBool>) -> Vec<(f64, u64)> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = start;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            if let Ok(kib) = rss_kib(pid) {
                samples.push((round1(start.elapsed().as_secs_f64()), kib));
            }
            next += interval;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Ok(kib) = rss_kib(pid) {
        samples.push((round1(start.elapsed().as_secs_f64()), kib));
    }
    samples
}

fn main() -> BoxResult<()> {
    let args = Args::parse();
    if args.mode == Mode::Soak && args.server_pid.is_none() {
        return Err("soak needs --server-pid".into());
    }
    if matches!(args.mode, Mode::Mixed | Mode::Soak) && args.app.is_none() {
        return Err("mixed and soak need --app".into());
    }
    let requests = Requests {
        host: args.addr.to_string(),
        auth: args.auth.clone(),
        permissions: args.permissions.clone(),
    };
    let tokens: Vec<String> = match (&args.tokens_file, &args.token) {
        (Some(path), _) => std::fs::read_to_string(path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        (None, Some(token)) => vec![token.clone()],
        (None, None) => return Err("give --token or --tokens-file".into()),
    };
    if tokens.is_empty() {
        return Err("no tokens to verify".into());
    }
    let verify_requests: Vec<Vec<u8>> = tokens.iter().map(|t| requests.verify(t)).collect();
    let connections = args.connections.max(1);
    let threads = args.threads.clamp(1, connections);
    let warmup = Duration::from_secs_f64(if args.mode == Mode::Warm {
        0.0
    } else {
        args.warmup
    });
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let plan = Arc::new(Plan {
        mode: args.mode,
        addr: args.addr,
        requests,
        verify_requests,
        app: args.app.clone(),
        manage_percent: args.manage_percent.min(100),
        record_from: start + warmup,
        stop_at: start + warmup + duration,
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = args.server_pid.map(|pid| {
        let stop = stop.clone();
        let interval = Duration::from_secs_f64(args.rss_interval.max(0.1));
        std::thread::spawn(move || sample_rss(pid, interval, stop))
    });

    let mut workers = Vec::with_capacity(threads + 1);
    for t in 0..threads {
        let first = t * connections / threads;
        let count = (t + 1) * connections / threads - first;
        let plan = plan.clone();
        workers.push(std::thread::spawn(move || {
            run_thread(plan, first, count, connections).map_err(|e| e.to_string())
        }));
    }
    // CPU time over the recorded window: read when recording starts and after the load.
    std::thread::sleep(plan.record_from.saturating_duration_since(Instant::now()));
    let cpu_before = cpu_now(args.server_pid);
    let mut tally = Tally::new()?;
    for worker in workers {
        let result = worker.join().map_err(|_| "a generator thread panicked")?;
        tally.merge(&result?)?;
    }
    let recorded = if args.mode == Mode::Warm {
        start.elapsed()
    } else {
        duration
    };
    let cpu_after = cpu_now(args.server_pid);
    stop.store(true, Ordering::Relaxed);
    let rss = match sampler {
        Some(handle) => Some(handle.join().map_err(|_| "the RSS sampler panicked")?),
        None => None,
    };

    let seconds = recorded.as_secs_f64();
    let total =
        tally.verify.latency.len() + tally.create.latency.len() + tally.revoke.latency.len();
    let errors = tally.verify.errors + tally.create.errors + tally.revoke.errors;
    let mut out = json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "label": args.label,
        "addr": args.addr.to_string(),
        "connections": connections,
        "threads": threads,
        "seconds": round1(seconds),
        "tokens": tokens.len(),
        "requests": total,
        "errors": errors,
        "throughput_rps": round1(total as f64 / seconds),
        "verify": tally.verify.summary(seconds),
    });
    let per_request = |before: Option<f64>, after: Option<f64>| {
        before.zip(after).map(|(b, a)| {
            json!({
                "cores": round1((a - b) / seconds * 100.0) / 100.0,
                "us_per_request": round1((a - b) * 1e6 / total.max(1) as f64),
            })
        })
    };
    out["server_cpu"] = json!(per_request(cpu_before.0, cpu_after.0));
    out["loadgen_cpu"] = json!(per_request(cpu_before.1, cpu_after.1));
    if matches!(args.mode, Mode::Mixed | Mode::Soak) {
        out["create"] = tally.create.summary(seconds);
        out["revoke"] = tally.revoke.summary(seconds);
    }
    if let Some(samples) = rss {
        let first = samples.first().map(|s| s.1);
        let last = samples.last().map(|s| s.1);
        let max = samples.iter().map(|s| s.1).max();
        out["rss_kib"] = json!({
            "start": first, "end": last, "max": max,
            "samples": samples.iter().map(|(t, k)| json!([t, k])).collect::<Vec<_>>(),
        });
    }
    println!("{out}");
    Ok(())
}
