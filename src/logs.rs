//! Log forwarding: each child stream is split into lines, each line tagged with the child's name
//! and written to our stdout. Every write holds whole lines of one stream only, under stdout's
//! lock, so two children's bytes never share a line. Our own events use the same format.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// A line longer than this is cut into several (a child printing megabytes without a newline must
/// not grow our memory without bound).
pub const MAX_LINE: usize = 16 * 1024;
/// Reads of a busy stream. The tagged lines of one full read (~52 KiB for 100-byte lines) fit in
/// a default 64 KiB pipe, so the write to our stdout seldom fills the pipe half-way and sleeps
/// until the reader drains it (a context switch per write): in benches/pid1.py's flood 48 KiB
/// reads forwarded ~20 % more than 64 KiB ones, in Rust as in the C forwarder; larger reads
/// (256 KiB) were slower still.
const READ_BUF: usize = 48 * 1024;
/// Reads start this small and grow to READ_BUF once a read fills the buffer: a quiet stream (the
/// usual case) then keeps one page resident instead of 48 KiB (benches/pid1.py, PID 1 RSS).
const FIRST_READ_BUF: usize = 4 * 1024;
/// Output buffer of a busy text stream: a write is at most this (the default pipe size).
const OUT_BUF: usize = 64 * 1024;
/// A quiet text stream's output buffer: a first read's lines with their tags.
const FIRST_OUT_BUF: usize = FIRST_READ_BUF + FIRST_READ_BUF / 4;
/// A busy stream's pipe is grown to this (F_SETPIPE_SZ; 1 MiB is the kernel's default ceiling for
/// unprivileged processes) so the child runs ahead of us instead of sleeping every 64 KiB. Pages
/// are taken only while the child is ahead; a quiet stream keeps the kernel's default.
const BUSY_PIPE: i32 = 1024 * 1024;

/// Index of the first newline in `s` (vectorised search: a byte-by-byte loop was ~40 % of the
/// forwarding thread's CPU in the log flood of benches/pid1.py).
fn find_newline(s: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', s)
}

