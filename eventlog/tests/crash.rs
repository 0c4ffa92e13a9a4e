//! Crash test: a child process appends in a loop and prints each acknowledged event; we kill it
//! with SIGKILL at random moments, reopen the log, and check that every acknowledged event is
//! there, byte for byte, with gap-free seqs and positions and sound chains.
//!
//! Every other round runs with small memtables and small journal segments, so kills also land
//! during memtable flushes, compactions, and the journal's rotations, retirements and zeroing.
//! The journal writes both ways: the other rounds stay in the growing segment each open starts
//! with (`pwrite` and `fdatasync`), the small-segment rounds go on into zero-filled ones
//! (`O_DIRECT | O_DSYNC`).
//!
//! `IDEM_CRASH_ROUNDS` sets the number of rounds (default 50).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use eventlog::{Digest32, EventLog, RecordedEvent, RocksLog, StreamId, verify};
use rand::Rng;

/// Memtables of every other round: they fill every few hundred events, so kills land while
/// memtables are flushed and table files compacted.
const SMALL_MEMTABLE_BYTES: usize = 64 << 10;
/// Journal segments of the same rounds: they fill every few dozen events, so kills land while
/// the journal moves to a new segment, retires and zeroes old ones and prepares spares.
const SMALL_SEGMENT_BYTES: u64 = 32 << 10;

/// How many times RocksDB's info log of the writer's run says a memtable was flushed.
fn memtable_flushes(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("LOG"))
        .map_or(0, |log| log.matches("Flushing memtable").count())
}

/// The newest journal generation on disk: the generation field (bytes 4..12) of each segment's
/// first record. Each open starts a new generation and each move to a new segment another, so
/// a run that went across segments ends more than one generation after the run before.
fn newest_generation(dir: &std::path::Path) -> Option<u64> {
    let files = std::fs::read_dir(dir.join("journal")).ok()?;
    files
        .filter_map(|f| std::fs::read(f.ok()?.path()).ok())
        .filter(|bytes| bytes.len() >= 12 && bytes[..4] != [0; 4])
        .map(|bytes| u64::from_le_bytes(bytes[4..12].try_into().unwrap()))
        .max()
}

/// One acknowledged event as the child printed it.
#[derive(Debug, PartialEq)]
struct Ack {
    position: u64,
    hash: Digest32,
}

fn parse(line: &str) -> ((StreamId, u64), Ack) {
    let fields: Vec<_> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "malformed ack line {line:?}");
    assert_eq!(fields[0], "ack");
    (
        (
            StreamId(fields[1].parse().unwrap()),
            fields[2].parse().unwrap(),
        ),
        Ack {
            position: fields[3].parse().unwrap(),
            hash: fields[4].parse().unwrap(),
        },
    )
}

/// Runs the writer until it has acknowledged `kill_after` events (it may get further before the
/// signal lands), kills it with SIGKILL, and returns every complete ack line it printed.
fn run_and_kill(dir: &std::path::Path, kill_after: usize, small_memtables: bool) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventlog-crash-writer"))
        .arg(dir)
        .args(
            small_memtables
                .then(|| {
                    [
                        SMALL_MEMTABLE_BYTES.to_string(),
                        SMALL_SEGMENT_BYTES.to_string(),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < kill_after {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the writer stopped by itself: {err}");
        }
        lines.push(line.trim_end().to_owned());
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    // Lines already in the pipe were acknowledged before the kill: they count too.
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.ends_with('\n') {
            lines.push(line.trim_end().to_owned());
        }
    }
    lines
}

async fn check(dir: &std::path::Path, acked: &HashMap<(StreamId, u64), Ack>, round: usize) {
    let log = RocksLog::open(dir).unwrap();
    let all = log.read_all(0, usize::MAX).await.unwrap();
    let head = log.head_position();
    let positions: Vec<_> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "round {round}: positions gap-free"
    );

    let mut by_stream: BTreeMap<StreamId, Vec<&RecordedEvent>> = BTreeMap::new();
    for e in &all {
        by_stream.entry(e.stream).or_default().push(e);
        let id_and_stream = format!("{}:{}", e.id, e.stream);
        assert_eq!(
            e.data,
            id_and_stream.as_bytes(),
            "round {round}: data of {}:{}",
            e.stream,
            e.seq
        );
    }
    for (stream, events) in &by_stream {
        let seqs: Vec<_> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "round {round}: seqs of {stream}"
        );
        let report = verify(&log, *stream).await.unwrap();
        assert!(report.is_valid(), "round {round}: {report:?}");
    }
    let stored: HashMap<_, _> = all.iter().map(|e| ((e.stream, e.seq), e)).collect();
    for (place, ack) in acked {
        let event = stored
            .get(place)
            .unwrap_or_else(|| panic!("round {round}: acknowledged event {place:?} is lost"));
        assert_eq!(
            (event.position, event.hash),
            (ack.position, ack.hash),
            "round {round}: acknowledged event {place:?} changed"
        );
    }
    // The two-stream commits landed whole or not at all.
    let pair = |n: u128| {
        let s = StreamId(uuid::Uuid::from_u128(
            0x1d3e_0000_0000_0000_0000_0000_0000_0000 + n,
        ));
        by_stream.get(&s).map_or(0, Vec::len)
    };
    assert_eq!(
        pair(7),
        pair(8),
        "round {round}: a two-stream commit was torn"
    );
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let rounds: usize = std::env::var("IDEM_CRASH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("IDEM_CRASH_ROUNDS is a number"))
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rng();
    let mut acked = HashMap::new();
    let mut total_lines = 0;
    let mut rounds_through_flushes = 0;
    let mut rounds_across_segments = 0;
    let mut last_generation = None;
    for round in 0..rounds {
        // Kill at a random point of the writer's progress, sometimes before its first ack;
        // with small memtables, later on average, so that most rounds go through flushes.
        let small_memtables = round % 2 == 1;
        let kill_after = match (round % 10, small_memtables) {
            (0, _) => 0,
            (_, false) => rng.random_range(1..1500),
            (_, true) => rng.random_range(1..3000),
        };
        let lines = run_and_kill(dir.path(), kill_after, small_memtables);
        if small_memtables && memtable_flushes(dir.path()) > 1 {
            rounds_through_flushes += 1;
        }
        let generation = newest_generation(dir.path());
        if small_memtables && generation > last_generation.map(|g| g + 1) {
            rounds_across_segments += 1;
        }
        last_generation = generation.or(last_generation);
        total_lines += lines.len();
        for line in &lines {
            let (place, ack) = parse(line);
            if let Some(earlier) = acked.insert(place, ack) {
                panic!("{place:?} acknowledged twice (first {earlier:?})");
            }
        }
        runtime.block_on(check(dir.path(), &acked, round));
    }
    assert!(
        total_lines > rounds,
        "the writer acknowledged too little to test anything"
    );
    assert!(
        rounds_through_flushes > 0 || rounds < 10,
        "no round was killed after a memtable flush"
    );
    assert!(
        rounds_across_segments > 0 || rounds < 10,
        "no round was killed after the journal moved to a new segment"
    );
    eprintln!(
        "{rounds} rounds, {total_lines} acknowledged events, all present; \
         {rounds_through_flushes} rounds went through memtable flushes, \
         {rounds_across_segments} across journal segments"
    );
}
