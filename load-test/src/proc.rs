//! The process side: the file-descriptor limit of this process, and CPU time
//! and memory of the server processes and of the bus (from `/proc`).

use std::time::Duration;

/// Raises RLIMIT_NOFILE's soft limit to its hard limit. Errors if `need`
/// descriptors still do not fit.
#[allow(unsafe_code)]
pub fn raise_nofile(need: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        anyhow::bail!(
            "cannot read the file-descriptor limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let have: u64 = lim.rlim_cur;
    if have < need {
        anyhow::bail!(
            "this run needs about {need} file descriptors but the limit is {have} (hard limit {}); \
             lower --clients or raise the hard limit (ulimit -Hn, or LimitNOFILE in systemd)",
            lim.rlim_max
        );
    }
    Ok(have)
}

/// CPU time and memory of a process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime.
    pub cpu: Duration,
    pub rss_kib: u64,
    /// Peak RSS over the process's life (VmHWM).
    pub hwm_kib: u64,
}

impl ProcSample {
    /// The processes of `samples` as one: CPU and memory added up (a
    /// cluster's nodes; the sum of peaks is an upper bound of the peak sum).
    pub fn sum(samples: &[ProcSample]) -> ProcSample {
        samples
            .iter()
            .fold(ProcSample::default(), |a, s| ProcSample {
                cpu: a.cpu + s.cpu,
                rss_kib: a.rss_kib + s.rss_kib,
                hwm_kib: a.hwm_kib + s.hwm_kib,
            })
    }
}

/// Samples every process of `pids`, in order.
pub fn sample_each(pids: &[u32]) -> anyhow::Result<Vec<ProcSample>> {
    pids.iter().map(|&pid| sample(pid)).collect()
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    use anyhow::Context as _;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| {
        format!("cannot read /proc/{pid}/stat: are --server-pid and --bus-pid right?")
    })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let ticks = parse_cpu_ticks(&stat).context("unexpected /proc/PID/stat format")?;
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ProcSample {
        cpu: Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz),
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// utime + stime in clock ticks (fields 14 and 15; the name in field 2 may hold spaces).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat =
            "1234 (market mux) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(s, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        let both = sample_each(&[std::process::id(), std::process::id()]).unwrap();
        assert_eq!(both.len(), 2);
        let sum = ProcSample::sum(&both);
        assert!(sum.rss_kib >= 2 * s.rss_kib.min(both[0].rss_kib));
        assert!(sample_each(&[u32::MAX]).is_err(), "no such process");
    }

    #[test]
    fn sums_processes() {
        let a = ProcSample {
            cpu: Duration::from_millis(300),
            rss_kib: 10,
            hwm_kib: 12,
        };
        let b = ProcSample {
            cpu: Duration::from_millis(200),
            rss_kib: 5,
            hwm_kib: 6,
        };
        let s = ProcSample::sum(&[a, b]);
        assert_eq!(
            (s.cpu, s.rss_kib, s.hwm_kib),
            (Duration::from_millis(500), 15, 18)
        );
        assert_eq!(ProcSample::sum(&[]), ProcSample::default());
    }
}