#[derive(Debug, Clone, Copy)]
pub struct LogSink {
    pub format: LogFormat,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Redis log lines look like `123:M 26 Nov 2026 00:31:21.123 * Ready to accept connections`.
/// Returns (level, message) when the line has that shape.
pub fn parse_redis_line(line: &str) -> Option<(&'static str, &str)> {
    let (head, rest) = line.split_once(' ')?;
    let (pid, role) = head.split_once(':')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || role.len() != 1 {
        return None;
    }
    // date (3 words) + time, then the level symbol
    let mut it = rest.splitn(6, ' ');
    let (_d, _m, _y, _t) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let level = match it.next()? {
        "." => "debug",
        "-" => "verbose",
        "*" => "notice",
        "#" => "warning",
        _ => return None,
    };
    Some((level, it.next().unwrap_or("")))
}

/// Appends one formatted line (with its newline) to `out`.
pub fn format_line(format: LogFormat, source: &str, stream: &str, line: &[u8], out: &mut Vec<u8>) {
    match format {
        // Raw never reaches the framing (the children inherit our stdout); tagged text is the
        // right fallback should it ever.
        LogFormat::Text | LogFormat::Raw => {
            out.push(b'[');
            out.extend_from_slice(source.as_bytes());
            out.extend_from_slice(b"] ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        LogFormat::Json => {
            let text = String::from_utf8_lossy(line);
            let (level, message) = match parse_redis_line(&text) {
                Some((l, m)) => (Some(l), m),
                None => (None, text.as_ref()),
            };
            let mut obj = serde_json::Map::new();
            obj.insert("time".into(), now_rfc3339().into());
            obj.insert("source".into(), source.into());
            obj.insert("stream".into(), stream.into());
            if let Some(l) = level {
                obj.insert("level".into(), l.into());
            }
            obj.insert("message".into(), message.into());
            if serde_json::to_writer(&mut *out, &obj).is_ok() {
                out.push(b'\n');
            }
        }
    }
}

/// Splits `data` (appended to `carry`) into complete lines, formats them into `out`, and leaves
/// the unfinished tail in `carry`. Lines over MAX_LINE are emitted in pieces. Line by line through
/// `format_line`: the JSON path, and for text the reference `TextFramer` is tested against.
pub fn frame(
    format: LogFormat,
    source: &str,
    stream: &str,
    carry: &mut Vec<u8>,
    data: &[u8],
    out: &mut Vec<u8>,
) {
    let mut rest = data;
    while let Some(i) = find_newline(rest) {
        let (line, tail) = rest.split_at(i);
        rest = &tail[1..];
        if carry.is_empty() {
            emit(format, source, stream, line, out);
        } else {
            carry.extend_from_slice(line);
            emit(format, source, stream, carry, out);
            carry.clear();
        }
    }
    carry.extend_from_slice(rest);
    while carry.len() >= MAX_LINE {
        let piece: Vec<u8> = carry.drain(..MAX_LINE).collect();
        emit(format, source, stream, &piece, out);
    }
}

fn emit(format: LogFormat, source: &str, stream: &str, line: &[u8], out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    for piece in line.chunks(MAX_LINE) {
        format_line(format, source, stream, piece, out);
    }
    if line.is_empty() {
        format_line(format, source, stream, line, out);
    }
}

/// Text framing of one stream, the hot path of a log flood: `[source] line\n` per line, built in a
/// fixed buffer that is handed to `write` when full and at the end of every read, so each write
/// holds whole lines. A line is two copies into the buffer (tag, then the line with its newline);
/// slice copies rather than `Vec::extend_from_slice` per line, which at opt-level "s" stays a
/// function call: 98 ms vs 67 ms per GiB of 100-byte lines, the C forwarder's loop 64 ms. Output
/// byte for byte as `frame` gives it (tests::text_framer_is_the_line_by_line_framing).
pub struct TextFramer {
    tag: Vec<u8>,
    /// The unfinished last line of the stream (less than MAX_LINE bytes between reads).
    carry: Vec<u8>,
    /// Used as a fixed-size buffer (its length is the size): out[..used] holds whole lines.
    out: Vec<u8>,
    used: usize,
}

impl TextFramer {
    pub fn new(source: &str) -> Self {
        let mut tag = Vec::with_capacity(source.len() + 3);
        tag.push(b'[');
        tag.extend_from_slice(source.as_bytes());
        tag.extend_from_slice(b"] ");
        TextFramer {
            tag,
            carry: Vec::new(),
            out: Vec::new(),
            used: 0,
        }
    }

    /// A busy stream: writes of up to OUT_BUF (a quiet one grows its buffer to its longest line).
    pub fn busy(&mut self) {
        if self.out.len() < OUT_BUF {
            self.out.resize(OUT_BUF, 0);
        }
    }

    /// Frames the complete lines of `carry` + `data` and writes them; keeps the unfinished tail.
    pub fn push(&mut self, data: &[u8], write: &mut impl FnMut(&[u8])) {
        let mut rest = data;
        if !self.carry.is_empty() {
            let Some(i) = find_newline(rest) else {
                self.carry.extend_from_slice(rest);
                self.cut_long(write);
                self.flush(write);
                return;
            };
            let mut line = std::mem::take(&mut self.carry);
            line.extend_from_slice(&rest[..i]);
            self.line(&line, write);
            line.clear();
            self.carry = line; // keeps its allocation
            rest = &rest[i + 1..];
        }
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', rest) {
            let line = &rest[start..=i];
            if line.len() <= MAX_LINE + 1 && !line.ends_with(b"\r\n") {
                self.put(line, false, write);
            } else {
                self.line(&line[..line.len() - 1], write);
            }
            start = i + 1;
        }
        self.carry.extend_from_slice(&rest[start..]);
        self.cut_long(write);
        self.flush(write);
    }

    /// At EOF: the unfinished last line, as a line.
    pub fn finish(&mut self, write: &mut impl FnMut(&[u8])) {
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            self.line(&line, write);
        }
        self.flush(write);
    }

