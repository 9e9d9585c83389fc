//! Log forwarding: each child stream is split into lines, each line tagged with the child's name
//! and written to our stdout. Every write holds whole lines of one stream only, under stdout's
//! lock, so two children's bytes never share a line. Our own events use the same format.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
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
const READ_BUF: usize = 64 * 1024;
/// Reads start this small and grow to READ_BUF once a read fills the buffer: a quiet stream (the
/// usual case) then keeps one page resident instead of 64 KiB (benches/pid1.py, PID 1 RSS).
const FIRST_READ_BUF: usize = 4 * 1024;

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
/// the unfinished tail in `carry`. Lines over MAX_LINE are emitted in pieces.
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

fn write_out(buf: &[u8]) {
    // A closed or failing stdout must not stop the draining: the child would block on a full pipe.
    let _ = io::stdout().lock().write_all(buf);
}

/// Forwards one child stream on its own small thread until EOF, so a slow stdout never stalls the
/// supervisor's event loop (signals and reaping stay prompt).
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

pub fn pump(source: &'static str, stream: &'static str, fd: OwnedFd, sink: LogSink) {
    let spawned = std::thread::Builder::new()
        .name(format!("log-{source}-{stream}"))
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut file = std::fs::File::from(fd);
            let mut buf = vec![0u8; FIRST_READ_BUF];
            let mut carry = Vec::new();
            // Room for the tags of a full read of lines of 44 bytes or more without a realloc
            // (which would leave the old block resident too); untouched capacity costs no RSS.
            let mut out = Vec::with_capacity(READ_BUF + READ_BUF / 4);
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        out.clear();
                        frame(sink.format, source, stream, &mut carry, &buf[..n], &mut out);
                        if !out.is_empty() {
                            write_out(&out);
                        }
                        if n == buf.len() && buf.len() < READ_BUF {
                            buf.resize(READ_BUF, 0);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            if !carry.is_empty() {
                out.clear();
                emit(sink.format, source, stream, &carry, &mut out);
                write_out(&out);
            }
        });
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
