//! The process's own figures for `/metrics`, under the names every Prometheus client library
//! gives them (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, ...), so that the usual dashboards and alerts work
//! unchanged. Read from Linux's `/proc/self` at each scrape; elsewhere there are none.

use std::fmt::Write;

/// What `/proc/self/stat` says of the process, in its own units.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    /// CPU time in user and kernel mode, in clock ticks.
    utime: u64,
    stime: u64,
    threads: u64,
    /// When the process started, in clock ticks after boot.
    start_ticks: u64,
    /// Virtual memory size in bytes.
    virtual_bytes: u64,
    /// Resident set size in pages.
    resident_pages: u64,
}

/// Parses a `/proc/[pid]/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself: the fields that follow are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let (_, after) = line.rsplit_once(')')?;
    // Field 3 (the state) is the first after the name; field n is at index n - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Appends the process's figures to `out` as Prometheus text; nothing where `/proc` cannot
/// be read.
pub fn render(out: &mut String) {
    let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
    else {
        return;
    };
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let page = rustix::param::page_size() as u64;
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "CPU time used by the process, user and system, in seconds.",
        (stat.utime + stat.stime) as f64 / ticks,
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the process, in bytes.",
        stat.resident_pages.saturating_mul(page) as f64,
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory of the process, in bytes.",
        stat.virtual_bytes as f64,
    );
    metric(
        "process_threads",
        "gauge",
        "Threads of the process.",
        stat.threads as f64,
    );
    if let Some(boot) = std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(parse_boot_time)
    {
        metric(
            "process_start_time_seconds",
            "gauge",
            "When the process started, in seconds since the Unix epoch.",
            boot as f64 + stat.start_ticks as f64 / ticks,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metric(
            "process_open_fds",
            "gauge",
            "File descriptors the process has open (connections included).",
            entries.count() as f64,
        );
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(max) = limit.current {
        metric(
            "process_max_fds",
            "gauge",
            "File descriptors the process may open (its soft limit).",
            max as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_past_a_name_with_spaces_and_parentheses() {
        // Fields 1 to 24 of a real line, with a name chosen to trip a naive split.
        let line = "4242 (idem d) (x)) S 1 4242 4242 0 -1 4194560 2130 0 0 0 \
                    731 214 0 0 20 0 37 0 123456 1052672000 5120 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 731,
                stime: 214,
                threads: 37,
                start_ticks: 123456,
                virtual_bytes: 1_052_672_000,
                resident_pages: 5120,
            })
        );
        assert_eq!(parse_stat("4242 (idemd) S 1 2 3"), None, "cut short");
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn the_boot_time_is_the_btime_line() {
        let proc_stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1795392000\nprocesses 7\n";
        assert_eq!(parse_boot_time(proc_stat), Some(1_795_392_000));
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    }

    #[test]
    fn this_process_reports_its_own_figures() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {out}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_threads") >= 1.0);
        // 64 more files open: the count must see them (other tests open and close files
        // meanwhile, so no exact figure).
        let held: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let mut again = String::new();
        render(&mut again);
        let open: f64 = again
            .lines()
            .find_map(|l| l.strip_prefix("process_open_fds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(open >= 64.0 + 3.0, "{open}");
        drop(held);
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(value("process_max_fds"), limit.current.unwrap() as f64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
    }
}