    /// One line without its newline: a trailing `\r` dropped, cut into MAX_LINE pieces.
    fn line(&mut self, line: &[u8], write: &mut impl FnMut(&[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.put(b"", true, write);
        }
        for piece in line.chunks(MAX_LINE) {
            self.put(piece, true, write);
        }
    }

    /// The leading MAX_LINE pieces of an unfinished line that has grown that long, as lines (a
    /// child printing megabytes without a newline must not grow our memory without bound).
    fn cut_long(&mut self, write: &mut impl FnMut(&[u8])) {
        let whole = self.carry.len() / MAX_LINE * MAX_LINE;
        if whole == 0 {
            return;
        }
        let mut carry = std::mem::take(&mut self.carry);
        for piece in carry[..whole].chunks(MAX_LINE) {
            let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
            self.put(piece, true, write);
        }
        carry.drain(..whole);
        self.carry = carry;
    }

    /// Appends tag + `body` (+ a newline when `newline`), writing the buffer out first when full.
    fn put(&mut self, body: &[u8], newline: bool, write: &mut impl FnMut(&[u8])) {
        let n = self.tag.len() + body.len() + usize::from(newline);
        if self.used + n > self.out.len() {
            self.flush(write);
            if n > self.out.len() {
                self.out.resize(n.max(FIRST_OUT_BUF), 0);
            }
        }
        let at = self.used;
        let body_at = at + self.tag.len();
        self.out[at..body_at].copy_from_slice(&self.tag);
        self.out[body_at..body_at + body.len()].copy_from_slice(body);
        if newline {
            self.out[at + n - 1] = b'\n';
        }
        self.used = at + n;
    }

    fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        if self.used > 0 {
            write(&self.out[..self.used]);
            self.used = 0;
        }
    }
}

fn write_out(buf: &[u8]) {
    // A closed or failing stdout must not stop the draining: the child would block on a full pipe.
    let _ = io::stdout().lock().write_all(buf);
}

/// Pump threads still running; PID 1 drains them before it exits so a child's last lines (often
/// the reason it died) are not lost with the process.
static PUMPS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits until every pump has reached EOF, at most `limit` (an orphan holding a pipe open must not
/// hold up the exit). Called once, at exit.
pub fn drain(limit: std::time::Duration) {
    let handles = match PUMPS.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return,
    };
    let deadline = std::time::Instant::now() + limit;
    for h in handles {
        // Bounded by the deadline; 5 ms steps only while exiting.
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
}

/// Forwards one child stream on its own small thread until EOF, so a slow stdout never stalls the
/// supervisor's event loop (signals and reaping stay prompt).
pub fn pump(source: &'static str, stream: &'static str, fd: OwnedFd, sink: LogSink) {
    let spawned = std::thread::Builder::new()
        .name(format!("log-{source}-{stream}"))
        .stack_size(128 * 1024)
        .spawn(move || forward(source, stream, fd, sink));
    match spawned {
        Ok(h) => {
            if let Ok(mut v) = PUMPS.lock() {
                v.retain(|h| !h.is_finished());
                v.push(h);
            }
        }
        Err(e) => {
            tracing::error!(source, stream, error = %e, "cannot start log thread; output of this stream is dropped")
        }
    }
}

/// A pump thread: read, frame, write whole lines, until EOF.
fn forward(source: &'static str, stream: &'static str, fd: OwnedFd, sink: LogSink) {
    let mut file = std::fs::File::from(fd);
    let mut buf = vec![0u8; FIRST_READ_BUF];
    let text = !matches!(sink.format, LogFormat::Json);
    let mut framer = TextFramer::new(source);
    let (mut carry, mut out) = (Vec::new(), Vec::new()); // JSON
    let mut write = |b: &[u8]| write_out(b);
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if text {
                    framer.push(&buf[..n], &mut write);
                } else {
                    out.clear();
                    frame(sink.format, source, stream, &mut carry, &buf[..n], &mut out);
                    if !out.is_empty() {
                        write_out(&out);
                    }
                }
                if n == buf.len() && buf.len() < READ_BUF {
                    // A busy stream: full-size reads and writes, a pipe the child can run ahead in.
                    buf.resize(READ_BUF, 0);
                    if text {
                        framer.busy();
                    }
                    grow_pipe(&file);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if text {
        framer.finish(&mut write);
    } else if !carry.is_empty() {
        out.clear();
        emit(sink.format, source, stream, &carry, &mut out);
        write_out(&out);
    }
}

/// Best effort: EPERM (the user's pipe quota is spent) leaves the default size, which is only
/// slower.
fn grow_pipe(file: &std::fs::File) {
    let fd = file.as_raw_fd();
    if let Ok(size) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ) {
        if size < BUSY_PIPE {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(BUSY_PIPE));
        }
    }
}

/// Our own events, in the same JSON shape as the children's lines.
pub struct JsonEvents;

#[derive(Default)]
struct Fields {
    message: String,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.message = v.to_string();
        } else {
            self.rest.insert(f.name().into(), v.into());
        }
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.rest.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.rest.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.rest.insert(f.name().into(), v.into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if f.name() == "message" {
            self.message = format!("{v:?}");
        } else {
            self.rest.insert(f.name().into(), format!("{v:?}").into());
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonEvents
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), now_rfc3339().into());
        obj.insert("source".into(), "redisha-init".into());
        obj.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        obj.insert("message".into(), fields.message.into());
        obj.extend(fields.rest);
        let s = serde_json::to_string(&obj).map_err(|_| std::fmt::Error)?;
        writeln!(w, "{s}")
    }
}

/// Capacity of the queue of our own events, in lines. The queue is an array allocated and touched
/// in full at start-up (32 bytes a slot): tracing-appender's default of 128 000 lines was a 4 MB
/// anonymous mapping, 60 % of PID 1's RSS (issue 11). Our events come a few per second at most,
/// a few dozen in a failover; a stdout stalled for longer than 1024 lines loses the excess (lossy).
const EVENT_QUEUE_LINES: usize = 1024;

/// Our own events go through a bounded queue to a writer thread that drops lines when the queue
/// is full: a stalled stdout (a blocked log driver) must never stall the event loop that handles
/// signals, reaping and deadlines. Keep the guard until exit: dropping it flushes the queue.
pub fn init_tracing(format: LogFormat) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(EVENT_QUEUE_LINES)
        .lossy(true)
        .thread_name("log-events")
        .finish(io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false);
    let ok = match format {
        LogFormat::Text | LogFormat::Raw => builder.try_init().is_ok(),
        LogFormat::Json => builder.event_format(JsonEvents).try_init().is_ok(),
    };
    ok.then_some(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    fn framed(chunks: &[&[u8]]) -> (String, Vec<u8>) {
        let mut carry = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            frame(LogFormat::Text, "redis", "stdout", &mut carry, c, &mut out);
        }
        (String::from_utf8(out).expect("utf8"), carry)
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let (out, carry) = framed(&[b"hel", b"lo\nwor", b"ld\npartial"]);
        assert_eq!(out, "[redis] hello\n[redis] world\n");
        assert_eq!(carry, b"partial");
    }

    #[test]
    fn newlines_are_found_anywhere() {
        assert_eq!(find_newline(b""), None);
        assert_eq!(find_newline(b"abc"), None);
        assert_eq!(find_newline(b"\n"), Some(0));
        assert_eq!(find_newline(b"ab\ncd\n"), Some(2));
        let mut big = vec![b'x'; 100_000];
        big[99_999] = b'\n';
        assert_eq!(find_newline(&big), Some(99_999));
        assert_eq!(find_newline(&big[..99_999]), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// The fast text path gives `frame`'s line-by-line output byte for byte, whatever the read
        /// boundaries, and every write holds whole lines and at most OUT_BUF bytes.
        #[test]
        fn text_framer_is_the_line_by_line_framing(
            // Short lines, CRs, empty lines, and now and then a line over MAX_LINE.
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => proptest::collection::vec(proptest::prop_oneof![
                        6 => proptest::prelude::Just(b'a'),
                        2 => proptest::prelude::Just(b'\n'),
                        1 => proptest::prelude::Just(b'\r'),
                    ], 0..200),
                    // A long line, with a CR where the first cut falls now and then.
                    1 => (1usize..5 * MAX_LINE, proptest::bool::ANY).prop_map(|(n, cr)| {
                        let mut v = vec![b'x'; n];
                        if cr && n >= MAX_LINE {
                            v[MAX_LINE - 1] = b'\r';
                        }
                        v
                    }),
                    // Lines right at the cut: MAX_LINE - 2 ..= MAX_LINE + 2 bytes.
                    1 => (MAX_LINE - 2..MAX_LINE + 3).prop_map(|n| {
                        let mut v = vec![b'y'; n];
                        v.push(b'\n');
                        v
                    }),
                ],
                1..12,
            ),
            cuts in proptest::collection::vec(0usize..100_000, 0..8),
            busy_from in 0usize..10,
        ) {
            let data: Vec<u8> = parts.concat();
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            at.push(0);
            at.push(data.len());
            at.sort_unstable();
            let mut framer = TextFramer::new("redis");
            let (mut writes, mut carry, mut want) = (Vec::<Vec<u8>>::new(), Vec::new(), Vec::new());
            for (k, w) in at.windows(2).enumerate() {
                if k == busy_from {
                    framer.busy();
                }
                framer.push(&data[w[0]..w[1]], &mut |b: &[u8]| writes.push(b.to_vec()));
                frame(LogFormat::Text, "redis", "stdout", &mut carry, &data[w[0]..w[1]], &mut want);
                proptest::prop_assert_eq!(&framer.carry, &carry);
            }
            framer.finish(&mut |b: &[u8]| writes.push(b.to_vec()));
            if !carry.is_empty() {
                emit(LogFormat::Text, "redis", "stdout", &carry, &mut want);
            }
            for w in &writes {
                proptest::prop_assert!(w.ends_with(b"\n") && w.len() <= OUT_BUF);
            }
            proptest::prop_assert_eq!(writes.concat(), want);
        }
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let (out, carry) = framed(&[&long]);
        assert_eq!(out.lines().count(), 2);
        assert_eq!(carry.len(), 10);
    }

    #[test]
    fn redis_lines_parse() {
        let l = "1234:M 26 Nov 2026 00:31:21.123 * Ready to accept connections tcp";
        assert_eq!(
            parse_redis_line(l),
            Some(("notice", "Ready to accept connections tcp"))
        );
        assert_eq!(
            parse_redis_line("7:X 1 Jan 2026 00:00:00.000 # oops").map(|p| p.0),
            Some("warning")
        );
        assert_eq!(parse_redis_line("hello world"), None);
    }

    #[test]
    fn json_lines_are_objects() {
        let mut out = Vec::new();
        format_line(
            LogFormat::Json,
            "sentinel",
            "stdout",
            b"1:X 1 Jan 2026 00:00:00.000 # +sdown \"x\"",
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["source"], "sentinel");
        assert_eq!(v["level"], "warning");
        assert_eq!(v["message"], "+sdown \"x\"");
        assert!(out.ends_with(b"\n") && out.iter().filter(|&&b| b == b'\n').count() == 1);
    }
}
